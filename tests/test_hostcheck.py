"""Recognising a backend's unknown-Host refusal (`gotunnel_core.hostcheck`). Vite is tested for real
in tests/test_run_vite.py; Django's and Rails' pages (not installed here) are replayed below from
their development-mode refusal pages, by a real HTTP server that checks the Host it receives."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from gotunnel_core.hostcheck import check_tunnel, recognise
from gotunnel_core.models import Listen, Tunnel

DJANGO = (400, b"<title>DisallowedHost at /</title> ... Invalid HTTP_HOST header: 'app.local:8443'. "
               b"You may need to add 'app.local' to ALLOWED_HOSTS.")
RAILS = (403, b"<h1>Blocked hosts: app.local</h1><p>To allow requests to these hosts, make sure they are valid "
              b"hostnames (containing only numbers, letters, dashes and dots), then add the following to your "
              b"environment configuration: config.hosts &lt;&lt; \"app.local\"</p>")
VITE = (403, b'Blocked request. This host ("app.local") is not allowed.\n'
             b"To allow this host, add \"app.local\" to `server.allowedHosts` in vite.config.js.")


@pytest.mark.parametrize("answer, framework", [(DJANGO, "Django"), (RAILS, "Rails"), (VITE, "Vite")])
def test_refusal_pages_are_recognised(answer: tuple[int, bytes], framework: str) -> None:
    known = recognise(*answer)
    assert known is not None and known[0] == framework and known[1]


@pytest.mark.parametrize("answer", [(200, VITE[1]), (404, b"Not Found"), (400, b"Bad Request (400)"),
                                    (403, b"Forbidden")])
def test_other_answers_are_not_blamed_on_a_framework(answer: tuple[int, bytes]) -> None:
    assert recognise(*answer) is None


@pytest.fixture
def picky_backend() -> Iterator[int]:
    """Answers Django's refusal for any Host but 127.0.0.1:PORT, like ALLOWED_HOSTS = ['127.0.0.1']."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            allowed = self.headers.get("Host") == f"127.0.0.1:{self.server.server_address[1]}"
            status, body = (200, b"ok") if allowed else DJANGO
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_check_sends_the_host_the_engine_would_send(picky_backend: int) -> None:
    listen = Listen("127.0.0.1", 8080, 8443)
    raw = {"name": "app", "backends": f"http://127.0.0.1:{picky_backend}"}
    refusals = check_tunnel(Tunnel.from_raw(raw), listen, mdns=True)
    assert [(r.framework, r.host, r.status) for r in refusals] == [
        ("Django", "app.localhost:8443", 400), ("Django", "app.local:8443", 400)]
    assert "ALLOWED_HOSTS" in refusals[0].fix
    assert check_tunnel(Tunnel.from_raw({**raw, "host_header": "backend"}), listen, mdns=True) == []
    assert check_tunnel(Tunnel.from_raw({**raw, "https": False}), Listen("127.0.0.1", 80, 443), mdns=False)[0].host == \
        "app.localhost"


def test_a_backend_that_does_not_answer_is_no_refusal() -> None:
    from gotunnel_core.testing import free_port

    tunnel = Tunnel.from_raw({"name": "app", "backends": f"http://127.0.0.1:{free_port()}"})
    assert check_tunnel(tunnel, Listen(), mdns=False) == []
