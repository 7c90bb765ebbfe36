"""nginx's per-request record for gotunnel's metrics: a syslog datagram per request.

nginx-light has no per-host counters (stub_status is server-wide), so each tunnel's server block
sets `$gt_tunnel` and the http block logs every request with `LOG_FORMAT` over syslog to the
daemon's datagram socket (see `gotunnel_core.metrics.logstream`). Fields are `|`-separated:
none of them can contain one (a tunnel name, numbers, addresses and times).
"""

from __future__ import annotations

import re

from gotunnel_core.metrics.logstream import AccessRecord

LOG_FORMAT = "$gt_tunnel|$status|$request_time|$request_length|$bytes_sent|$upstream_addr|$upstream_header_time"
#: nginx's syslog header ends with the tag and ": ".
_TAG = b"gotunnel: "
_REDIRECTS = re.compile(r"\s:\s")


def parse_access_record(datagram: bytes) -> AccessRecord | None:
    """One datagram -> a record; None for anything else (e.g. a request on no tunnel)."""
    _, found, payload = datagram.partition(_TAG)
    if not found:
        return None
    fields = payload.decode("latin-1").rstrip("\n").split("|")
    if len(fields) != 7 or fields[0] in ("", "-"):
        return None
    tunnel, status, seconds, length, sent, upstream, header_times = fields
    errors = upstream_failures(upstream, header_times)
    return AccessRecord(tunnel, int(status), float(seconds), int(length), int(sent), errors)


def upstream_failures(addresses: str, header_times: str) -> int:
    """Attempts that reached for a backend and got no response head (refused, reset, timed out).

    Both variables hold one entry per attempt (", " between attempts of one location, " : " across
    internal redirects such as the error page); "-" as an address is a location with no upstream.
    """
    failures = 0
    for addr_group, time_group in zip(_REDIRECTS.split(addresses), _REDIRECTS.split(header_times)):
        for addr, seconds in zip(addr_group.split(","), time_group.split(",")):
            if addr.strip() not in ("", "-") and seconds.strip() == "-":
                failures += 1
    return failures
