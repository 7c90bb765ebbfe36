"""Property tests of Host/SNI normalisation and lookup (no sockets)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gotunnel_builtin_proxy.balancer import Balancer
from gotunnel_builtin_proxy.router import Route, Router, tunnel_name_of
from gotunnel_core.models import Listen, RouteTable, Tunnel

label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)


def _router(names: list[str]) -> Router:
    tunnels = [Tunnel.from_raw({"name": n, "backends": "http://127.0.0.1:1"}) for n in names]
    table = RouteTable(Listen(), tuple(tunnels))
    return Router.build(table, {t.name: Route.build(t, Balancer(t.name, ())) for t in tunnels})


def _mangle(host: str, data: st.DataObject) -> str:
    host = "".join(c.upper() if data.draw(st.booleans()) else c for c in host)
    if data.draw(st.booleans()):
        host += "."
    if data.draw(st.booleans()):
        host += f":{data.draw(st.integers(1, 65535))}"
    return host


@settings(max_examples=200, deadline=None)
@given(name=st.lists(label, min_size=1, max_size=3).map(".".join), suffix=st.sampled_from(["localhost", "local"]),
       data=st.data())
def test_any_spelling_of_a_tunnel_host_finds_it(name, suffix, data):
    router = _router([name])
    host = _mangle(f"{name}.{suffix}", data)
    route = router.lookup(host.encode())
    assert route is not None and route.name == name
    assert tunnel_name_of(host) == name


@settings(max_examples=200, deadline=None)
@given(base=label, sub=label, extra=label, data=st.data())
def test_wildcards_match_exactly_one_label(base, sub, extra, data):
    router = _router([f"*.{base}"])
    assert router.lookup(_mangle(f"{sub}.{base}.localhost", data).encode()).name == f"*.{base}"
    assert router.lookup(f"{extra}.{sub}.{base}.localhost".encode()) is None
    assert router.lookup(f"{base}.localhost".encode()) is None


@given(host=st.binary(max_size=80))
def test_arbitrary_host_bytes_never_crash(host):
    _router(["app", "*.wild"]).lookup(host)


def test_non_tunnel_hosts():
    for host in ["localhost", "local", "example.com", "[::1]:8080", "127.0.0.1:8443", "app.localhost.evil.com", ""]:
        assert tunnel_name_of(host) is None, host
