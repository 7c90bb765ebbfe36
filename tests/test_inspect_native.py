"""The builtin engine records inspected tunnels itself (`Engine.inspect_mode` native, `workers = 1`):
no relay listener, the same records over HTTP/1.1 and HTTP/2 clients, health checks left out; and
with `workers = 2` the daemon's relay again. Checked through the real CLI, daemon and sockets."""

from __future__ import annotations

import json
from typing import Any

import psutil

from gotunnel_core.testing import Gotunnel, wait_for
from gotunnel_core.testing.h2client import H2Client

from inspect_helpers import dash_json, through


def _listening(g: Gotunnel) -> set[int]:
    """TCP ports the daemon process listens on."""
    pid = g.daemon_pid()
    assert pid is not None
    return {c.laddr.port for c in psutil.Process(pid).net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}


def _records(g: Gotunnel, tunnel: str, count: int) -> list[dict[str, Any]]:
    rows = dash_json(g, f"/api/requests?tunnel={tunnel}")["requests"]
    return rows if len(rows) >= count and all(r["done"] for r in rows) else []


def _inspect_mode(g: Gotunnel) -> dict[str, Any]:
    return next(e["inspect"] for e in g.json("engines")["engines"] if e["name"] == "builtin")


def test_builtin_records_natively_over_http1_and_http2_with_no_relay(gotunnel: Gotunnel, echo_backend: Any) -> None:
    backend = echo_backend("native-backend")
    gotunnel("start", "-d", "plain", "-p", str(backend.port), check=True)
    listening = _listening(gotunnel)
    gotunnel("start", "-d", "native", "-p", str(backend.port), "--inspect", check=True)
    assert _inspect_mode(gotunnel)["mode"] == "native"
    assert dash_json(gotunnel, "/api/tunnels")["inspector"]["mode"] == "native"

    status, body = through(gotunnel, "native", "/h1?q=1", "POST", b"ping", {"Content-Type": "text/plain"})
    assert status == 200 and json.loads(body)["body"] == "ping"
    # No relay: the daemon listens on exactly the ports it did before the inspected tunnel came.
    assert _listening(gotunnel) == listening

    client = H2Client(gotunnel.https_port, "native.localhost", None)
    try:
        assert client.alpn == "h2"
        answer = client.request("PUT", "/h2", [("content-type", "application/json"), ("content-length", "14")],
                                b'{"over": "h2"}')
    finally:
        client.close()
    assert answer.status == 200 and json.loads(bytes(answer.body))["body"] == '{"over": "h2"}'
    assert through(gotunnel, "plain", "/not-recorded")[0] == 200
    assert backend.hits[-3:] == ["/h1?q=1", "/h2", "/not-recorded"]

    rows = wait_for(lambda: _records(gotunnel, "native", 2), what="two records")
    assert [(r["method"], r["path"], r["status"]) for r in rows] == [("PUT", "/h2", 200), ("POST", "/h1?q=1", 200)]
    assert not dash_json(gotunnel, "/api/requests?tunnel=plain")["requests"]
    for row, sent in zip(rows, ('{"over": "h2"}', "ping")):
        detail = dash_json(gotunnel, f"/api/requests/{row['id']}")
        # What the engine wrote to the backend (HTTP/1.1 for both clients, with its X-Forwarded-*).
        assert detail["http_version"] == "1.1" and detail["backend"] == backend.url
        head = {k.lower(): v for k, v in detail["request"]["headers"]}
        assert head["host"].startswith("native.localhost")
        assert "x-forwarded-for" in head and "x-forwarded-proto" in head
        assert detail["request"]["body"]["text"] == sent and not detail["request"]["body"]["truncated"]
        # ...and what it read from the backend: the echo's own head and body.
        assert json.loads(detail["response"]["body"]["text"])["body"] == sent
        assert any(k.lower() == "content-type" for k, _ in detail["response"]["headers"])
        assert detail["timings"]["total_ms"] >= detail["timings"]["first_byte_ms"] >= 0

    # Replay goes straight to the backend and is recorded as a new request.
    replayed = dash_json(gotunnel, f"/api/requests/{rows[1]['id']}/replay", "POST")
    assert replayed["status"] == 200 and replayed["replay_of"] == rows[1]["id"] and backend.hits[-1] == "/h1?q=1"


def test_native_recording_leaves_health_checks_out(gotunnel: Gotunnel, echo_backend: Any) -> None:
    backend = echo_backend("checked")
    gotunnel("start", "-d", "checked", "-p", str(backend.port), "--health-path", "/healthz", "--inspect", check=True)
    wait_for(lambda: backend.hits.count("/healthz") >= 2, timeout=30, what="two health checks at the backend")
    assert through(gotunnel, "checked", "/app")[0] == 200
    rows = wait_for(lambda: _records(gotunnel, "checked", 1), what="a record")
    assert [r["path"] for r in rows] == ["/app"]


def test_two_workers_fall_back_to_the_relay(gotunnel: Gotunnel, echo_backend: Any) -> None:
    (gotunnel.state_dir.parent / "gotunnel.toml").write_text("workers = 2\n")
    mode = _inspect_mode(gotunnel)
    assert mode["mode"] == "relay" and "workers = 2" in mode["detail"]
    backend = echo_backend("relayed")
    gotunnel("start", "-d", "plain", "-p", str(backend.port), check=True)
    listening = _listening(gotunnel)
    gotunnel("start", "-d", "relayed", "-p", str(backend.port), "--inspect", check=True)
    assert len(_listening(gotunnel) - listening) == 1  # the relay of its one backend
    assert dash_json(gotunnel, "/api/tunnels")["inspector"]["mode"] == "relay"
    status, body = through(gotunnel, "relayed", "/via-relay")
    assert status == 200 and json.loads(body)["path"] == "/via-relay"
    rows = wait_for(lambda: _records(gotunnel, "relayed", 1), what="a record")
    assert [(r["path"], r["status"]) for r in rows] == [("/via-relay", 200)]


def test_inspect_mode_is_the_engines_declaration_and_the_recorder_opens_observers() -> None:
    """The extension point itself: `Engine.inspect_mode` (relay unless an engine says native) and
    `InspectRecorder.open`, whose observers record one connection and skip its health checks."""
    from gotunnel_builtin_proxy.engine import BuiltinEngine

    from gotunnel_core.engine import Engine
    from gotunnel_core.inspect.native import RELAY, InspectRecorder
    from gotunnel_core.inspect.records import RecordStore
    from gotunnel_core.models import Tunnel

    assert Engine.inspect_mode({}) is RELAY and not RELAY.native
    assert BuiltinEngine.inspect_mode({}).native
    two = BuiltinEngine.inspect_mode({"workers": 2})
    assert two.to_dict()["mode"] == "relay" and "workers = 2" in two.detail

    store = RecordStore(10, 4)
    tunnel = Tunnel.from_raw({"name": "t", "backends": ["http://127.0.0.1:9"], "health": "/hz", "inspect": True})
    requests, responses = InspectRecorder(store).open(tunnel, tunnel.backends[0])
    requests.feed(b"GET /hz HTTP/1.1\r\nHost: x\r\n\r\nPOST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nabcdef")
    responses.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
    (record,) = store.newest_first()
    assert (record.tunnel, record.backend, record.method, record.path, record.status) == \
        ("t", "http://127.0.0.1:9", "POST", "/in", 201)
    assert record.request_body.to_dict()["truncated"] and record.done
