"""Model validation: every bad value is refused with a message naming it; good ones are normalised."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from gotunnel_core.errors import ValidationError
from gotunnel_core.models import Backend, HeaderRules, HealthCheck, Tunnel, parse_tunnel_name


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("myapp", "myapp"),
        ("MyApp", "myapp"),
        ("api.myapp", "api.myapp"),
        ("myapp.localhost", "myapp"),
        ("myapp.local", "myapp"),
        ("myapp.local.", "myapp"),
        ("*.myapp", "*.myapp"),
        ("bücher", "xn--bcher-kva"),
        ("a" * 63, "a" * 63),
        ("x1-2y", "x1-2y"),
    ],
)
def test_good_names_are_normalised(raw: str, expected: str) -> None:
    assert parse_tunnel_name(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["a;b", "../x", "a\nb", "a b", " a", "a..b", ".a", "a" * 64, "", "-a", "a-", "a_b", "*", "a.*.b", "**.a",
     "localhost", "local", "a/b", "a\x00b", "a'b", 'a"b', "a{b}", "$x"],
)
def test_bad_names_are_refused_naming_the_value(raw: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_tunnel_name(raw)
    assert repr(raw) in str(info.value)


@given(st.text(max_size=80))
def test_any_accepted_name_is_safe_ascii(raw: str) -> None:
    try:
        name = parse_tunnel_name(raw)
    except ValidationError:
        return
    assert name.isascii()
    assert all(ch.isalnum() or ch in ".-*" for ch in name)
    assert ".." not in name and not name.startswith(".") and not name.endswith(".")


@pytest.mark.parametrize(
    "raw, url, weight",
    [
        ("http://127.0.0.1:3000", "http://127.0.0.1:3000", 1),
        ("http://localhost:3000/api/", "http://localhost:3000/api", 1),
        ("https://example.internal", "https://example.internal:443", 1),
        ("http://[::1]:8000", "http://[::1]:8000", 1),
        ("http://127.0.0.1:3000,weight=5", "http://127.0.0.1:3000", 5),
        ("h2c://127.0.0.1:50051", "h2c://127.0.0.1:50051", 1),  # cleartext HTTP/2 (a gRPC server)
        ("H2C://grpc.internal", "h2c://grpc.internal:80", 1),
    ],
)
def test_backends(raw: str, url: str, weight: int) -> None:
    backend = Backend.parse(raw)
    assert (backend.url, backend.weight) == (url, weight)


@pytest.mark.parametrize(
    "raw",
    ["ftp://x:1", "h2://x:1", "grpc://x:1", "http://x:0", "http://x:65536", "http://x:abc", "http://user:pw@x:1", "http://x:1/?q", "http://x:1/#f",
     "http://x:1/a b", "http://x:1/a;b", "http://x y:1", "http://:1", "http://x:1/../etc", "http://x:1,weight=0",
     "http://x:1,weight=1001", "http://x:1,color=red", "http://x:1/a\"b", "http://x:1/{a}", 42],
)
def test_bad_backends_are_refused(raw: object) -> None:
    with pytest.raises(ValidationError):
        Backend.parse(raw)


@pytest.mark.parametrize("field, raw", [
    ("backend path", "http://127.0.0.1:3000//:A"), ("backend path", "http://127.0.0.1:3000//h/x"),
    ("health path", {"path": "//:A"}), ("health path", "//h/x"),
])
def test_a_path_starting_with_two_slashes_is_refused_naming_it(field: str, raw: object) -> None:
    """`//:A` as a path reads as host "", port "A" to a URL parser (`caddy validate` refused it)."""
    with pytest.raises(ValidationError) as refused:
        Backend.parse(raw) if field == "backend path" else HealthCheck.parse(raw)
    assert refused.value.message.startswith(f"invalid {field} ") and "//" in refused.value.message


def test_empty_segments_inside_a_path_are_still_accepted() -> None:
    assert Backend.parse("http://127.0.0.1:3000/a//b").path == "/a//b"
    assert HealthCheck.parse("/a//health").path == "/a//health"


def test_tunnel_from_config_table_round_trips() -> None:
    raw = {
        "name": "Api",
        "backends": ["http://127.0.0.1:3000", {"url": "http://127.0.0.1:3001", "weight": 3}],
        "redirect_https": True,
        "health": {"path": "/health", "interval": 1.5},
        "headers": {"request": {"add": {"X-Env": "dev"}, "remove": ["Cookie"]}, "response": {"add": {"X-Frame-Options": "DENY"}}},
    }
    tunnel = Tunnel.from_raw(raw)
    assert tunnel.name == "api"
    assert [b.weight for b in tunnel.backends] == [1, 3]
    assert tunnel.health == HealthCheck(path="/health", interval=1.5)
    assert Tunnel.from_raw(tunnel.to_dict()) == tunnel


@pytest.mark.parametrize(
    "headers",
    [
        {"request": {"add": {"X-A": "a\r\nInjected: 1"}}},
        {"request": {"add": {"Bad Name": "x"}}},
        {"response": {"remove": ["a:b"]}},
        {"request": {"add": {"X-A": "\x00"}}},
        {"sideways": {}},
        {"response": {"add": {"X-Trailing\n": "x"}}},  # `$` in a regex matches before a final newline
        {"request": {"remove": ["X-Trailing\n"]}},
    ],
)
def test_header_rules_refuse_injection(headers: dict) -> None:
    with pytest.raises(ValidationError):
        HeaderRules.parse(headers)


def test_unknown_tunnel_key_is_refused() -> None:
    with pytest.raises(ValidationError, match="unknown key"):
        Tunnel.from_raw({"name": "a", "backends": ["http://127.0.0.1:1"], "colour": "red"})


@pytest.mark.parametrize("raw, expected", [
    ("preserve", "preserve"), ("backend", "backend"), ("Example.TEST", "example.test"),
    ("api.example.test:9000", "api.example.test:9000"), ("127.0.0.1:80", "127.0.0.1:80"), ("[::1]:3000", "[::1]:3000"),
])
def test_host_header_modes_and_literals(raw: str, expected: str) -> None:
    tunnel = Tunnel.from_raw({"name": "h", "backends": "http://127.0.0.1:3000", "host_header": raw})
    assert tunnel.host_header == expected
    assert Tunnel.from_raw(tunnel.to_dict()) == tunnel
    backend = tunnel.backends[0]
    seen = tunnel.upstream_host("h.localhost:8080", backend)
    assert seen == {"preserve": "h.localhost:8080", "backend": "127.0.0.1:3000"}.get(expected, expected)


@pytest.mark.parametrize("raw", ["", "a b", "x\r\nX-Injected: 1", "host:0", "host:65536", "[nope]:1", "a:b:c",
                                 "under_score", "{env.HOME}", "$host", 80, None, "-lead",
                                 # a final newline: `$` would match before it (fullmatch does not)
                                 "example.test\n", "example.test:80\n", "[::1]\n", "1.2.3.4\n"])
def test_bad_host_header_is_refused_naming_it(raw: object) -> None:
    with pytest.raises(ValidationError) as info:
        Tunnel.from_raw({"name": "h", "backends": "http://127.0.0.1:3000", "host_header": raw})
    assert info.value.field == "host_header" and repr(raw) in info.value.message


def test_host_header_defaults_to_preserve() -> None:
    assert Tunnel.from_raw({"name": "h", "backends": "http://127.0.0.1:3000"}).host_header == "preserve"
