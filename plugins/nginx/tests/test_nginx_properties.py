"""Property tests: no string can break out of the nginx config.

1. Every field that reaches the nginx template gets arbitrary text (the kit's
   `gotunnel_core.testing.injection`): either the model refuses it with a clear ValidationError,
   or the rendered config passes `nginx -t`.
2. Header values that the models accept come out of a real nginx byte for byte (quotes,
   backslashes, `$name`, `;`, braces, `#`): quoting never changes a value, never expands one.
3. The quoting filters themselves, against a model of nginx's token reader.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gotunnel_core.testing.engines import make_pki
from gotunnel_core.testing import free_port
from gotunnel_core.engine import EngineContext
from gotunnel_core.models import Listen, RouteTable, Tunnel
from gotunnel_core.testing.injection import FIELDS, HEADER_VALUE, check_refused_or_valid

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


@pytest.mark.parametrize("field", list(FIELDS))
def test_arbitrary_strings_are_refused_or_valid_for_nginx(field: str, engine: Any, pki: Any) -> None:
    def validate(tunnel: Tunnel) -> None:
        table = RouteTable(Listen("127.0.0.1", 8080, 8443), (tunnel,), {tunnel.name: pki.certs["shared"]}, pki.default)
        asyncio.run(engine.validate(table))

    check_refused_or_valid(field, validate)


# ----- values survive a real nginx unchanged -------------------------------------------------------

def header_rules_table(backend_url: str, values: list[str], ports: tuple[int, int], cert: Any, default: Any) -> RouteTable:
    """Tunnel `app` to `backend_url`, adding value i as request header X-V<i> and response header X-R<i>."""
    tunnel = Tunnel.from_raw({
        "name": "app", "backends": [backend_url],
        "headers": {"request": {"add": {f"X-V{i}": v for i, v in enumerate(values)}},
                    "response": {"add": {f"X-R{i}": v for i, v in enumerate(values)}}},
    })
    return RouteTable(Listen("127.0.0.1", *ports), (tunnel,), {"app": cert}, default)


def test_header_values_pass_through_real_nginx_verbatim(tmp_path: Path, pki: Any) -> None:
    from gotunnel_nginx.engine import NginxEngine

    from gotunnel_core.testing.engines import EchoServer

    backend = EchoServer("echo")
    http_port, https_port = free_port(), free_port()
    engine = NginxEngine(EngineContext(work_dir=tmp_path / "work", settings={"engine": "nginx", "engine_bin": NGINX}))
    loop = asyncio.new_event_loop()

    def table(values: list[str]) -> RouteTable:
        return header_rules_table(backend.url, values, (http_port, https_port), pki.certs["shared"], pki.default)

    loop.run_until_complete(engine.start(table(["start"])))
    try:
        @settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(values=st.lists(HEADER_VALUE, min_size=1, max_size=12))
        def check(values: list[str]) -> None:
            assume(all(v.strip() for v in values))
            loop.run_until_complete(engine.apply(table(values)))
            conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
            conn.request("GET", "/", headers={"Host": "app.localhost"})
            response = conn.getresponse()
            import json

            echo = json.loads(response.read())
            conn.close()
            sent = {k.lower(): v for k, v in echo["headers"]}
            for i, value in enumerate(values):
                assert sent[f"x-v{i}"] == value
                assert response.getheader(f"X-R{i}") == value

        check()
    finally:
        loop.run_until_complete(engine.stop())
        loop.close()
        backend.close()


def test_header_values_pass_through_real_nginx_grpc_verbatim(tmp_path: Path) -> None:
    """The same through the grpc module (grpc_set_header, add_header on an h2c tunnel), to a real gRPC
    backend and back to a real gRPC client over TLS."""
    from gotunnel_nginx.engine import NginxEngine

    from gotunnel_core.testing.grpc_backend import GrpcBackend, GrpcClient

    pki = make_pki(tmp_path / "pki", ["app"])
    backend = GrpcBackend()
    http_port, https_port = free_port(), free_port()
    engine = NginxEngine(EngineContext(work_dir=tmp_path / "work", settings={"engine": "nginx", "engine_bin": NGINX}))
    loop = asyncio.new_event_loop()

    def table(values: list[str]) -> RouteTable:
        return header_rules_table(backend.url, values, (http_port, https_port), pki.certs["app"], pki.default)

    loop.run_until_complete(engine.start(table(["start"])))
    client = GrpcClient(https_port, f"app.localhost:{https_port}", str(pki.ca_file))
    try:
        @settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(values=st.lists(HEADER_VALUE, min_size=1, max_size=8))
        def check(values: list[str]) -> None:
            assume(all(v.strip() for v in values))
            loop.run_until_complete(engine.apply(table(values)))
            backend.metadata.clear()
            _, call = client.unary_with_call("Unary", b"x")
            sent = backend.metadata[0]
            answered = dict(call.initial_metadata())
            for i, value in enumerate(values):
                assert sent[f"x-v{i}"] == value
                assert answered[f"x-r{i}"] == value

        check()
    finally:
        client.close()
        loop.run_until_complete(engine.stop())
        loop.close()
        backend.close()


# ----- the filters against nginx's token reader ------------------------------------------------------

def nginx_unquote(token: str) -> str:
    """How nginx reads a double-quoted token (ngx_conf_read_token): \\" \\' \\\\ unescape, \\t \\r \\n too."""
    assert token[0] == token[-1] == '"'
    out, i, body = [], 0, token[1:-1]
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body) and body[i + 1] in "\"'\\":
            out.append(body[i + 1])
            i += 2
            continue
        if ch == "\\" and i + 1 < len(body) and body[i + 1] in "trn":
            out.append({"t": "\t", "r": "\r", "n": "\n"}[body[i + 1]])
            i += 2
            continue
        assert ch != '"', "an unescaped quote would end the token"
        out.append(ch)
        i += 1
    return "".join(out)


@given(st.text(alphabet=st.characters(min_codepoint=0x20, blacklist_characters="\x7f")))
def test_quoting_filters_round_trip(value: str) -> None:
    from gotunnel_nginx.quoting import ngx_lit, ngx_str

    assert nginx_unquote(ngx_lit(value)) == value
    assert nginx_unquote(ngx_str(value)).replace("${gt_dollar}", "$") == value
    assert "$" not in nginx_unquote(ngx_str(value)).replace("${gt_dollar}", "")


@given(st.text())
def test_filters_refuse_control_characters_and_paths_with_dollar(value: str) -> None:
    from gotunnel_nginx.quoting import NginxQuoteError, ngx_lit, ngx_name, ngx_path, ngx_str

    controls = any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)
    for quote in (ngx_str, ngx_lit, ngx_path, ngx_name):
        try:
            quote(value)
        except NginxQuoteError:
            continue
        assert not controls
        if quote is ngx_path:
            assert "$" not in value


@pytest.mark.parametrize("name", [".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 51]),
                                  "*." + ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 49])])
def test_longest_names_fit_nginx_hash_tables(name: str, engine: Any, pki: Any) -> None:
    tunnel = Tunnel.from_raw({"name": name, "backends": ["http://127.0.0.1:3000"]})
    assert len(tunnel.name) == 243  # the models' limit
    table = RouteTable(Listen("127.0.0.1", 8080, 8443), (tunnel,), {tunnel.name: pki.certs["shared"]}, pki.default)
    asyncio.run(engine.validate(table))
