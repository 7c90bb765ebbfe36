"""Output for an nginx gotunnel does not run (`render --for existing`): the kit's injection
property test against it, the full nginx.conf through `nginx -t`, and what a fragment may hold."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from gotunnel_core.engine import EngineContext, EngineValidationError
from gotunnel_core.existing import ExistingSite, ExistingTable
from gotunnel_core.models import Listen, TlsPolicy, Tunnel
from gotunnel_core.testing.engines import make_pki
from gotunnel_core.testing.injection import EXISTING_FIELDS, check_refused_or_valid

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (CI installs it)")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_pki(tmp_path_factory.mktemp("pki"), ["shared"])


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from gotunnel_nginx.engine import NginxEngine

    work = tmp_path_factory.mktemp("nginx-work")
    return NginxEngine(EngineContext(work_dir=work, settings={"engine": "nginx", "engine_bin": NGINX}))


def existing(pki: Any, *tunnels: Tunnel, tls: str = "files") -> ExistingTable:
    cert = pki.certs["shared"]
    policy = TlsPolicy("files", cert.cert, cert.key) if tls == "files" else TlsPolicy(tls)
    sites = tuple(ExistingSite(t, t.hosts or (f"{t.name.lstrip('*.')}.example.test",), policy) for t in tunnels)
    return ExistingTable(Listen("127.0.0.1", 8080, 8443), sites)


def write(files: dict[str, str], directory: Path) -> Path:
    (name, content), = files.items()
    path = directory / name
    path.write_text(content)
    return path


@pytest.mark.parametrize("field", list(EXISTING_FIELDS))
def test_arbitrary_strings_are_refused_or_valid_for_an_existing_nginx(field: str, engine: Any, pki: Any,
                                                                      tmp_path: Path) -> None:
    def validate(tunnel: Tunnel) -> None:
        fragment = write(engine.render_existing(existing(pki, tunnel), "fragment"), tmp_path)
        engine.validate_existing(fragment, None, "fragment")

    check_refused_or_valid(field, validate, fields=EXISTING_FIELDS)


def test_full_format_is_a_complete_config_without_user_or_daemon(engine: Any, pki: Any, tmp_path: Path) -> None:
    api = Tunnel.from_raw({"name": "api", "backends": ["http://127.0.0.1:3000"], "hosts": ["api.example.test"],
                           "redirect_https": True, "headers": {"request": {"add": {"X-Price": "5$"}}}})
    conf = write(engine.render_existing(existing(pki, api), "full"), tmp_path)
    text = conf.read_text()
    assert not re.search(r"^\s*(user|daemon|pid|lock_file|\w+_temp_path)\b", text, re.M)
    assert "events {" in text and "http {" in text and "return 307 https://$host:8443$request_uri;" in text
    engine.validate_existing(conf, None, "full")


def test_fragment_holds_only_prefixed_upstream_map_and_server_blocks(engine: Any, pki: Any) -> None:
    tunnels = [Tunnel.from_raw({"name": n, "backends": ["http://127.0.0.1:3000"]}) for n in ("api", "*.preview", "a.b")]
    (name, text), = engine.render_existing(existing(pki, *tunnels), None).items()
    assert name == "gotunnel.conf"
    blocks = re.findall(r"^    (\w+)(.*?) ?\{$", text, re.M)
    assert {kind for kind, _ in blocks} == {"upstream", "map", "server"}  # no `$` in any value: no geo
    defined = [args.split()[-1] for kind, args in blocks if kind != "server"]
    assert sorted(defined) == ["$gotunnel_connection", "$gotunnel_host", "gotunnel___preview", "gotunnel_a_b", "gotunnel_api"]
    assert not re.search(r"\$gt_|\bgt_\d", text) and "__gotunnel" not in text and "error_page" not in text
    assert all(line.startswith(("#", "    ", "")) for line in text.splitlines())


def test_acme_and_unknown_formats_are_refused(engine: Any, pki: Any) -> None:
    api = Tunnel.from_raw({"name": "api", "backends": ["http://127.0.0.1:3000"]})
    with pytest.raises(EngineValidationError, match="acme"):
        engine.render_existing(existing(pki, api, tls="acme"), None)
    with pytest.raises(Exception, match="fragment, full"):
        engine.render_existing(existing(pki, api), "caddyfile")
    off = engine.render_existing(existing(pki, api, tls="off"), None)["gotunnel.conf"]
    assert "ssl_certificate" not in off and " ssl;" not in off and "listen 127.0.0.1:8080;" in off
