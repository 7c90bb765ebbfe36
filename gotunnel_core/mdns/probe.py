"""Probe the LAN for names before claiming them (RFC 6762 section 8.1, simplified).

We send three probe queries 250 ms apart (QTYPE ANY for `NAME.local.` and the service
instance names, with our proposed address records in the authority section so responders
answer immediately) on every interface responder, and listen to every record that arrives
meanwhile. Any live record (TTL > 0) for one of those names is a conflict: at probe time
we do not answer for the name ourselves, so whatever answers is somebody else.

Not implemented: simultaneous-probe tie-breaking (section 8.2). Two hosts probing the
same name in the same 750 ms window may both win; the later announcement then flushes the
earlier one's records in caches, which is what the user sees as "name flaps".
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Iterable, Sequence

from zeroconf import DNSAddress, DNSOutgoing, DNSQuestion, RecordUpdateListener, Zeroconf
from zeroconf.const import (
    _CLASS_IN,
    _CLASS_UNIQUE,
    _FLAGS_QR_QUERY,
    _TYPE_A,
    _TYPE_AAAA,
    _TYPE_ANY,
    _TYPE_SRV,
    _TYPE_TXT,
)

from .naming import HTTP_SERVICE, HTTPS_SERVICE, host_name, instance_name

PROBE_COUNT = 3
PROBE_INTERVAL = 0.25
_CONFLICT_TYPES = {_TYPE_A: "A", _TYPE_AAAA: "AAAA", _TYPE_SRV: "SRV", _TYPE_TXT: "TXT"}


class _ProbeListener(RecordUpdateListener):
    """Collects live records for the probed names, keyed by the base name they belong to."""

    def __init__(self, watched: dict[str, str]) -> None:
        self.watched = watched  # lowercase fully qualified record name -> base name
        self.hits: dict[str, str] = {}
        self.changed = asyncio.Event()

    def async_update_records(self, zc: Zeroconf, now: float, records: list) -> None:  # type: ignore[override]
        for update in records:
            record = update.new
            if record.ttl == 0:  # a goodbye is not a claim
                continue
            base = self.watched.get(record.key)
            kind = _CONFLICT_TYPES.get(record.type)
            if base is None or kind is None or base in self.hits:
                continue
            detail = f"{kind} {record.name}"
            if isinstance(record, DNSAddress):
                try:
                    detail += f" -> {ipaddress.ip_address(record.address)}"
                except ValueError:
                    pass
            self.hits[base] = f"another host answers {detail}"
            self.changed.set()

    def async_update_records_complete(self) -> None:
        pass


def _names_for(base: str) -> list[str]:
    return [host_name(base), instance_name(base, HTTPS_SERVICE), instance_name(base, HTTP_SERVICE)]


def _probe_packet(bases: Iterable[str], addresses: Sequence[str]) -> DNSOutgoing:
    # A multicast (QM) query: unicast replies would reach only one of the sockets sharing
    # port 5353 on this host (SO_REUSEPORT), possibly another interface's responder.
    out = DNSOutgoing(_FLAGS_QR_QUERY, multicast=True)
    for base in bases:
        for name in _names_for(base):
            out.add_question(DNSQuestion(name, _TYPE_ANY, _CLASS_IN))
        for addr in addresses:
            ip = ipaddress.ip_address(addr)
            rtype = _TYPE_A if ip.version == 4 else _TYPE_AAAA
            # add_authorative_answer() is typed for PTRs only (compiled); any record is valid
            # in the authority section, and its presence is what marks the query as a probe.
            out.authorities.append(
                DNSAddress(host_name(base), rtype, _CLASS_IN | _CLASS_UNIQUE, 120, ip.packed)  # type: ignore[arg-type]
            )
    return out


async def probe_names(
    responders: Sequence[tuple[Zeroconf, Sequence[str]]],
    bases: Sequence[str],
    *,
    count: int = PROBE_COUNT,
    interval: float = PROBE_INTERVAL,
) -> dict[str, str]:
    """Probe `bases` on each (zeroconf instance, its addresses); return {base: why taken}.

    Takes about count * interval seconds (0.75 s by default), less when every name is
    found taken early.
    """
    if not responders or not bases:
        return {}
    watched = {name.lower(): base for base in bases for name in _names_for(base)}
    listener = _ProbeListener(watched)
    for zc, _ in responders:
        zc.async_add_listener(listener, None)
    try:
        for i in range(count):
            for zc, addresses in responders:
                zc.async_send(_probe_packet(bases, addresses))
            deadline = time.monotonic() + interval
            while len(listener.hits) < len(bases):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                listener.changed.clear()
                try:
                    await asyncio.wait_for(listener.changed.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            if len(listener.hits) == len(bases):
                break
    finally:
        for zc, _ in responders:
            zc.async_remove_listener(listener)
    return dict(listener.hits)
