"""Hypothesis: arbitrary strings in every tunnel field that reaches Caddy's config.

Each example either is refused by the models (ValidationError naming the field) or renders a
JSON config that `caddy validate` accepts, in which every header value comes back exactly as
given once Caddy's placeholder escaping is undone, and a Caddyfile that `caddy adapt` turns into
the same header values (or that the Caddyfile renderer refuses, for `{$`, with an error saying why).
Example counts are modest: each example spawns caddy twice.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from caddy_helpers import caddy_binary, needs_caddy
from gotunnel_core.engine import EngineValidationError
from gotunnel_core.errors import ValidationError
from gotunnel_core.models import CertFiles, Listen, RouteTable, Tunnel

pytestmark = needs_caddy

NASTY = ["{env.HOME}", "{$HOME}", "{http.request.uri}", "\\{", "}", "`", '"', "'", "\\", ";", "#", "\n", "\r\n",
         " ", "\t", "\x00", "<script>", "{{.Host}}", "import /etc/passwd", "}\n:80 {", "${HOME}", "%{x}", "é", "*"]


def nasty_text(alphabet: str | None = None) -> st.SearchStrategy[str]:
    base = st.text(alphabet=alphabet, max_size=40) if alphabet else st.text(max_size=40)
    return st.one_of(
        base,
        st.lists(st.one_of(st.sampled_from(NASTY), base), min_size=1, max_size=5).map("".join),
    )


PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))
# Values the models accept but that mean something to Caddy or to a Caddyfile.
SPICY = ["{env.HOME}", "{$HOME}", "{http.request.uri}", "\\{", "}", "`", '"', "'", "\\", ";", "#", "<<EOF",
         "{host}", "{{.Host}}", "%{x}", "${HOME}", "\\}", "a b"]
valid = {
    "name": st.from_regex(r"\A(\*\.)?[a-z0-9]{1,10}(\.[a-z0-9]{1,5})?\Z"),
    "backend": st.builds(lambda scheme, host, port, path: f"{scheme}://{host}:{port}{path}",
                         st.sampled_from(["http", "https", "h2c"]),  # h2c and https: HTTP/2 transports
                         st.sampled_from(["127.0.0.1", "[::1]", "localhost"]), st.integers(1, 65535),
                         st.sampled_from(["", "/api", "/a/b-c"])),
    "header_name": st.from_regex(r"\AX-[A-Za-z0-9!#$%&'*+.^_`|~-]{1,8}\Z"),
    "header_value": st.lists(st.one_of(st.sampled_from(SPICY), st.text(alphabet=PRINTABLE, max_size=12)),
                             min_size=1, max_size=6).map("".join).map(lambda v: v.strip(" ") or "x"),
    "health": st.from_regex(r"\A/[a-z0-9/_-]{0,10}\Z"),
}
valid["response_value"] = valid["header_value"]
valid["remove"] = valid["header_name"]
FIELDS = sorted(valid)


@pytest.fixture(scope="module")
def scratch():
    from gotunnel_core.testing.engines import make_pki

    root = Path(tempfile.mkdtemp(prefix="gci-", dir="/tmp"))
    pki = make_pki(root / "pki", ["any"])
    try:
        yield root, pki
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run(argv: list[str], root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_DATA_HOME": str(root / "xdg"), "XDG_CONFIG_HOME": str(root / "xdg"), "HOME": str(root)}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)


def _proxies(config: dict) -> list[dict]:
    found = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("handler") == "reverse_proxy":
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(config)
    return found


def _header_sets(config: dict) -> list[dict]:
    return [proxy.get("headers", {}) for proxy in _proxies(config)]


def _versions(config: dict) -> list[list[str]]:
    return [proxy["transport"].get("versions", ["1.1", "2"]) for proxy in _proxies(config)]


def _offers_h2(config: dict) -> set[bool]:
    """Whether each TLS server of the config offers HTTP/2 (Caddy's default protocols include h2)."""
    servers = config["apps"]["http"]["servers"].values()
    return {"h2" in server.get("protocols", ["h1", "h2", "h3"]) for server in servers
            if "tls_connection_policies" in server}


def _unescape(value: str) -> str:
    """What Caddy's replacer makes of an escaped literal: `\\{` -> `{`, `\\}` -> `}`."""
    out, i = [], 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value) and value[i + 1] in "{}":
            out.append(value[i + 1])
            i += 2
            continue
        out.append(value[i])
        i += 1
    return "".join(out)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(data=st.data(), broken=st.one_of(st.none(), st.none(), st.sampled_from(FIELDS)), http2=st.booleans())
def test_arbitrary_fields_are_refused_or_render_a_config_caddy_accepts(scratch, data, broken, http2) -> None:
    """Every field valid-but-spicy, or one of them replaced by arbitrary text."""
    values = {f: data.draw(nasty_text() if f == broken else valid[f], label=f) for f in FIELDS}
    name, backend, header_name = values["name"], values["backend"], values["header_name"]
    header_value, response_value, health, remove = (values["header_value"], values["response_value"],
                                                    values["health"], values["remove"])
    from gotunnel_caddy.caddyfile import render_caddyfile
    from gotunnel_caddy.render import RenderOptions, build_config

    root, pki = scratch
    raw = {
        "name": name,
        "backends": [backend],
        "health": health,
        "headers": {"request": {"add": {header_name: header_value}, "remove": [remove]},
                    "response": {"add": {"X-Resp": response_value}}},
    }
    try:
        tunnel = Tunnel.from_raw(raw)
    except ValidationError as exc:
        assert exc.field and exc.reason  # a clear refusal naming the field
        event(f"refused: {exc.field}")
        return
    event("rendered and validated by caddy")
    cert = pki.certs["any"]
    table = RouteTable(Listen("127.0.0.1", 1, 2), (tunnel,), {tunnel.name: cert}, CertFiles(cert.cert, cert.key))
    opts = RenderOptions(admin_socket=str(root / "admin.sock"), storage_dir=str(root / "data"), http2=http2)
    config = build_config(table, opts)
    assert _offers_h2(config) == {http2}
    for ops in _header_sets(config):
        assert _unescape(ops["request"]["set"][header_name][0]) == header_value
        assert _unescape(ops["response"]["set"]["X-Resp"][0]) == response_value
    (root / "caddy.json").write_text(json.dumps(config))
    result = _run([caddy_binary(), "validate", "--config", str(root / "caddy.json")], root)
    assert result.returncode == 0, (raw, result.stderr[-1500:])

    try:
        caddyfile = render_caddyfile(table, opts)
    except EngineValidationError as exc:
        assert "{$" in header_value + response_value and "environment variable" in exc.message
        return
    (root / "Caddyfile").write_text(caddyfile)
    result = _run([caddy_binary(), "adapt", "--config", str(root / "Caddyfile")], root)
    assert result.returncode == 0, (raw, result.stderr[-1500:])
    adapted = json.loads(result.stdout)
    for ops in _header_sets(adapted):  # the Caddyfile adapter canonicalises header names
        request = {k.lower(): v for k, v in ops["request"]["set"].items()}
        response = {k.lower(): v for k, v in ops["response"]["set"].items()}
        assert _unescape(request[header_name.lower()][0]) == header_value
        assert _unescape(response["x-resp"][0]) == response_value
    assert _versions(adapted) == _versions(config)  # the same upstream HTTP versions (h2c, ALPN h2)
    assert _offers_h2(adapted) == {http2}
