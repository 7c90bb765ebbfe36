"""One zeroconf instance bound to one interface, answering with that interface's addresses.

python-zeroconf answers A/AAAA queries for a host name from the ServiceInfos registered
with that server name, and sends every answer out of all its sockets. A single instance
bound to several interfaces would therefore announce eth0's address on wlan0 too. So we
run one instance per interface, bound (`interfaces=[...]`) to a single IPv4 address of it
and/or its IPv6 index, and its ServiceInfos carry only that interface's addresses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import Any

from zeroconf import DNSAddress, DNSOutgoing, IPVersion, ServiceInfo
from zeroconf.asyncio import AsyncZeroconf
from zeroconf.const import _CLASS_IN, _CLASS_UNIQUE, _FLAGS_AA, _FLAGS_QR_RESPONSE, _TYPE_A, _TYPE_AAAA

from .interfaces import SelectedInterface
from .naming import HTTP_SERVICE, HTTPS_SERVICE, host_name, instance_name

log = logging.getLogger(__name__)

HOST_TTL = 120  # RFC 6762 recommendation for records with the host name
OTHER_TTL = 4500

_IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)  # Linux only
_IPV6_MULTICAST_ALL = 29  # Linux >= 4.20


@dataclass(frozen=True)
class Publication:
    """What the user asked to announce for one base name."""

    base: str
    http_port: int
    https_port: int | None
    path: str = "/"


def _bind_key(iface: SelectedInterface) -> tuple[str | None, int | None]:
    """The socket binding an instance needs: one IPv4 address, and the IPv6 index."""
    return (iface.ipv4[0] if iface.ipv4 else None, iface.index if iface.ipv6 else None)


def _restrict_listen_socket(azc: AsyncZeroconf) -> None:
    """Receive only the multicast joined on our own interface.

    By default Linux delivers a group's packets to every socket bound to port 5353 that
    is a member on *any* interface, so the eth0 instance would also hear (and answer,
    on eth0) queries from wlan0. Best effort: older kernels or other OSes keep default.
    """
    sock = getattr(azc.zeroconf.engine, "_listen_socket", None)
    if sock is None:
        return
    for level, opt in ((socket.IPPROTO_IP, _IP_MULTICAST_ALL), (socket.IPPROTO_IPV6, _IPV6_MULTICAST_ALL)):
        try:
            sock.setsockopt(level, opt, 0)
        except OSError:
            pass


class InterfaceResponder:
    """Announces the publications on one interface."""

    def __init__(self, iface: SelectedInterface) -> None:
        self.iface = iface
        self.bind_key = _bind_key(iface)
        v4, v6index = self.bind_key
        bind: list[str | int] = []
        if v4:
            bind.append(v4)
        if v6index:
            bind.append(v6index)
        if not bind:
            raise ValueError(f"interface {iface.name} has no address to announce")
        version = IPVersion.All if (v4 and v6index) else (IPVersion.V4Only if v4 else IPVersion.V6Only)
        self.azc = AsyncZeroconf(interfaces=bind, ip_version=version)  # type: ignore[arg-type]
        _restrict_listen_socket(self.azc)
        self.infos: dict[str, ServiceInfo] = {}  # instance name -> registered info

    @staticmethod
    def bind_key_of(iface: SelectedInterface) -> tuple[str | None, int | None]:
        return _bind_key(iface)

    async def start(self) -> None:
        """Wait until the sockets are attached to the event loop (sending works)."""
        await self.zc.async_wait_for_start()

    @property
    def zc(self) -> Any:  # zeroconf.Zeroconf
        return self.azc.zeroconf

    def _infos_for(self, pub: Publication) -> list[ServiceInfo]:
        infos = []
        services = [(HTTP_SERVICE, pub.http_port)]
        if pub.https_port is not None:
            services.insert(0, (HTTPS_SERVICE, pub.https_port))
        for service, port in services:
            infos.append(
                ServiceInfo(
                    service,
                    instance_name(pub.base, service),
                    port=port,
                    properties={"path": pub.path},
                    server=host_name(pub.base),
                    host_ttl=HOST_TTL,
                    other_ttl=OTHER_TTL,
                    parsed_addresses=list(self.iface.addresses),
                )
            )
        return infos

    @staticmethod
    def _same(a: ServiceInfo, b: ServiceInfo) -> bool:
        return (
            a.port == b.port
            and a.properties == b.properties
            and a.server == b.server
            and sorted(a.parsed_addresses()) == sorted(b.parsed_addresses())
        )

    async def sync(self, pubs: dict[str, Publication]) -> None:
        """Make the registered services match `pubs` (register, update, unregister)."""
        desired = {info.name: info for pub in pubs.values() for info in self._infos_for(pub)}
        pending = []
        # Unregister first so goodbyes for the address records go out once the last
        # service of a host name is gone (zeroconf keeps them while another one uses them).
        for name in [n for n in self.infos if n not in desired]:
            info = self.infos.pop(name)
            pending.append(await self.zc.async_unregister_service(info))
            self._drop_queued_answers({info.key, (info.server or "").lower()} - {""} - self._served_names())
        for name, info in desired.items():
            current = self.infos.get(name)
            if current is None:
                # cooperating_responders=True: skip zeroconf's own probe, the advertiser
                # has probed host and instance names on every interface already.
                pending.append(await self.zc.async_register_service(info, cooperating_responders=True))
            elif not self._same(current, info):
                pending.append(await self.zc.async_update_service(info))
            else:
                continue
            self.infos[name] = info
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    def _served_names(self) -> set[str]:
        names = set()
        for info in self.infos.values():
            names.add(info.key)
            names.add((info.server or "").lower())
        return names

    def _drop_queued_answers(self, names: set[str]) -> None:
        """Forget answers still waiting in zeroconf's multicast aggregation queues.

        zeroconf delays multicast answers by up to 1 s (RFC 6762 rate limiting) and does
        not purge them on unregister, so an answer queued just before a withdraw would go
        out after our goodbyes with the full TTL and bring the record back to life.
        """
        if not names:
            return
        for queue_name in ("out_queue", "out_delay_queue"):
            out = getattr(self.zc, queue_name, None)
            for group in getattr(out, "queue", ()):
                answers = group.answers
                for record in list(answers):
                    if record.key in names:
                        del answers[record]
                        continue
                    extra = answers[record]
                    if extra:
                        answers[record] = {r for r in extra if r.key not in names}

    async def change_addresses(self, iface: SelectedInterface, pubs: dict[str, Publication]) -> None:
        """The interface's addresses changed but our binding still exists: re-announce."""
        removed = set(self.iface.addresses) - set(iface.addresses)
        self.iface = iface
        await self.sync(pubs)
        self.send_address_goodbyes(removed, pubs)

    def send_address_goodbyes(self, addresses: set[str], pubs: dict[str, Publication]) -> None:
        """Tell caches to drop address records we no longer have (TTL 0)."""
        if not addresses or not pubs:
            return
        out = DNSOutgoing(_FLAGS_QR_RESPONSE | _FLAGS_AA)
        for pub in pubs.values():
            for addr in addresses:
                ip = ipaddress.ip_address(addr)
                rtype = _TYPE_A if ip.version == 4 else _TYPE_AAAA
                out.add_answer_at_time(
                    DNSAddress(host_name(pub.base), rtype, _CLASS_IN | _CLASS_UNIQUE, 0, ip.packed), 0  # type: ignore[arg-type]
                )
        self.zc.async_send(out)

    async def close(self, *, goodbye: bool = True) -> None:
        """Stop answering; with goodbye, send TTL-0 records for everything first."""
        if not goodbye:
            # An empty registry makes zeroconf's close send nothing.
            for info in self.infos.values():
                self.zc.registry.async_remove(info)
        self.infos.clear()
        try:
            await self.azc.async_close()
        except Exception:  # noqa: BLE001 - the interface may already be gone
            log.debug("closing mDNS responder on %s failed", self.iface.name, exc_info=True)
