"""Probe the LAN for names before claiming them (RFC 6762 section 8.1, simplified).

We send three probe queries 250 ms apart (QTYPE ANY for `NAME.local.` and the service
instance names, with our proposed address records in the authority section so responders
answer immediately) on every interface responder, and listen to every record that arrives
meanwhile. Any live record (TTL > 0) for one of those names is a conflict: at probe time
we do not answer for the name ourselves, so whatever answers is somebody else (records
carrying this machine's own addresses are ignored, see probe_names).

Not implemented: simultaneous-probe tie-breaking (section 8.2). Two hosts probing the
same name in the same 750 ms window may both win; the later announcement then flushes the
earlier one's records in caches, which is what the user sees as "name flaps".
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Iterable, Sequence

from zeroconf import DNSAddress, DNSOutgoing, DNSQuestion, DNSService, RecordUpdateListener, Zeroconf
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

    def __init__(self, watched: dict[str, str], own_addresses: frozenset[str]) -> None:
        self.watched = watched  # lowercase fully qualified record name -> base name
        self.own_addresses = own_addresses
        self.host_of = {base: host_name(base).lower() for base in watched.values()}
        self.hits: dict[str, str] = {}
        self.host_hits: set[str] = set()
        self.changed = asyncio.Event()

    def async_update_records(self, zc: Zeroconf, now: float, records: list) -> None:  # type: ignore[override]
        for update in records:
            record = update.new
            if record.ttl == 0:  # a goodbye is not a claim
                continue
            base = self.watched.get(record.key)
            kind = _CONFLICT_TYPES.get(record.type)
            if base is None or kind is None:
                continue
            if base in self.hits and (base in self.host_hits or not isinstance(record, DNSAddress)):
                continue  # keep the first description, but prefer naming the host record
            detail = f"{kind} {record.name}"
            if isinstance(record, DNSAddress):
                try:
                    addr = str(ipaddress.ip_address(record.address))
                except ValueError:
                    continue
                if addr in self.own_addresses:
                    continue  # our own (late) answer, e.g. just after a withdraw
                detail += f" -> {addr}"
            elif isinstance(record, DNSService):
                if record.server_key == self.host_of[base]:
                    # points at NAME.local: a conflict only if some other host answers
                    # for NAME.local itself, which the address check above catches
                    continue
                detail += f" -> {record.server}:{record.port}"
            else:
                continue  # a TXT says nothing about who owns the name; its SRV does
            self.hits[base] = f"another host answers {detail}"
            if isinstance(record, DNSAddress):
                self.host_hits.add(base)
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
    own_addresses: frozenset[str] = frozenset(),
    count: int = PROBE_COUNT,
    interval: float = PROBE_INTERVAL,
) -> dict[str, str]:
    """Probe `bases` on each (zeroconf instance, its addresses); return {base: why taken}.

    Taken means: some host answers `NAME.local.` with an address that is not in
    `own_addresses` (all addresses of this machine), or answers a service instance name
    with an SRV record pointing at another host. Our own records are ignored because
    zeroconf can still send an answer it queued before a withdraw.

    Takes about count * interval seconds (0.75 s by default), less when every name is
    found taken early.
    """
    if not responders or not bases:
        return {}
    watched = {name.lower(): base for base in bases for name in _names_for(base)}
    listener = _ProbeListener(watched, own_addresses)
    for zc, _ in responders:
        zc.async_add_listener(listener, None)
    try:
        for _ in range(count):
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
