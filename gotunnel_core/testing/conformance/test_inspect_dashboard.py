"""The dashboard row: `https://gotunnel.localhost:<https_port>/` on every engine, for this machine only.

The daemon routes `gotunnel.localhost` to its dashboard like any `lan = false` tunnel
(`gotunnel_core.dashboard.route`), so the row checks what the engine must get right for that: the
API and page over HTTPS with the local CA, server-sent events streamed as they happen (no
buffering), nothing for a LAN peer (a network namespace) and nothing for a DNS-rebinding Host.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from typing import Any

from ..backends import LOCAL, connect, get
from ..runner import wait_for
from . import Env, app, behaviour, body_json, env  # noqa: F401 - fixtures
from .test_hardening import LanPeer, lan_peer  # noqa: F401 - fixture

DASHBOARD = "gotunnel.localhost"
EVENT_DEADLINE = 20.0


def _dashboard(env: Env, path: str, https: bool = True, host: str | None = None) -> tuple[int, dict[str, str], bytes]:
    port = env.g.https_port if https else env.g.http_port
    return get(port, host or f"{DASHBOARD}:{port}", path, ca=env.ca if https else None)


def _api(env: Env, path: str, https: bool = True) -> Any:
    status, headers, body = _dashboard(env, path, https)
    assert status == 200 and headers["content-type"].startswith("application/json"), (path, status, body[:300])
    return json.loads(body)


class EventStream:
    """`GET /api/events` through the engine over HTTPS, read as the bytes arrive (no buffering allowed)."""

    def __init__(self, env: Env) -> None:
        port = env.g.https_port
        self.conn = http.client.HTTPConnection(LOCAL, port, timeout=EVENT_DEADLINE)
        self.conn.sock = connect(port, DASHBOARD, env.ca, EVENT_DEADLINE)
        self.conn.request("GET", "/api/events", headers={"Host": f"{DASHBOARD}:{port}", "Accept": "text/event-stream"})
        self.response = self.conn.getresponse()
        assert self.response.status == 200, self.response.status
        assert self.response.getheader("content-type", "").startswith("text/event-stream")
        self.seen = b""

    def until(self, marker: bytes, what: str) -> bytes:
        """Read until `marker` arrived, within the deadline; what was read so far."""
        deadline = time.monotonic() + EVENT_DEADLINE
        while marker not in self.seen:
            assert time.monotonic() < deadline, f"{what}: not streamed within {EVENT_DEADLINE}s; got {self.seen[-500:]!r}"
            chunk = self.response.read1(65536)
            assert chunk, f"{what}: the stream ended; got {self.seen[-500:]!r}"
            self.seen += chunk
        return self.seen

    def close(self) -> None:
        self.conn.close()


def _rebinding_https(env: Env, path: str) -> tuple[int, bytes]:
    """A DNS-rebinding page's request over HTTPS: SNI and Host `evil.example` (status 0: refused)."""
    context = ssl.create_default_context(cafile=env.ca)
    context.check_hostname = False  # the engine has no certificate for evil.example; we look past that
    try:
        conn = http.client.HTTPSConnection(LOCAL, env.g.https_port, timeout=15, context=context)
        conn.sock = context.wrap_socket(connect(env.g.https_port, None, None), server_hostname="evil.example")
        conn.request("GET", path, headers={"Host": f"evil.example:{env.g.https_port}"})
        response = conn.getresponse()
        return response.status, response.read()
    except (ssl.SSLError, ConnectionError, http.client.HTTPException):
        return 0, b""


def _not_the_dashboard(status: int, body: bytes) -> bool:
    """The engine answered (or refused) itself: no API data, and not even the dashboard's own 421
    (its Host check is a second line, the engine must not route these requests there at all)."""
    return (status != 200 and b'"tunnels"' not in body and b'"requests"' not in body and b"/from-here" not in body
            and b"gotunnel's dashboard" not in body)


@behaviour("dashboard", "Dashboard through the engine (https://gotunnel.localhost): API, page, live events; "
                        "this machine only, Host-checked")
def test_dashboard_through_the_engine(env: Env, app: Any, lan_peer: LanPeer) -> None:
    env.g.env["GOTUNNEL_BIND"] = "0.0.0.0"  # as by default: the engine's ports face the LAN
    backend = app("watched")
    env.start("-d", "watched", "-p", str(backend.port), "--inspect")

    # The API and the page over HTTPS with the local CA (and plain HTTP on the HTTP port).
    listing = _api(env, "/api/tunnels")
    assert [t["name"] for t in listing["tunnels"]] == ["watched"]  # the dashboard's own route is not a user tunnel
    assert [t["name"] for t in _api(env, "/api/tunnels", https=False)["tunnels"]] == ["watched"]
    status, headers, page = _dashboard(env, "/")
    assert status == 200 and b'id="requests"' in page and headers["content-type"].startswith("text/html")

    # Server-sent events arrive while the stream stays open: a request to the inspected tunnel shows.
    stream = EventStream(env)
    try:
        stream.until(b"retry:", "the stream's first bytes")  # subscribed before the request below
        assert env.get("watched", "/from-here", https=True)[0] == 200
        seen = stream.until(b"/from-here", "the event of a request to the inspected tunnel")
        event = next(json.loads(line[len(b"data: "):]) for line in seen.split(b"\n")
                     if line.startswith(b"data: ") and b"/from-here" in line)
        assert event["tunnel"] == "watched" and event["path"] == "/from-here"
    finally:
        stream.close()

    # A write from the page's own origin is allowed; another site's is refused by the dashboard.
    origin = f"https://{DASHBOARD}:{env.g.https_port}"
    rid = wait_for(lambda: _api(env, "/api/requests?tunnel=watched")["requests"], what="a record")[0]["id"]
    hits = backend.hits
    status, _, body = get(env.g.https_port, f"{DASHBOARD}:{env.g.https_port}", f"/api/requests/{rid}/replay",
                          ca=env.ca, method="POST", headers={"Origin": origin})
    assert status == 200 and body_json(body)["status"] == 200 and backend.hits == hits + 1
    status, _, _ = get(env.g.https_port, f"{DASHBOARD}:{env.g.https_port}", f"/api/requests/{rid}/replay",
                       ca=env.ca, method="POST", headers={"Origin": "https://evil.example"})
    assert status == 403 and backend.hits == hits + 1

    # DNS rebinding: a page at evil.example resolved to 127.0.0.1 sends its own name; the engine
    # does not route it to the dashboard (plain HTTP, and HTTPS with SNI evil.example).
    for path in ("/api/tunnels", "/api/requests", "/"):
        status, _, body = get(env.g.http_port, f"evil.example:{env.g.http_port}", path)
        assert _not_the_dashboard(status, body), (path, status, body[:300])
        status, body = _rebinding_https(env, path)
        assert _not_the_dashboard(status, body), (path, status, body[:300])

    # A LAN peer naming the dashboard gets whatever the engine gives LAN peers for .localhost
    # names (or lan = false routes), never the API's data; nothing is replayed.
    http_url = f"http://{lan_peer.host_ip}:{env.g.http_port}"
    wait_for(lambda: lan_peer.curl(http_url + "/", host=f"watched.local:{env.g.http_port}")[0] == 200,
             timeout=20, what="the LAN peer to reach watched.local (the network works)")
    hits = backend.hits
    for host in (DASHBOARD, f"{DASHBOARD}:{env.g.http_port}", "gotunnel.local"):
        for path in ("/api/tunnels", "/api/requests", "/"):
            assert _not_the_dashboard(*lan_peer.curl(http_url + path, host=host)), (host, path)
        status, body = lan_peer.curl(http_url + f"/api/requests/{rid}/replay", host=host, method="POST",
                                      headers={"X-Forwarded-For": "127.0.0.1"})
        assert _not_the_dashboard(status, body), (host, status)
    for name in (DASHBOARD, "gotunnel.local"):
        https_url = f"https://{name}:{env.g.https_port}"
        for path in ("/api/tunnels", "/"):
            status, body = lan_peer.curl(https_url + path, cacert=env.ca,
                                         resolve=f"{name}:{env.g.https_port}:{lan_peer.host_ip}")
            assert _not_the_dashboard(status, body), (name, path, status)
    assert backend.hits == hits
