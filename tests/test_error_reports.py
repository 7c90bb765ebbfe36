"""Errors to Sentry (issue 15): off without a DSN (no client is created), and with one, reports
reach a real HTTP receiver without request data."""

from __future__ import annotations

import gzip
import json
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

sentry_sdk = pytest.importorskip("sentry_sdk", reason="the [sentry] extra is not installed")

from gotunnel_core import error_reports  # noqa: E402
from gotunnel_core.testing import Gotunnel  # noqa: E402


def _drop_client() -> None:
    client = sentry_sdk.get_client()
    if client.is_active():
        client.close()
    sentry_sdk.get_global_scope().set_client(None)


@pytest.fixture
def no_client() -> Iterator[None]:
    _drop_client()  # whatever a previous test did: back to no client
    yield
    _drop_client()


def test_no_client_is_created_without_a_dsn(no_client: None, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(sentry_sdk, "init", lambda *a, **k: calls.append((a, k)))
    monkeypatch.setenv("SENTRY_DSN", "http://public@127.0.0.1:9/1")  # the SDK's own variable is not enough
    assert error_reports.configure({"sentry_dsn": None}) is False
    assert error_reports.configure({}) is False
    assert calls == []
    assert not sentry_sdk.get_client().is_active()
    error_reports.capture(RuntimeError("nothing is sent"))  # a no-op without a client


def test_the_daemon_creates_no_client_by_default(gotunnel: Gotunnel) -> None:
    settings = gotunnel.json("config", "show")["settings"]
    assert settings["sentry_dsn"] == {"value": None, "source": "default", "env": "GOTUNNEL_SENTRY_DSN"}
    masked = json.loads(gotunnel("config", "show", "--json", check=True,
                                 extra_env={"GOTUNNEL_SENTRY_DSN": "http://secret@host/1"}).out)
    assert masked["settings"]["sentry_dsn"]["value"] == "<hidden>"  # a DSN is a credential


class _Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.bodies: list[bytes] = []


class _Handler(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:  # noqa: N802
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        encoding = self.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            raw = gzip.decompress(raw)
        elif encoding == "deflate":
            raw = zlib.decompress(raw)
        elif encoding == "br":
            import brotli  # type: ignore[import-not-found]

            raw = brotli.decompress(raw)
        self.server.bodies.append(raw)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


#: What a request could carry into a report; none of it may reach Sentry. (Kept away from the
#: raising line: reports do carry a few lines of gotunnel's own source around each frame.)
LEAKS = (b"s3cr3t-from-a-browser", b"hunter2", b"session=abc", b"token=abc", b"192.168.1.20")


def _fill_with_request_data(scope: Any) -> None:
    """What an integration would attach to an event: the request and the user's address."""
    scope.add_event_processor(lambda event, hint: {**event, "request": {
        "url": "https://app.localhost/private?token=abc", "headers": {"Authorization": "Bearer s3cr3t-from-a-browser"},
        "cookies": "session=abc", "data": "password=hunter2"}})
    scope.set_user({"ip_address": "192.168.1.20"})


def test_reports_carry_no_request_data(no_client: None) -> None:
    receiver = _Receiver()
    thread = threading.Thread(target=receiver.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        assert error_reports.configure({"sentry_dsn": f"http://public@127.0.0.1:{receiver.server_address[1]}/1"})
        assert sentry_sdk.get_client().is_active()
        with sentry_sdk.new_scope() as scope:
            _fill_with_request_data(scope)
            try:
                local_secret = LEAKS[0].decode()  # noqa: F841 - must not travel as a frame variable
                raise RuntimeError("engine exploded")
            except RuntimeError as exc:
                error_reports.capture(exc)
        sentry_sdk.flush(timeout=10)
        body = b"".join(receiver.bodies)
        assert b"engine exploded" in body  # the report arrived
        for leak in LEAKS:
            assert leak not in body, leak
        events = [json.loads(line) for line in body.splitlines() if line.startswith(b"{") and b'"exception"' in line]
        assert events and all("request" not in e and "user" not in e for e in events)
    finally:
        receiver.shutdown()
        receiver.server_close()
