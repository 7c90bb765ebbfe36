"""The inspector row: a tunnel started with `--inspect` is recorded and replayable on every engine.

Either the engine records natively (`Engine.inspect_mode`, the builtin engine) or the daemon puts
its recording relay between the engine and the backend (`gotunnel_core.inspect`); the row checks
the result, whichever the engine does: recorded over HTTP and HTTPS, with websockets still passing.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from typing import Any

from ..backends import WsEchoServer
from ..runner import wait_for
from . import Env, app, behaviour, body_json, env  # noqa: F401 - fixtures


def _api(env: Env, path: str, method: str = "GET") -> Any:
    port = env.g.dashboard_port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, headers={"Host": f"gotunnel.localhost:{port}"})
        response = conn.getresponse()
        data = response.read()
        assert response.status == 200, (path, response.status, data[:300])
        return json.loads(data)
    finally:
        conn.close()


@behaviour("inspect", "Inspector (--inspect): requests recorded over HTTP and HTTPS, replayed to the backend")
def test_inspected_tunnel_is_recorded_and_replayed(env: Env, app: Any) -> None:
    from websockets.sync.client import connect as ws_connect

    backend = app("inspected")
    env.start("-d", "seen", "-p", str(backend.port), "--inspect")
    for https in (False, True):
        status, _, body = env.get("seen", f"/tls-{str(https).lower()}", https=https)
        assert status == 200 and body_json(body)["server"] == "inspected"

    def recorded() -> list[dict[str, Any]]:
        rows = _api(env, "/api/requests?tunnel=seen")["requests"]
        return rows if len(rows) >= 2 and all(r["done"] for r in rows) else []

    rows = wait_for(recorded, what="both requests recorded")
    assert [(r["path"], r["status"]) for r in rows[:2]] == [("/tls-true", 200), ("/tls-false", 200)]
    detail = _api(env, f"/api/requests/{rows[0]['id']}")
    forwarded = {k.lower(): v for k, v in detail["request"]["headers"]}
    assert forwarded["x-forwarded-proto"] == "https" and forwarded["host"].startswith("seen.localhost")
    hits = backend.hits
    replayed = _api(env, f"/api/requests/{rows[0]['id']}/replay", "POST")
    assert replayed["status"] == 200 and backend.hits == hits + 1

    server = WsEchoServer()  # websockets pass through the relay unchanged (and are not parsed)
    try:
        env.start("-d", "ws-seen", "--backend", server.url, "--inspect")
        raw = socket.create_connection(("127.0.0.1", env.g.https_port), timeout=10)
        ws = ws_connect(f"wss://ws-seen.localhost:{env.g.https_port}/chat", sock=raw, open_timeout=10,
                        ssl=ssl.create_default_context(cafile=env.ca))
        with ws:
            ws.send("through the relay")
            assert ws.recv(timeout=10) == "through the relay"
        assert _api(env, "/api/requests?tunnel=ws-seen")["requests"][0]["status"] == 101
    finally:
        server.close()
