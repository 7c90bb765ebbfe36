"""Rows of the developer's loop: the Host each engine sends upstream for a tunnel's
`host_header = "preserve" | "backend" | "<host[:port]>"` (frameworks such as Vite, Django and
Rails refuse a Host they do not know; `backend` or a literal value gets past them).
"""

from __future__ import annotations

from typing import Any

from ..backends import header_values
from . import Env, app, behaviour, body_json, env  # noqa: F401 - fixtures


def _host_seen(env: Env, name: str, https: bool, path: str = "/h") -> tuple[dict[str, Any], str]:
    """GET through the tunnel; (the backend's echo, the Host the client sent)."""
    status, _, body = env.get(name, path, https=https)
    assert status == 200, body[:300]
    return body_json(body), env.url_host(name, https)


@behaviour("host_header_preserve", "host_header = preserve: the client's Host reaches the backend")
def test_host_header_preserve_sends_the_clients_host(env: Env, app: Any) -> None:
    backend = app()
    env.write_config(f'[[tunnels]]\nname = "keep"\nbackends = ["{backend.url}"]\nhost_header = "preserve"\n')
    env.start()
    for https in (False, True):
        echo, client_host = _host_seen(env, "keep", https)
        assert header_values(echo, "Host") == [client_host]
        assert header_values(echo, "X-Forwarded-Host") == [client_host]
    assert env.g.json("list")["tunnels"][0]["host_header"] == "preserve"


@behaviour("host_header_backend", "host_header = backend: the backend's host:port as Host")
def test_host_header_backend_sends_the_backends_address(env: Env, app: Any) -> None:
    backend = app()
    env.start("-d", "rewrite", "--backend", backend.url + "/base", "--host-header", "backend")
    for https in (False, True):
        echo, client_host = _host_seen(env, "rewrite", https, "/h?x=1")
        assert header_values(echo, "Host") == [f"127.0.0.1:{backend.port}"]
        assert header_values(echo, "X-Forwarded-Host") == [client_host]  # the original stays visible
        assert echo["path"] == "/base/h?x=1"


@behaviour("host_header_backend_each", "host_header = backend with several backends: each gets its own host:port")
def test_host_header_backend_gives_each_backend_its_own_address(env: Env, app: Any) -> None:
    one, two = app("one"), app("two")
    env.start("-d", "pair", "--backend", one.url, "--backend", two.url, "--host-header", "backend")
    client = env.client("pair")
    seen: dict[str, set[str]] = {"one": set(), "two": set()}
    try:
        for _ in range(8):
            status, _, body = client.request("GET", "/")
            assert status == 200
            echo = body_json(body)
            seen[echo["server"]].update(header_values(echo, "Host"))
    finally:
        client.close()
    assert seen == {"one": {f"127.0.0.1:{one.port}"}, "two": {f"127.0.0.1:{two.port}"}}


@behaviour("host_header_custom", "host_header = a literal host[:port]; bad values refused")
def test_host_header_custom_value(env: Env, app: Any) -> None:
    backend = app()
    env.start("-d", "custom", "-p", str(backend.port), "--host-header", "API.example.test:9000")
    for https in (False, True):
        echo, client_host = _host_seen(env, "custom", https)
        assert header_values(echo, "Host") == ["api.example.test:9000"]
        assert header_values(echo, "X-Forwarded-Host") == [client_host]
    for bad in ("a b", "x\r\nInjected: 1", "host:99999", "{env.HOME}", "$host", "example.test\n"):
        result = env.g("start", "-d", "bad", "-p", str(backend.port), "--host-header", bad)
        assert result.code == 2 and result.err.startswith("error: invalid host_header"), (bad, result.err)
        assert len(result.err.strip().splitlines()) <= 2
    assert [t["name"] for t in env.g.json("list")["tunnels"]] == ["custom"]
