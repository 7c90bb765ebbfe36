"""The dashboard's JSON API through the real CLI, daemon and engine: every endpoint, masking,
filters, replay reaching the backend, HAR, body limits, and the guards (Host, Origin)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gotunnel_core.testing import Gotunnel, wait_for
from gotunnel_core.testing.backends import get
from gotunnel_core.testing.daemon import use_engine

from inspect_helpers import dash, dash_json, require_engine, through

SECRET = "Bearer s3cr3t-token"


def _done(g: Gotunnel, tunnel: str, count: int) -> list[dict[str, Any]]:
    rows = dash_json(g, f"/api/requests?tunnel={tunnel}")["requests"]
    return rows if len(rows) >= count and all(r["done"] for r in rows) else []


def exercise_api(g: Gotunnel, backend: Any) -> None:
    """The same checks on any engine: the inspector sits behind the engine, in the daemon."""
    g("start", "-d", "hooks", "-p", str(backend.port), "--inspect", check=True)
    g("start", "-d", "plain", "-p", str(backend.port), check=True)
    hits = len(backend.hits)

    assert through(g, "hooks", "/first?x=1")[0] == 200
    status, body = through(g, "hooks", "/webhook", "POST", b'{"event": "paid"}',
                           {"Authorization": SECRET, "Cookie": "sid=abc", "Content-Type": "application/json"})
    assert status == 200 and json.loads(body)["body"] == '{"event": "paid"}'
    assert through(g, "plain", "/not-recorded")[0] == 200
    rows = wait_for(lambda: _done(g, "hooks", 2), what="two recorded requests")

    # GET /api/requests: newest first, the documented fields, only the inspected tunnel.
    assert [r["path"] for r in rows] == ["/webhook", "/first?x=1"]
    assert set(rows[0]) >= {"id", "tunnel", "method", "path", "status", "started_at", "duration_ms"}
    assert rows[0]["tunnel"] == "hooks" and rows[0]["method"] == "POST" and rows[0]["status"] == 200
    assert rows[0]["duration_ms"] >= 0 and rows[0]["id"] > rows[1]["id"]
    assert not dash_json(g, "/api/requests?tunnel=plain")["requests"]
    # Filters: method, status (exact and class), path.
    assert [r["path"] for r in dash_json(g, "/api/requests?method=GET")["requests"]] == ["/first?x=1"]
    assert len(dash_json(g, "/api/requests?status=2xx")["requests"]) == 2
    assert not dash_json(g, "/api/requests?status=404")["requests"]
    assert [r["path"] for r in dash_json(g, "/api/requests?path=hook")["requests"]] == ["/webhook"]

    # GET /api/tunnels: both tunnels, which one is inspected, engine state, certificates.
    tunnels = dash_json(g, "/api/tunnels")
    by_name = {t["name"]: t for t in tunnels["tunnels"]}
    assert by_name["hooks"]["inspect"] is True and by_name["plain"]["inspect"] is False
    assert by_name["hooks"]["recorded"] == 2 and by_name["hooks"]["backends"][0]["url"] == backend.url
    assert tunnels["engine"]["running"] is True and tunnels["certificates"]
    # `list --json` keeps showing the real backend, not the relay.
    assert g.json("list")["tunnels"][0]["backends"][0]["url"] == backend.url

    # GET /api/requests/ID: heads and bodies, secrets masked unless ?reveal=1.
    webhook = rows[0]["id"]
    detail = dash_json(g, f"/api/requests/{webhook}")
    headers = dict((k.lower(), v) for k, v in detail["request"]["headers"])
    # (the echo backend repeats the headers in its body: only heads are masked, bodies are as sent)
    assert headers["authorization"] != SECRET and "s3cr3t" not in json.dumps(detail["request"])
    assert headers["cookie"] != "sid=abc" and detail["masked"] is True
    assert detail["request"]["body"]["text"] == '{"event": "paid"}' and not detail["request"]["body"]["truncated"]
    assert json.loads(detail["response"]["body"]["text"])["path"] == "/webhook"
    assert detail["timings"]["total_ms"] >= detail["timings"]["first_byte_ms"] >= 0
    revealed = dash_json(g, f"/api/requests/{webhook}?reveal=1")
    assert dict((k.lower(), v) for k, v in revealed["request"]["headers"])["authorization"] == SECRET
    assert dash_json(g, "/api/requests/999999", expect=404)["error"]

    # POST /api/requests/ID/replay: reaches the backend again, as a new record.
    before = len(backend.hits)
    assert before == hits + 3
    replayed = dash_json(g, f"/api/requests/{webhook}/replay", "POST")
    assert replayed["status"] == 200 and replayed["id"] > webhook and replayed["replay_of"] == webhook
    assert backend.hits[before:] == ["/webhook"]
    again = dash_json(g, f"/api/requests/{replayed['id']}?reveal=1")
    echoed = json.loads(again["response"]["body"]["text"])
    assert echoed["body"] == '{"event": "paid"}' and ["Authorization", SECRET] in echoed["headers"]
    edited = dash_json(g, f"/api/requests/{webhook}/replay", "POST", json.dumps({"path": "/edited", "body": "{}"}).encode())
    assert edited["status"] == 200 and backend.hits[-1] == "/edited"

    # GET /api/requests.har: HAR 1.2 holding the request, masked.
    status, head, data = dash(g, "/api/requests.har?tunnel=hooks")
    har = json.loads(data)
    assert status == 200 and "attachment" in head["content-disposition"]
    assert har["log"]["version"] == "1.2" and har["log"]["creator"]["name"] == "gotunnel"
    entry = next(e for e in har["log"]["entries"] if e["request"]["url"].endswith("/webhook"))
    assert entry["request"]["method"] == "POST" and entry["response"]["status"] == 200
    assert entry["request"]["postData"]["text"] == '{"event": "paid"}'
    assert entry["request"]["url"] == f"http://hooks.localhost:{g.http_port}/webhook"
    assert "s3cr3t" not in json.dumps(entry["request"])
    assert [q for q in har["log"]["entries"][0]["request"]["queryString"]] == [{"name": "x", "value": "1"}]


def test_every_api_endpoint_on_the_builtin_engine(gotunnel: Gotunnel, echo_backend: Any) -> None:
    exercise_api(gotunnel, echo_backend("hooks-backend"))
    # The page and its assets are served from the package.
    status, head, page = dash(gotunnel, "/")
    assert status == 200 and b'id="requests"' in page and "frame-ancestors 'none'" in head["content-security-policy"]
    assert dash(gotunnel, "/app.js")[0] == 200 and dash(gotunnel, "/app.css")[0] == 200
    # `gotunnel dashboard` prints the URL; `engines --json` says how each engine inspects.
    # While the engine serves, that is https://gotunnel.localhost:<https_port>/; the dedicated port too.
    out = gotunnel("dashboard", "--no-open", check=True).out.strip()
    assert out == f"https://gotunnel.localhost:{gotunnel.https_port}/"
    described = gotunnel.json("dashboard")
    assert described["url"] == described["engine_url"] == out
    assert described["dedicated_url"] == f"http://gotunnel.localhost:{gotunnel.dashboard_port}/"
    # The name is the dashboard's: a user's tunnel cannot take it (exit 2, one line, nothing started).
    refused = gotunnel("start", "-d", "gotunnel", "-p", "1")
    assert refused.code == 2 and "reserved" in refused.err and len(refused.err.strip().splitlines()) <= 2
    assert "gotunnel" not in [t["name"] for t in gotunnel.json("list")["tunnels"]]
    engines = gotunnel.json("engines")["engines"]
    modes = {e["name"]: e["inspect"]["mode"] for e in engines}
    assert modes["builtin"] == "native" and all(m == "relay" for n, m in modes.items() if n != "builtin")


def test_inspection_behind_nginx(gotunnel: Gotunnel, echo_backend: Any) -> None:
    require_engine(gotunnel, "nginx")
    use_engine(gotunnel, "nginx")
    exercise_api(gotunnel, echo_backend("nginx-backend"))


def test_guards_refuse_rebinding_cross_site_and_bad_input(gotunnel: Gotunnel, echo_backend: Any) -> None:
    backend = echo_backend()
    gotunnel("start", "-d", "guarded", "-p", str(backend.port), "--inspect", check=True)
    through(gotunnel, "guarded", "/x")
    rid = wait_for(lambda: dash_json(gotunnel, "/api/requests")["requests"], what="a record")[0]["id"]
    port = gotunnel.dashboard_port
    # DNS rebinding: a page at evil.example resolved to 127.0.0.1 sends its own Host.
    for host in ("evil.example", f"evil.example:{port}", "gotunnel.localhost:1", f"guarded.localhost:{port}"):
        status, _, body = dash(gotunnel, "/api/requests", headers={"Host": host})
        assert status == 421 and b"/webhook" not in body, host
    # A cross-site page may not replay (a form POST carries its Origin) nor read.
    hits = len(backend.hits)
    for origin in ("http://evil.example", "null", f"https://gotunnel.localhost:{port}"):
        assert dash(gotunnel, f"/api/requests/{rid}/replay", "POST", headers={"Origin": origin})[0] == 403
    assert len(backend.hits) == hits
    assert dash(gotunnel, f"/api/requests/{rid}/replay", "POST",
                headers={"Origin": f"http://gotunnel.localhost:{port}"})[0] == 200
    # Wrong methods, malformed ids and bodies.
    assert dash(gotunnel, f"/api/requests/{rid}", "POST")[0] == 405
    assert dash(gotunnel, f"/api/requests/{rid}/replay")[0] == 405
    assert dash(gotunnel, "/api/requests/abc")[0] == 404
    assert dash(gotunnel, f"/api/requests/{rid}/replay", "POST", b"[1]")[0] == 400
    assert dash(gotunnel, f"/api/requests/{rid}/replay", "POST", b"{not json")[0] == 400
    assert dash(gotunnel, "/api/requests?limit=0")[0] == 400
    bad = dash_json(gotunnel, f"/api/requests/{rid}/replay", "POST", json.dumps({"path": "no-slash"}).encode(), expect=409)
    assert "no-slash" in bad["error"]


def test_bodies_over_the_limit_are_cut_and_marked(gotunnel: Gotunnel, echo_backend: Any) -> None:
    gotunnel.env["GOTUNNEL_INSPECT_BODY_LIMIT"] = "1000"
    backend = echo_backend()
    gotunnel("start", "-d", "big", "-p", str(backend.port), "--inspect", check=True)
    payload = bytes(range(256)) * 20  # 5120 bytes, binary
    status, body = through(gotunnel, "big", "/upload", "POST", payload, {"Content-Type": "application/octet-stream"})
    assert status == 200 and len(json.loads(body)["body"]) == len(payload)  # the backend got it whole
    rid = wait_for(lambda: _done(gotunnel, "big", 1), what="the record")[0]["id"]
    detail = dash_json(gotunnel, f"/api/requests/{rid}")
    request_body = detail["request"]["body"]
    assert request_body == {**request_body, "size": 5120, "kept": 1000, "truncated": True, "encoding": "base64"}
    response_body = detail["response"]["body"]
    assert response_body["truncated"] is True and response_body["kept"] == 1000 and response_body["size"] == len(body)
    har = json.loads(dash(gotunnel, "/api/requests.har")[2])
    assert "cut at 1000" in har["log"]["entries"][0]["request"]["postData"]["comment"]
    # A cut body cannot be replayed as it was: refused, and nothing reaches the backend.
    hits = len(backend.hits)
    refused = dash_json(gotunnel, f"/api/requests/{rid}/replay", "POST", expect=409)
    assert "inspect_body_limit" in refused["error"] and len(backend.hits) == hits


def test_ring_buffer_keeps_the_newest(gotunnel: Gotunnel, echo_backend: Any) -> None:
    gotunnel.env["GOTUNNEL_INSPECT_MAX_REQUESTS"] = "5"
    backend = echo_backend()
    gotunnel("start", "-d", "ring", "-p", str(backend.port), "--inspect", check=True)
    for n in range(12):
        assert through(gotunnel, "ring", f"/n{n}")[0] == 200
    rows = wait_for(lambda: _done(gotunnel, "ring", 5), what="records")
    assert [r["path"] for r in rows] == [f"/n{n}" for n in range(11, 6, -1)]
    assert dash(gotunnel, f"/api/requests/{rows[-1]['id'] - 1}")[0] == 404


def test_inspect_flag_and_config_validation(gotunnel: Gotunnel, echo_backend: Any) -> None:
    bad = gotunnel("start", "--inspect")
    assert bad.code == 2 and "--inspect need --domain" in bad.err
    bad = gotunnel("start", "-d", "x", "-p", "3000", extra_env={"GOTUNNEL_INSPECT_BODY_LIMIT": "-1"})
    assert bad.code == 2 and "'-1'" in bad.err
    config = gotunnel.state_dir.parent / "gotunnel.toml"
    config.write_text('[[tunnels]]\nname = "cfg"\nbackends = ["http://127.0.0.1:1"]\ninspect = "yes"\n')
    bad = gotunnel("start")
    assert bad.code == 2 and "inspect" in bad.err and "'yes'" in bad.err
    backend = echo_backend()
    config.write_text(f'[[tunnels]]\nname = "cfg"\nbackends = ["{backend.url}"]\ninspect = true\n')
    gotunnel("start", check=True)
    through(gotunnel, "cfg", "/from-config")
    assert wait_for(lambda: _done(gotunnel, "cfg", 1), what="record")[0]["path"] == "/from-config"


@pytest.mark.parametrize("stop_first", [True, False])
def test_stopping_inspection_removes_the_relay(gotunnel: Gotunnel, echo_backend: Any, stop_first: bool) -> None:
    backend = echo_backend()
    gotunnel("start", "-d", "toggle", "-p", str(backend.port), "--inspect", check=True)
    through(gotunnel, "toggle", "/one")
    wait_for(lambda: _done(gotunnel, "toggle", 1), what="record")
    if stop_first:
        gotunnel("stop", "toggle", check=True)
    gotunnel("start", "-d", "toggle", "-p", str(backend.port), check=True)  # same tunnel, no --inspect
    assert through(gotunnel, "toggle", "/two")[0] == 200
    assert backend.hits[-1] == "/two"
    assert [r["path"] for r in dash_json(gotunnel, "/api/requests")["requests"]] == ["/one"]


def test_busy_dashboard_port_leaves_tunnels_serving_and_says_why(gotunnel: Gotunnel, echo_backend: Any) -> None:
    import socket

    backend = echo_backend()
    with socket.create_server(("127.0.0.1", gotunnel.dashboard_port)):
        gotunnel("start", "-d", "busy", "-p", str(backend.port), "--inspect", check=True)
        assert through(gotunnel, "busy", "/still-served")[0] == 200
        # The engine still serves the dashboard; the command says why its own port does not.
        shown = gotunnel("dashboard", "--no-open", check=True)
        assert shown.out.strip() == f"https://gotunnel.localhost:{gotunnel.https_port}/"
        assert f"127.0.0.1:{gotunnel.dashboard_port}" in shown.err
        assert gotunnel.json("dashboard")["dedicated_url"] is None
        ca = gotunnel("cert", "ca", "--path", check=True).out.strip()
        status, _, body = get(gotunnel.https_port, f"gotunnel.localhost:{gotunnel.https_port}", "/api/tunnels", ca=ca)
        assert status == 200 and [t["name"] for t in json.loads(body)["tunnels"]] == ["busy"]


def test_events_stream_pushes_new_requests(gotunnel: Gotunnel, echo_backend: Any) -> None:
    import socket

    backend = echo_backend()
    gotunnel("start", "-d", "live", "-p", str(backend.port), "--inspect", check=True)
    with socket.create_connection(("127.0.0.1", gotunnel.dashboard_port), timeout=15) as sock:
        sock.sendall(f"GET /api/events HTTP/1.1\r\nHost: gotunnel.localhost:{gotunnel.dashboard_port}\r\n\r\n".encode())
        received = b""
        while b"retry:" not in received:
            received += sock.recv(4096)
        assert received.startswith(b"HTTP/1.1 200 ") and b"content-type: text/event-stream" in received
        assert through(gotunnel, "live", "/pushed")[0] == 200
        events: list[dict[str, Any]] = []
        while not any(e["path"] == "/pushed" and e["done"] for e in events):
            chunk = sock.recv(4096)
            assert chunk, "the stream ended"
            received += chunk
            events = [json.loads(line[6:]) for line in received.decode().splitlines() if line.startswith("data: ")]
        assert events[0]["tunnel"] == "live" and events[-1]["status"] == 200


def test_dashboard_off_means_no_route_either(gotunnel: Gotunnel, echo_backend: Any) -> None:
    gotunnel.env["GOTUNNEL_DASHBOARD"] = "0"
    backend = echo_backend()
    gotunnel("start", "-d", "plain", "-p", str(backend.port), check=True)
    status, _, body = get(gotunnel.http_port, f"gotunnel.localhost:{gotunnel.http_port}", "/api/tunnels")
    assert status == 404 and b'"tunnels"' not in body  # the engine's 404: no such route
    refused = gotunnel("dashboard", "--no-open")
    assert refused.code == 1 and "serves no dashboard" in refused.err
