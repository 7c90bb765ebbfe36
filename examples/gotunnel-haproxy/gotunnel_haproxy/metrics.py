"""HAProxy's per-request record for gotunnel's metrics: its access log, one datagram per request.

HAProxy's own counters are per backend and server, not per Host, and have no latency histogram,
so the rendered config logs every HTTP request (`log-format` `LOG_FORMAT`, `format raw`: the line
alone, no syslog header) to the daemon's datagram socket (`gotunnel_core.metrics.logstream`).
Fields are `|`-separated; none can hold one (a lower-cased host name, numbers, a termination state).
"""

from __future__ import annotations

from gotunnel_core.metrics.logstream import AccessRecord

#: tag | host (lower case, no port, no final dot) | status | active time ms | bytes from the client
#: | bytes to the client | termination state (first letter S: the server side failed).
LOG_FORMAT = "gotunnel|%[var(txn.gt_host)]|%ST|%Ta|%U|%B|%ts"
_TAG = "gotunnel"


def parse_access_record(datagram: bytes) -> AccessRecord | None:
    """One datagram -> a record; None for anything else (the host is matched to a tunnel by the stream)."""
    fields = datagram.decode("latin-1").strip().split("|")
    if len(fields) != 7 or fields[0] != _TAG or fields[1] in ("", "-"):
        return None
    _, host, status, active_ms, bytes_in, bytes_out, termination = fields
    try:
        record = AccessRecord(host, int(status), max(int(active_ms), 0) / 1000, int(bytes_in), int(bytes_out),
                              1 if termination.startswith("S") else 0)
    except ValueError:  # a request HAProxy ended before it had a status (-1 or empty fields)
        return None
    return record if record.status > 0 else None
