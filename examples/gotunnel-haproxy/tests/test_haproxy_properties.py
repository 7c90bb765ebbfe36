"""Property tests: no string can break out of the HAProxy config.

1. Every field that reaches the config gets arbitrary text (the kit's `gotunnel_core.testing.injection`):
   either the model refuses it with a clear ValidationError, or `haproxy -c` accepts the config.
2. Header names and values that the models accept come out of a real HAProxy byte for byte
   (quotes, backslashes, `$name`, `%[...]`, `;`, braces, `#`): quoting never changes a value, and
   a log-format expression in a value is never evaluated.
3. The quoting filters against a model of HAProxy's line reader.
"""

from __future__ import annotations

import asyncio
import http.client
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gotunnel_core.engine import EngineContext
from gotunnel_core.models import Listen, RouteTable, Tunnel
from gotunnel_core.testing import free_port
from gotunnel_core.testing.engines import EchoServer, make_pki
from gotunnel_core.testing.injection import FIELDS, HEADER_VALUE, check_refused_or_valid
from gotunnel_haproxy.engine import HAProxyEngine
from gotunnel_haproxy.quoting import HAProxyQuoteError, hap_lf, hap_name, hap_str

HAPROXY = HAProxyEngine.probe({}).path
needs_haproxy = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (CI installs it)")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_pki(tmp_path_factory.mktemp("pki"), ["shared"])


def make_engine(work: Path) -> HAProxyEngine:
    return HAProxyEngine(EngineContext(work_dir=work, settings={"engine": "haproxy", "engines": {"haproxy": {"bin": HAPROXY}}}))


@needs_haproxy
@pytest.mark.parametrize("field", list(FIELDS))
def test_arbitrary_strings_are_refused_or_valid_for_haproxy(field: str, pki: Any, tmp_path: Path) -> None:
    engine = make_engine(tmp_path / "work")

    def validate(tunnel: Tunnel) -> None:
        table = RouteTable(Listen("127.0.0.1", 8080, 8443), (tunnel,), {tunnel.name: pki.certs["shared"]}, pki.default)
        asyncio.run(engine.validate(table))

    check_refused_or_valid(field, validate)


@needs_haproxy
@pytest.mark.parametrize("name", [".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 51]),
                                  "*." + ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 49])])
def test_longest_names_fit(name: str, pki: Any, tmp_path: Path) -> None:
    tunnel = Tunnel.from_raw({"name": name, "backends": ["http://127.0.0.1:3000"]})
    assert len(tunnel.name) == 243  # the models' limit
    table = RouteTable(Listen("127.0.0.1", 8080, 8443), (tunnel,), {tunnel.name: pki.certs["shared"]}, pki.default)
    asyncio.run(make_engine(tmp_path / "work").validate(table))


# ----- values survive a real HAProxy unchanged -----------------------------------------------------

TOKEN = st.text(alphabet="!#$%&'*+-.^_`|~0123456789abcXYZ", min_size=1, max_size=20)
LOG_FORMAT = st.sampled_from(["%[src]", "%ci", "%%", "100%", "%[req.hdr(host)]", "%{+Q}o", "%H", "'", "\\", "#", "$HOME",
                              '"${HOME}"', "a b"])


@needs_haproxy
def test_header_names_and_values_pass_through_real_haproxy_verbatim(tmp_path: Path, pki: Any) -> None:
    backend = EchoServer("echo")
    http_port, https_port = free_port(), free_port()
    engine = make_engine(tmp_path / "work")
    loop = asyncio.new_event_loop()

    def table(headers: list[tuple[str, str]]) -> RouteTable:
        tunnel = Tunnel.from_raw({
            "name": "app", "backends": [backend.url],
            "headers": {"request": {"add": {f"X-V{i}-{n}": v for i, (n, v) in enumerate(headers)}},
                        "response": {"add": {f"X-R{i}-{n}": v for i, (n, v) in enumerate(headers)}}},
        })
        return RouteTable(Listen("127.0.0.1", http_port, https_port), (tunnel,), {"app": pki.certs["shared"]}, pki.default)

    loop.run_until_complete(engine.start(table([("start", "start")])))
    try:
        @settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(headers=st.lists(st.tuples(TOKEN, HEADER_VALUE | st.just("") | st.lists(LOG_FORMAT, min_size=1, max_size=4).map("x".join)),
                                min_size=1, max_size=10))
        def check(headers: list[tuple[str, str]]) -> None:
            loop.run_until_complete(engine.apply(table(headers)))
            conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
            conn.request("GET", "/", headers={"Host": "app.localhost"})
            response = conn.getresponse()
            echo = json.loads(response.read())
            conn.close()
            sent = {k.lower(): v for k, v in echo["headers"]}
            for i, (name, value) in enumerate(headers):
                assert sent[f"x-v{i}-{name}".lower()] == value
                assert response.getheader(f"X-R{i}-{name}") == value

        check()
    finally:
        loop.run_until_complete(engine.stop())
        loop.close()
        backend.close()


# ----- the filters against HAProxy's line reader ---------------------------------------------------

def haproxy_words(line: str) -> list[str]:
    """How HAProxy 2.6 splits a config line into words (tools.c `parse_line`), for what the filters
    write: unquoted spaces separate, `#` starts a comment, `\\` escapes the next character, single
    quotes take everything literally, and quoted and unquoted parts next to each other form one word."""
    words: list[str] = []
    word: str | None = None
    quote = False
    i = 0
    while i < len(line):
        ch = line[i]
        if quote:
            if ch == "'":
                quote = False
            else:
                word += ch  # type: ignore[operator]
        elif ch == "'":
            quote, word = True, word or ""
        elif ch == "\\":
            word = (word or "") + line[i + 1]
            i += 1
        elif ch in " \t":
            if word is not None:
                words.append(word)
            word = None
        elif ch == "#":
            break
        else:
            word = (word or "") + ch
        i += 1
    assert not quote, "an unclosed quote"
    if word is not None:
        words.append(word)
    return [w for w in words if w]  # an empty word counts as none (HAProxy 2.6 drops it)


def log_format_text(word: str) -> str:
    """The text a log-format word stands for when it holds no expression: `%%` is `%`."""
    assert "%" not in word.replace("%%", ""), "a lone % would start a log-format expression"
    return word.replace("%%", "%")


PRINTABLE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E))


@given(PRINTABLE | st.text(alphabet=st.characters(min_codepoint=0x20, blacklist_characters="\x7f")))
def test_quoting_filters_round_trip(value: str) -> None:
    words = haproxy_words(f"http-request set-header X-A {hap_lf(value)}")
    assert len(words) == 4
    assert log_format_text(words[3]) == value if value else words[3] == "%[str()]"
    if value:
        assert haproxy_words(f"http-request del-header {hap_str(value)} # comment") == ["http-request", "del-header", value]


@given(st.text())
def test_filters_refuse_control_characters_and_names_refuse_anything_but_host_names(value: str) -> None:
    controls = any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)
    for quote in (hap_str, hap_lf, hap_name):
        try:
            quote(value)
        except HAProxyQuoteError:
            continue
        assert not controls and (value or quote is hap_lf)
        if quote is hap_name:
            assert set(value) <= set("abcdefghijklmnopqrstuvwxyz0123456789.-*")
