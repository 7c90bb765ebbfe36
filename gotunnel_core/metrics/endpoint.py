"""The daemon's metrics endpoint: Prometheus text over HTTP on 127.0.0.1 only, off by default.

It binds the loopback address (so no LAN peer can reach it) and, as a second fence, answers 403
to any peer whose address is not loopback. The WSGI server runs on its own threads; each scrape
asks the daemon's event loop for a fresh snapshot (`render`), so engines are read where they live.
"""

from __future__ import annotations

import ipaddress
import threading
from socketserver import ThreadingMixIn
from typing import Any, Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from .collector import CONTENT_TYPE

LOOPBACK = "127.0.0.1"


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:  # scrapes are not worth a log line each
        pass


def metrics_app(render: Callable[[], bytes]) -> Callable[..., Iterable[bytes]]:
    """A WSGI app serving `render()` at /metrics (and /), refusing non-loopback peers."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not is_loopback(environ.get("REMOTE_ADDR", "")):
            start_response("403 Forbidden", [("Content-Type", "text/plain")])
            return [b"metrics are served to loopback peers only\n"]
        if environ.get("PATH_INFO") not in ("/metrics", "/"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"see /metrics\n"]
        try:
            body = render()
        except Exception as exc:  # noqa: BLE001 - a failed scrape is a 500, never a dead endpoint
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
            return [f"metrics unavailable: {type(exc).__name__}: {exc}\n".encode()]
        start_response("200 OK", [("Content-Type", CONTENT_TYPE), ("Content-Length", str(len(body)))])
        return [body]

    return app


class MetricsEndpoint:
    """Serves the metrics app on 127.0.0.1:`port` from a background thread until `close`."""

    def __init__(self, port: int, render: Callable[[], bytes]) -> None:
        self.server = make_server(LOOPBACK, port, metrics_app(render), server_class=_Server,
                                  handler_class=_QuietHandler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
                                       name="metrics-endpoint", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
