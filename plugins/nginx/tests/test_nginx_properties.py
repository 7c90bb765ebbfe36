"""Property tests: no string can break out of the nginx config.

1. Every field that reaches the nginx template gets arbitrary text: either the model refuses it
   with a clear ValidationError, or the rendered config passes `nginx -t`.
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
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gotunnel_core.testing.engines import make_pki
from gotunnel_core.testing import free_port
from gotunnel_core.engine import EngineContext, EngineValidationError
from gotunnel_core.errors import ValidationError
from gotunnel_core.models import Listen, RouteTable, Tunnel

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (CI installs it)")

# Text with everything that matters to nginx's parser and to HTTP: quotes, backslash, `$`,
# `;`, braces, `#`, spaces, controls (CR, LF, NUL, TAB), non-ASCII.
NASTY = st.text(alphabet=st.sampled_from(list("aZ09-._~/:@%*$;{}#\"'\\ \t\r\n\x00\x7fé€!&()+,=?[]<>`|^")) | st.characters(),
                max_size=80)


TOKEN = st.text(alphabet="!#$%&'*+-.^_`|~0123456789abcXYZ", min_size=1, max_size=30)
PRINTABLE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)
PATHISH = st.text(alphabet=list("/abc019-._~!&()*+,=:@%$;{}#\"'\\ "), max_size=40).map(lambda v: "/" + v)
#: Paths of plain unreserved characters: most PATHISH draws are refused, and a run must also
#: draw enough accepted values for the "accepted" branch (>= 5 of 60) whatever the seed.
CLEAN_PATH = st.text(alphabet=list("/abc019-._~"), max_size=40).map(lambda v: "/" + v)
HOSTNAME = st.from_regex(r"(\*\.)?[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z0-9]{1,10}){0,3}", fullmatch=True)
#: Per field: arbitrary text, plus values shaped like valid ones so the "accepted" branch is hit.
SHAPED: dict[str, Any] = {
    "name": HOSTNAME,
    "backend url": st.builds(lambda h, p, path: f"http://{h}:{p}{path}", st.sampled_from(["127.0.0.1", "localhost", "[::1]"]),
                             st.integers(0, 70000), PATHISH),
    "backend path prefix": PATHISH | CLEAN_PATH,
    "backend weight": st.integers(-5, 2000).map(str),
    "health path": PATHISH | CLEAN_PATH,
    "request header name (add)": TOKEN,
    "request header value": PRINTABLE,
    "request header name (remove)": TOKEN,
    "response header name (add)": TOKEN,
    "response header value": PRINTABLE,
    "response header name (remove)": TOKEN,
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_pki(tmp_path_factory.mktemp("pki"), ["shared"])


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from gotunnel_nginx.engine import NginxEngine

    work = tmp_path_factory.mktemp("nginx-work")
    return NginxEngine(EngineContext(work_dir=work, settings={"engine": "nginx", "engine_bin": NGINX}))


def base_tunnel() -> dict[str, Any]:
    return {
        "name": "app",
        "backends": [{"url": "http://127.0.0.1:3000", "weight": 2}, "http://127.0.0.1:3001"],
        "health": {"path": "/health", "interval": 1, "timeout": 1, "healthy_threshold": 1, "unhealthy_threshold": 2},
        "headers": {"request": {"add": {"X-A": "1"}, "remove": ["X-B"]},
                    "response": {"add": {"X-C": "3"}, "remove": ["X-D"]}},
    }


def _set_name(t: dict[str, Any], v: str) -> None:
    t["name"] = v


def _set_backend(t: dict[str, Any], v: str) -> None:
    t["backends"] = [v]


def _set_backend_path(t: dict[str, Any], v: str) -> None:
    t["backends"] = ["http://127.0.0.1:3000" + v]


def _set_weight(t: dict[str, Any], v: str) -> None:
    t["backends"] = [{"url": "http://127.0.0.1:3000", "weight": v}]


def _set_health_path(t: dict[str, Any], v: str) -> None:
    t["health"]["path"] = v


FIELDS: dict[str, Callable[[dict[str, Any], str], None]] = {
    "name": _set_name,
    "backend url": _set_backend,
    "backend path prefix": _set_backend_path,
    "backend weight": _set_weight,
    "health path": _set_health_path,
    "request header name (add)": lambda t, v: t["headers"]["request"]["add"].update({v: "x"}),
    "request header value": lambda t, v: t["headers"]["request"]["add"].update({"X-A": v}),
    "request header name (remove)": lambda t, v: t["headers"]["request"].update(remove=[v]),
    "response header name (add)": lambda t, v: t["headers"]["response"]["add"].update({v: "x"}),
    "response header value": lambda t, v: t["headers"]["response"]["add"].update({"X-C": v}),
    "response header name (remove)": lambda t, v: t["headers"]["response"].update(remove=[v]),
}


@pytest.mark.parametrize("field", list(FIELDS))
def test_arbitrary_strings_are_refused_or_valid_for_nginx(field: str, engine: Any, pki: Any) -> None:
    cert = pki.certs["shared"]
    outcomes = {"refused": 0, "validated": 0}

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(value=NASTY | SHAPED[field])
    def check(value: str) -> None:
        raw = base_tunnel()
        FIELDS[field](raw, value)
        try:
            tunnel = Tunnel.from_raw(raw)
        except ValidationError as exc:
            assert exc.message.startswith("invalid ") and exc.reason  # refused, saying which field and why
            outcomes["refused"] += 1
            return
        outcomes["validated"] += 1
        table = RouteTable(Listen("127.0.0.1", 8080, 8443), (tunnel,), {tunnel.name: cert}, pki.default)
        try:
            asyncio.run(engine.validate(table))
        except EngineValidationError as exc:
            pytest.fail(f"{field} = {value!r} was accepted by the model but nginx -t refused the config: {exc.message}")

    check()
    assert outcomes["validated"] >= 5 and outcomes["refused"] >= 5, outcomes  # both branches exercised


# ----- values survive a real nginx unchanged -------------------------------------------------------

HEADER_VALUE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=60).filter(
    lambda v: v == v.strip(" "))


def test_header_values_pass_through_real_nginx_verbatim(tmp_path: Path, pki: Any) -> None:
    from gotunnel_nginx.engine import NginxEngine

    from gotunnel_core.testing.engines import EchoServer

    backend = EchoServer("echo")
    http_port, https_port = free_port(), free_port()
    engine = NginxEngine(EngineContext(work_dir=tmp_path / "work", settings={"engine": "nginx", "engine_bin": NGINX}))
    loop = asyncio.new_event_loop()

    def table(values: list[str]) -> RouteTable:
        tunnel = Tunnel.from_raw({
            "name": "app", "backends": [backend.url],
            "headers": {"request": {"add": {f"X-V{i}": v for i, v in enumerate(values)}},
                        "response": {"add": {f"X-R{i}": v for i, v in enumerate(values)}}},
        })
        return RouteTable(Listen("127.0.0.1", http_port, https_port), (tunnel,), {"app": pki.certs["shared"]}, pki.default)

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
