"""HAR 1.2 (http://www.softwareishard.com/blog/har-12-spec/) export of recorded requests."""

from __future__ import annotations

import datetime
from typing import Any, Iterable
from urllib.parse import parse_qsl, urlsplit

from .. import __version__
from .records import Body, Record, mask_headers


def _content_type(headers: list[list[str]]) -> str:
    return next((v for k, v in headers if k.lower() == "content-type"), "")


def _content(body: Body, mime: str) -> dict[str, Any]:
    shown = body.to_dict()
    content: dict[str, Any] = {"size": body.size, "mimeType": mime, "text": shown["text"]}
    if shown["encoding"] == "base64":
        content["encoding"] = "base64"
    if body.truncated:
        content["comment"] = f"cut at {len(body.data)} of {body.size} bytes (inspect_body_limit)"
    return content


def _ms(value: float | None) -> float:
    return -1 if value is None else max(0.0, round(value, 3))


def entry(record: Record, reveal: bool) -> dict[str, Any]:
    """One HAR entry; header values of secrets masked unless `reveal`."""
    request_headers = mask_headers(record.request_headers, reveal)
    response_headers = mask_headers(record.response_headers, reveal)
    host = record.header("host") or record.backend.split("://", 1)[-1]
    scheme = (record.header("x-forwarded-proto") or "http").split(",")[0].strip()
    url = f"{scheme}://{host}{record.path}"
    detail = record.detail(reveal)
    timings = detail["timings"]
    sent, first, total = timings["request_sent_ms"], timings["first_byte_ms"], timings["total_ms"]
    version = f"HTTP/{record.http_version}"
    request: dict[str, Any] = {
        "method": record.method, "url": url, "httpVersion": version, "cookies": [],
        "headers": [{"name": k, "value": v} for k, v in request_headers],
        "queryString": [{"name": k, "value": v} for k, v in parse_qsl(urlsplit(record.path).query, keep_blank_values=True)],
        "headersSize": -1, "bodySize": record.request_body.size,
    }
    if record.request_body.size:
        post = _content(record.request_body, _content_type(request_headers))
        request["postData"] = {"mimeType": post["mimeType"], "text": post["text"],
                               **({"comment": post["comment"]} if "comment" in post else {})}
    return {
        "startedDateTime": datetime.datetime.fromtimestamp(record.started_at, datetime.timezone.utc).isoformat(),
        "time": _ms(total),
        "request": request,
        "response": {
            "status": record.status or 0, "statusText": "", "httpVersion": version, "cookies": [],
            "headers": [{"name": k, "value": v} for k, v in response_headers],
            "content": _content(record.response_body, _content_type(response_headers)),
            "redirectURL": next((v for k, v in response_headers if k.lower() == "location"), ""),
            "headersSize": -1, "bodySize": record.response_body.size,
            **({"_error": record.error} if record.error else {}),
        },
        "cache": {},
        "timings": {
            "send": _ms(sent), "wait": _ms(None if first is None or sent is None else first - sent),
            "receive": _ms(None if total is None or first is None else total - first),
        },
        "comment": f"gotunnel record {record.id} (tunnel {record.tunnel})",
    }


def har(records: Iterable[Record], reveal: bool = False) -> dict[str, Any]:
    """A HAR log of `records`, oldest first as HAR viewers expect."""
    ordered = sorted(records, key=lambda r: r.id)
    return {"log": {"version": "1.2", "creator": {"name": "gotunnel", "version": __version__},
                    "entries": [entry(r, reveal) for r in ordered]}}
