"""Recorded HTTP exchanges and the bounded store that keeps them (newest first on the way out)."""

from __future__ import annotations

import asyncio
import base64
import collections
import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

#: Header names whose values are masked unless the caller asks to reveal them.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
MASK = "••••••"


@dataclass
class Body:
    """The first `limit` bytes of a message body, and how long it really was."""

    limit: int
    data: bytearray = field(default_factory=bytearray)
    size: int = 0

    def add(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        if room > 0:
            self.data += chunk[:room]
        self.size += len(chunk)

    @property
    def truncated(self) -> bool:
        return self.size > len(self.data)

    def to_dict(self) -> dict[str, Any]:
        """The body as JSON: text when it decodes as UTF-8, else base64; with size and the cut mark."""
        raw = bytes(self.data)
        try:
            text, encoding = raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(raw).decode("ascii"), "base64"
        return {"size": self.size, "kept": len(raw), "truncated": self.truncated, "encoding": encoding, "text": text}


@dataclass
class Record:
    """One request through an inspected tunnel and its response, as far as they got."""

    id: int
    tunnel: str
    backend: str
    started_at: float
    method: str = ""
    path: str = ""
    http_version: str = "1.1"
    request_headers: list[tuple[str, str]] = field(default_factory=list)
    request_body: Body = field(default_factory=lambda: Body(0))
    status: int | None = None
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    response_body: Body = field(default_factory=lambda: Body(0))
    #: Monotonic marks: request start, request fully sent, response head, response complete.
    t_start: float = field(default_factory=time.monotonic)
    t_request_done: float | None = None
    t_response_head: float | None = None
    t_done: float | None = None
    error: str | None = None
    replay_of: int | None = None

    @property
    def done(self) -> bool:
        return self.t_done is not None

    def _ms(self, mark: float | None) -> float | None:
        return None if mark is None else round((mark - self.t_start) * 1000, 3)

    @property
    def duration_ms(self) -> float | None:
        return self._ms(self.t_done)

    def header(self, name: str, response: bool = False) -> str | None:
        for key, value in self.response_headers if response else self.request_headers:
            if key.lower() == name:
                return value
        return None

    def summary(self) -> dict[str, Any]:
        """The list view's row (`GET /api/requests`)."""
        return {"id": self.id, "tunnel": self.tunnel, "method": self.method, "path": self.path,
                "status": self.status, "started_at": self.started_at, "duration_ms": self.duration_ms,
                "done": self.done, "error": self.error, "replay_of": self.replay_of}

    def detail(self, reveal: bool = False) -> dict[str, Any]:
        """Everything recorded (`GET /api/requests/ID`); secret header values masked unless `reveal`."""
        return {
            **self.summary(),
            "backend": self.backend,
            "http_version": self.http_version,
            "request": {"headers": mask_headers(self.request_headers, reveal), "body": self.request_body.to_dict()},
            "response": {"headers": mask_headers(self.response_headers, reveal), "body": self.response_body.to_dict()},
            "timings": {"request_sent_ms": self._ms(self.t_request_done),
                        "first_byte_ms": self._ms(self.t_response_head), "total_ms": self.duration_ms},
            "masked": not reveal and any(k.lower() in SECRET_HEADERS for k, _ in
                                         itertools.chain(self.request_headers, self.response_headers)),
        }


def mask_headers(headers: Iterable[tuple[str, str]], reveal: bool) -> list[list[str]]:
    return [[k, v if reveal or k.lower() not in SECRET_HEADERS else MASK] for k, v in headers]


class RecordStore:
    """The last `max_requests` records (a ring buffer) and live subscribers to new and finished ones."""

    def __init__(self, max_requests: int, body_limit: int) -> None:
        self.body_limit = body_limit
        self._records: collections.OrderedDict[int, Record] = collections.OrderedDict()
        self._max = max_requests
        self._ids = itertools.count(1)
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()

    def new(self, tunnel: str, backend: str, replay_of: int | None = None) -> Record:
        """Start a record (the oldest one goes when the buffer is full)."""
        record = Record(next(self._ids), tunnel, backend, time.time(), replay_of=replay_of,
                        request_body=Body(self.body_limit), response_body=Body(self.body_limit))
        self._records[record.id] = record
        while len(self._records) > self._max:
            self._records.popitem(last=False)
        return record

    def publish(self, record: Record) -> None:
        """Tell live subscribers (the page's SSE stream) that `record` appeared or changed."""
        if record.id not in self._records:
            return
        event = record.summary()
        for queue in list(self._subscribers):
            if queue.full():  # a stalled reader loses events, never the daemon's memory
                continue
            queue.put_nowait(event)

    def get(self, record_id: int) -> Record | None:
        return self._records.get(record_id)

    def __len__(self) -> int:
        return len(self._records)

    def newest_first(self, tunnel: str | None = None, method: str | None = None, status: str | None = None,
                     path: str | None = None) -> Iterator[Record]:
        """Records, newest first, filtered by tunnel, method, status (`404` or a class `4xx`) and path substring."""
        for record in reversed(list(self._records.values())):
            if tunnel and record.tunnel != tunnel:
                continue
            if method and record.method.upper() != method.upper():
                continue
            if status and not _status_matches(record.status, status):
                continue
            if path and path not in record.path:
                continue
            yield record

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=256)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers.discard(queue)


def _status_matches(status: int | None, wanted: str) -> bool:
    if status is None:
        return False
    wanted = wanted.strip().lower()
    if len(wanted) == 3 and wanted.endswith("xx") and wanted[0].isdigit():
        return status // 100 == int(wanted[0])
    return str(status) == wanted
