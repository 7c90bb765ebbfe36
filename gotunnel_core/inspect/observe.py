"""Turn the two byte streams of an HTTP/1.1 connection into records, without touching the bytes.

`RequestObserver` parses what the client sends, `ResponseObserver` what the backend answers
(httptools, the llhttp parser the builtin engine uses too); responses are paired with requests in
order, as HTTP/1.1 requires. A stream the parser cannot follow (HTTP/2 prior knowledge, a protocol
after an upgrade, malformed bytes) stops being recorded and is still forwarded unchanged.
"""

from __future__ import annotations

import collections
import time
from typing import Callable

import httptools

from .records import Record, RecordStore

#: Decides from (method, path) that a request is not recorded (the engine's health checks).
SkipRule = Callable[[str, str], bool]


class RequestObserver:
    """Records each request a client sends on one connection; `pending` feeds the response side."""

    def __init__(self, store: RecordStore, tunnel: str, backend: str, skip: SkipRule | None = None,
                 replay_of: int | None = None) -> None:
        self.store = store
        self.tunnel = tunnel
        self.backend = backend
        self.skip = skip
        self.replay_of = replay_of
        #: Requests awaiting their response, in order; None for one that is not recorded.
        self.pending: collections.deque[Record | None] = collections.deque()
        #: The latest request recorded here (a long keep-alive connection must not hold them all).
        self.last: Record | None = None
        self.alive = True
        self._parser = httptools.HttpRequestParser(self)
        self._record: Record | None = None
        self._url = bytearray()
        self._headers: list[tuple[str, str]] = []
        self._t_start = 0.0

    def feed(self, data: bytes) -> None:
        if not self.alive:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.alive = False  # what follows is another protocol (websocket): forwarded, not parsed
        except httptools.HttpParserError as exc:
            self.alive = False
            if self._record is not None and self._record.status is None:
                self._record.error = f"request not understood: {exc}"

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._t_start = time.monotonic()
        self._url = bytearray()
        self._headers = []
        self._record = None

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        method = self._parser.get_method().decode("ascii", "replace")
        path = self._url.decode("latin-1")
        if self.skip is not None and self.skip(method, path):
            self.pending.append(None)
            return
        record = self.store.new(self.tunnel, self.backend, self.replay_of)
        record.t_start = self._t_start
        record.method, record.path = method, path
        record.http_version = self._parser.get_http_version()
        record.request_headers = self._headers
        self._record = record
        self.last = record
        self.pending.append(record)
        self.store.publish(record)

    def on_body(self, body: bytes) -> None:
        if self._record is not None:
            self._record.request_body.add(body)

    def on_message_complete(self) -> None:
        if self._record is not None:
            self._record.t_request_done = time.monotonic()


class ResponseObserver:
    """Completes the records of `requests.pending` with the responses the backend sends, in order."""

    def __init__(self, store: RecordStore, requests: RequestObserver) -> None:
        self.store = store
        self.requests = requests
        self.alive = True
        self._parser = httptools.HttpResponseParser(self)
        self._record: Record | None = None
        self._headers: list[tuple[str, str]] = []
        self._fresh_parser = False

    def feed(self, data: bytes) -> None:
        if not self.alive:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.alive = False
        except httptools.HttpParserError as exc:
            self.alive = False
            if self._record is not None and not self._record.done:
                self._record.error = f"response not understood: {exc}"
                self._record.t_done = time.monotonic()
                self.store.publish(self._record)
        if self._fresh_parser:
            # A response to HEAD has a head only, whatever its Content-Length says; the parser
            # cannot know that, so the next response starts on a new one.
            self._fresh_parser = False
            self._parser = httptools.HttpResponseParser(self)

    def close(self, why: str = "the connection closed before the response") -> None:
        """The connection ended: finish what was under way (a close-delimited body ends here)."""
        now = time.monotonic()
        if self._record is not None and not self._record.done:
            if self._record.status is None:
                self._record.error = why
            self._record.t_done = now
            self.store.publish(self._record)
        for record in self.requests.pending:
            if record is not None and not record.done:
                record.error, record.t_done = why, now
                self.store.publish(record)
        self.requests.pending.clear()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._headers = []
        pending = self.requests.pending
        self._record = pending.popleft() if pending else None

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        record = self._record
        if 100 <= status < 200 and status != 101:
            self.requests.pending.appendleft(record)  # interim (100 Continue): the final one follows
            self._record = None
            return
        if record is None:
            return
        record.status = status
        record.response_headers = self._headers
        record.t_response_head = time.monotonic()
        if record.method == "HEAD":
            self._finish(record)
            self._fresh_parser = True
        else:
            self.store.publish(record)

    def on_body(self, body: bytes) -> None:
        if self._record is not None:
            self._record.response_body.add(body)

    def on_message_complete(self) -> None:
        if self._record is not None and not self._record.done:
            self._finish(self._record)
        self._record = None

    def _finish(self, record: Record) -> None:
        record.t_done = time.monotonic()
        self.store.publish(record)
