"""Output for a Caddy gotunnel does not run (`render --for existing`, `sync --engine caddy`): the
kit's injection property test through `caddy validate`, and the merge into the host's config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gotunnel_core.engine import EngineContext
from gotunnel_core.existing import ExistingSite, ExistingTable
from gotunnel_core.models import Listen, TlsPolicy, Tunnel
from gotunnel_core.testing.engines import make_pki
from gotunnel_core.testing.injection import EXISTING_FIELDS, check_refused_or_valid


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from gotunnel_caddy.engine import CaddyEngine

    engine = CaddyEngine(EngineContext(work_dir=tmp_path_factory.mktemp("caddy-work"), settings={"engine": "caddy"}))
    if not engine.probe(engine.context.settings).found:
        pytest.skip("caddy is not installed (gotunnel-caddy[bin] brings it)")
    return engine


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_pki(tmp_path_factory.mktemp("pki"), ["shared"])


def existing(pki: Any, *tunnels: Tunnel) -> ExistingTable:
    cert = pki.certs["shared"]
    sites = tuple(ExistingSite(t, t.hosts or (f"{t.name.lstrip('*.')}.example.test",),
                               TlsPolicy("files", cert.cert, cert.key) if t.https else TlsPolicy("off"))
                  for t in tunnels)
    return ExistingTable(Listen("127.0.0.1", 8080, 8443), sites)


@pytest.mark.slow
@pytest.mark.parametrize("field", list(EXISTING_FIELDS))
def test_arbitrary_strings_are_refused_or_valid_for_an_existing_caddy(field: str, engine: Any, pki: Any,
                                                                      tmp_path: Path) -> None:
    def validate(tunnel: Tunnel) -> None:
        (name, text), = engine.render_existing(existing(pki, tunnel), None).items()
        (tmp_path / name).write_text(text)
        engine.validate_existing(tmp_path / name, None, "json")

    check_refused_or_valid(field, validate, fields=EXISTING_FIELDS)


def test_merge_prepends_tagged_routes_and_replaces_an_earlier_sync(pki: Any) -> None:
    from gotunnel_caddy.existing import build_fragment, merge

    api = Tunnel.from_raw({"name": "api", "backends": ["http://127.0.0.1:3000"]})
    web = Tunnel.from_raw({"name": "web", "backends": ["http://127.0.0.1:3001"], "https": False})
    theirs = {"match": [{"host": ["mine.example.test"]}], "handle": [{"handler": "static_response"}]}
    base = {"apps": {"http": {"servers": {"site": {"listen": [":8080"], "routes": [theirs]}}},
                     "tls": {"certificates": {"load_files": [{"certificate": "/theirs.pem", "key": "/k", "tags": ["x"]}]}}}}
    once = merge(base, build_fragment(existing(pki, api, web)))
    servers = once["apps"]["http"]["servers"]
    assert [r.get("@id") for r in servers["site"]["routes"]] == ["gotunnel_api_http", "gotunnel_web_http", None]
    assert [r["@id"] for r in servers["gotunnel_https"]["routes"]] == ["gotunnel_api_https"]  # web: no TLS
    assert [f["tags"] for f in once["apps"]["tls"]["certificates"]["load_files"]] == [["x"], ["gotunnel_api"]]
    # Syncing a smaller table replaces what the last sync added, and leaves the host's own parts alone.
    twice = merge(once, build_fragment(existing(pki, web)))
    assert [r.get("@id") for r in twice["apps"]["http"]["servers"]["site"]["routes"]] == ["gotunnel_web_http", None]
    assert "gotunnel_https" not in twice["apps"]["http"]["servers"]
    assert [f["tags"] for f in twice["apps"]["tls"]["certificates"]["load_files"]] == [["x"]]
    assert base["apps"]["http"]["servers"]["site"]["routes"] == [theirs]  # the input is not changed
    json.dumps(twice)


def test_acme_names_get_one_tagged_policy_first_and_a_later_sync_replaces_it(pki: Any) -> None:
    from gotunnel_caddy.existing import ACME_POLICY_ID, build_fragment, merge

    from gotunnel_core.existing import AcmeIssuer

    api = Tunnel.from_raw({"name": "api", "backends": ["http://127.0.0.1:3000"], "hosts": ["api.example.test"]})
    web = Tunnel.from_raw({"name": "web", "backends": ["http://127.0.0.1:3001"], "hosts": ["web.example.test"]})
    sites = (ExistingSite(api, api.hosts, TlsPolicy("acme")),
             ExistingSite(web, web.hosts, TlsPolicy("files", pki.certs["shared"].cert, pki.certs["shared"].key)))
    issuer = AcmeIssuer("https://ca.example.test/dir", "/etc/ssl/ca.pem", "ops@example.test")
    fragment = build_fragment(ExistingTable(Listen("127.0.0.1", 8080, 8443), sites, issuer))
    assert fragment["apps"]["tls"]["automation"]["policies"] == [{
        "@id": ACME_POLICY_ID, "subjects": ["api.example.test"],  # the acme names only, not web's
        "issuers": [{"module": "acme", "ca": "https://ca.example.test/dir",
                     "trusted_roots_pem_files": ["/etc/ssl/ca.pem"], "email": "ops@example.test"}]}]
    assert fragment["apps"]["http"]["servers"]["gotunnel_http"]["automatic_https"] == {"disable": True}
    # No acme_* setting: no policy, Caddy's default issuers apply.
    assert "automation" not in build_fragment(ExistingTable(Listen("127.0.0.1", 8080, 8443), sites))["apps"]["tls"]

    theirs = {"subjects": ["mine.example.test"], "issuers": [{"module": "internal"}]}
    base = {"apps": {"tls": {"automation": {"policies": [theirs]}}}}
    once = merge(base, fragment)
    assert [p.get("@id") for p in once["apps"]["tls"]["automation"]["policies"]] == [ACME_POLICY_ID, None]
    twice = merge(once, build_fragment(ExistingTable(Listen("127.0.0.1", 8080, 8443), sites[1:], issuer)))
    assert twice["apps"]["tls"]["automation"]["policies"] == [theirs]
    assert "automation" not in merge({}, build_fragment(ExistingTable(Listen("127.0.0.1", 8080, 8443), sites[1:])))[
        "apps"]["tls"]
