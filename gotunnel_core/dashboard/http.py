"""A deliberately small HTTP/1.1 server core for the dashboard: one request per connection.

asyncio streams and httptools (both dependencies already; aiohttp is not): the dashboard serves
a handful of local requests, so every response closes its connection and no keep-alive, pipelining
or chunked request bodies are needed. Heads over 64 KiB and bodies over 1 MiB are refused.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httptools

MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024
READ_TIMEOUT = 30.0

REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 409: "Conflict", 413: "Content Too Large", 421: "Misdirected Request",
           500: "Internal Server Error", 502: "Bad Gateway"}
SECURITY_HEADERS = (
    ("cache-control", "no-store"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("content-security-policy", "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                                "script-src 'self'; connect-src 'self'; frame-ancestors 'none'"),
)


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Request:
    method: str = ""
    target: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    complete: bool = False
    head_complete: bool = False

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(urlsplit(self.target).query).items()}

    def json(self) -> Any:
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            raise BadRequest(400, "the request body is not JSON") from None

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self.target += url.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.head_complete = True

    def on_body(self, body: bytes) -> None:
        if len(self.body) + len(body) > MAX_BODY:
            raise BadRequest(413, "request body over 1 MiB")
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


async def read_request(reader: asyncio.StreamReader) -> Request:
    """One request from the connection, or BadRequest."""
    request = Request()
    parser = httptools.HttpRequestParser(request)
    seen = 0
    while not request.complete:
        data = await asyncio.wait_for(reader.read(65536), READ_TIMEOUT)
        if not data:
            raise BadRequest(400, "connection closed mid-request")
        seen += len(data)
        try:
            parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            raise cause if isinstance(cause, BadRequest) else BadRequest(400, "malformed request") from None
        except httptools.HttpParserUpgrade:
            raise BadRequest(400, "upgrades are not served here") from None
        except httptools.HttpParserError:
            raise BadRequest(400, "malformed request") from None
        if not request.head_complete and seen > MAX_HEAD:
            raise BadRequest(400, "request head over 64 KiB")
        request.method = parser.get_method().decode("ascii", "replace")
    return request


def response_head(status: int, content_type: str, length: int | None, extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}", f"content-type: {content_type}"]
    if length is not None:
        lines.append(f"content-length: {length}")
    lines += [f"{k}: {v}" for k, v in (*SECURITY_HEADERS, *extra)]
    lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()

    def encode(self, head_only: bool = False) -> bytes:
        head = response_head(self.status, self.content_type, len(self.body), self.headers)
        return head if head_only else head + self.body


def json_response(data: Any, status: int = 200, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status, (json.dumps(data, indent=1, default=str) + "\n").encode(), "application/json", headers)


def error_response(status: int, message: str) -> Response:
    return json_response({"error": message}, status)
