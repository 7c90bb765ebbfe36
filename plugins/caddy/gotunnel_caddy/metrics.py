"""Caddy's per-request record for gotunnel's metrics: its JSON access log, one datagram per request.

Caddy's own Prometheus metrics carry no tunnel (host) label by default and cannot tell the
backend's 502 from its own, so the rendered config sends the access log of both servers to the
daemon's datagram socket (Caddy's `net` log writer, `unixgram/`), and the error route that renders
the 502 page appends `gotunnel_upstream_error` to the record (`log_append`).
"""

from __future__ import annotations

import json

from gotunnel_core.metrics.logstream import AccessRecord

LOGGER = "gotunnel_metrics"
UPSTREAM_ERROR_FIELD = "gotunnel_upstream_error"


def parse_access_record(datagram: bytes) -> AccessRecord | None:
    """One JSON access-log entry -> a record (the host is matched to a tunnel by the stream)."""
    entry = json.loads(datagram)
    if not isinstance(entry, dict) or "status" not in entry:
        return None
    request = entry.get("request") or {}
    return AccessRecord(
        str(request.get("host", "")),
        int(entry["status"]),
        float(entry.get("duration", 0.0)),
        int(entry.get("bytes_read", 0)),
        int(entry.get("size", 0)),
        1 if entry.get(UPSTREAM_ERROR_FIELD) else 0,
    )


def log_config(socket_path: str) -> dict[str, object]:
    """The logger writing the access logs of gotunnel's servers to the daemon's socket."""
    return {
        "writer": {"output": "net", "address": "unixgram/" + socket_path, "soft_start": True},
        "encoder": {"format": "json"},
        "level": "INFO",
        "include": [f"http.log.access.{LOGGER}"],
    }
