"""Choose the network interfaces that mDNS announcements go out on.

`take_snapshot()` reads the live interface table once; `select_interfaces()` is a pure
function over such a snapshot, so the policy is unit-testable without a network.

Default policy (no user override): an interface is chosen when it is up, has the
IFF_MULTICAST flag, is not loopback, is not a known container/VM/VPN interface by name,
and carries at least one private (RFC 1918), link-local or ULA (fc00::/7) address.

Virtual interfaces (those under /sys/devices/virtual/net) are skipped by default, except
bridges, bonds, VLANs, teams and macvlans that are not container bridges by name: a host
bridge such as `br0` or a bond often *is* the machine's LAN connection, while veths,
dummies, tunnels etc. only lead to containers or nowhere. Container bridges (docker*,
br-*, virbr*, cni*, ...) are excluded by name whatever their kind.

A user override (interface names or addresses) selects exactly those interfaces and skips
every filter except "exists" (so a public-only or VPN interface can be chosen on
purpose); one that is down or has no address is returned without addresses and stays
inactive until it comes up.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError

IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_MULTICAST = 0x1000

# Interfaces that lead to containers, VMs or VPN tunnels: never announced on by default.
_EXCLUDED_NAME = re.compile(
    r"^(lo$|docker|br-|virbr|veth|cni|flannel|cali|vmnet|vboxnet|tun|tap|wg|utun|zt|tailscale|"
    r"lxcbr|lxdbr|podman|weave|kube|vxlan|genev|ifb|dummy|sit|gre|ip6tnl|nlmon)"
)
# Virtual device types that commonly carry a host's LAN address (from the sysfs uevent DEVTYPE).
_LAN_CAPABLE_VIRTUAL_DEVTYPES = frozenset({"bridge", "bond", "vlan", "team", "macvlan", "macvtap"})

_ULA = ipaddress.ip_network("fc00::/7")


@dataclass(frozen=True)
class InterfaceInfo:
    """One interface as seen in a snapshot. `flags` are the kernel IFF_* flags."""

    name: str
    flags: int
    addresses: tuple[str, ...] = ()
    index: int = 0
    virtual: bool = False
    devtype: str | None = None

    @property
    def is_up(self) -> bool:
        return bool(self.flags & IFF_UP)


@dataclass(frozen=True)
class SelectedInterface:
    """An interface to announce on, with the addresses announcements on it carry."""

    name: str
    index: int
    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()
    explicit: bool = False

    @property
    def addresses(self) -> tuple[str, ...]:
        return self.ipv4 + self.ipv6


Snapshot = dict[str, InterfaceInfo]


def _ip(addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return None


def is_local_scope(addr: str) -> bool:
    """True for RFC 1918, link-local (v4/v6) and ULA addresses: reachable on the LAN only."""
    ip = _ip(addr)
    if ip is None or ip.is_loopback:
        return False
    if ip.version == 4:
        return ip in ipaddress.ip_network("10.0.0.0/8") or ip in ipaddress.ip_network(
            "172.16.0.0/12"
        ) or ip in ipaddress.ip_network("192.168.0.0/16") or ip.is_link_local
    return ip.is_link_local or ip in _ULA


def _excluded_by_default(info: InterfaceInfo) -> bool:
    if info.flags & IFF_LOOPBACK or not info.is_up or not info.flags & IFF_MULTICAST:
        return True
    if _EXCLUDED_NAME.match(info.name):
        return True
    if info.virtual and info.devtype not in _LAN_CAPABLE_VIRTUAL_DEVTYPES:
        return True
    return not any(is_local_scope(a) for a in info.addresses)


def _to_selected(info: InterfaceInfo, explicit: bool) -> SelectedInterface:
    if not info.is_up:  # an explicitly named interface that is down: inactive, no addresses
        return SelectedInterface(info.name, info.index, (), (), explicit)
    v4: list[str] = []
    v6_routable: list[str] = []
    v6_link_local: list[str] = []
    for addr in info.addresses:
        ip = _ip(addr)
        if ip is None or ip.is_loopback or ip.is_multicast or ip.is_unspecified:
            continue
        if ip.version == 4:
            v4.append(str(ip))
        elif ip.is_link_local:
            v6_link_local.append(str(ip))
        else:
            v6_routable.append(str(ip))
    # Link-local IPv6 addresses need a scope id that most clients (browsers, getaddrinfo
    # users) do not carry over from the mDNS answer; publish them only when the interface
    # has nothing else, so a client never prefers an AAAA it cannot connect to.
    v6 = v6_routable or ([] if v4 else v6_link_local)
    return SelectedInterface(info.name, info.index, tuple(v4), tuple(v6), explicit)


def select_interfaces(
    snapshot: Snapshot, override: list[str] | tuple[str, ...] | None = None, *, missing_ok: bool = False
) -> list[SelectedInterface]:
    """Return the interfaces to announce on, sorted by name.

    `override` lists interface names or addresses; when given, exactly those interfaces
    are returned (an unknown entry raises UsageError naming it, unless `missing_ok`, which
    the interface watcher uses so a temporarily absent interface is just inactive).
    """
    if override:
        chosen: dict[str, SelectedInterface] = {}
        for entry in override:
            entry = entry.strip()
            info = snapshot.get(entry)
            if info is None:
                wanted = _ip(entry)
                if wanted is not None:
                    info = next(
                        (i for i in snapshot.values() if any(_ip(a) == wanted for a in i.addresses)),
                        None,
                    )
            if info is None:
                if missing_ok:
                    continue
                known = ", ".join(sorted(snapshot)) or "none"
                raise UsageError(
                    f"unknown mDNS interface {entry!r}: no interface has that name or address",
                    hint=f"available interfaces: {known}",
                )
            chosen[info.name] = _to_selected(info, explicit=True)
        return [chosen[k] for k in sorted(chosen)]
    return [
        _to_selected(info, explicit=False)
        for name, info in sorted(snapshot.items())
        if not _excluded_by_default(info)
    ]


# --- live snapshot ---------------------------------------------------------------------

_IFA_F_TENTATIVE = 0x40
_IFA_F_DADFAILED = 0x08


def _read_int(path: Path, base: int = 10) -> int | None:
    try:
        return int(path.read_text().strip(), base)
    except (OSError, ValueError):
        return None


def _unusable_ipv6(proc_if_inet6: str = "/proc/net/if_inet6") -> set[str]:
    """IPv6 addresses still doing duplicate address detection (cannot be bound yet)."""
    bad: set[str] = set()
    try:
        lines = Path(proc_if_inet6).read_text().splitlines()
    except OSError:
        return bad
    for line in lines:
        parts = line.split()
        if len(parts) < 6:
            continue
        try:
            flags = int(parts[4], 16)
            addr = str(ipaddress.IPv6Address(bytes.fromhex(parts[0])))
        except ValueError:
            continue
        if flags & (_IFA_F_TENTATIVE | _IFA_F_DADFAILED):
            bad.add(addr)
    return bad


_PSUTIL_FLAG_BITS = {"up": IFF_UP, "loopback": IFF_LOOPBACK, "multicast": IFF_MULTICAST}


def take_snapshot(sys_class_net: str = "/sys/class/net") -> Snapshot:
    """Read the current interfaces, their flags and addresses (psutil + sysfs)."""
    import socket

    import psutil

    addrs = psutil.net_if_addrs()
    stats = psutil.net_if_stats()
    tentative = _unusable_ipv6()
    snapshot: Snapshot = {}
    for name in set(addrs) | set(stats):
        base = Path(sys_class_net) / name
        flags = _read_int(base / "flags", 16)
        if flags is None:
            st = stats.get(name)
            flags = 0
            if st is not None:
                flags |= IFF_UP if st.isup else 0
                for word in (getattr(st, "flags", "") or "").split(","):
                    flags |= _PSUTIL_FLAG_BITS.get(word.strip(), 0)
        ips: list[str] = []
        for a in addrs.get(name, []):
            if a.family in (socket.AF_INET, socket.AF_INET6):
                ip = a.address.split("%", 1)[0]
                if ip not in tentative:
                    ips.append(ip)
        devtype = None
        try:
            for line in (base / "uevent").read_text().splitlines():
                if line.startswith("DEVTYPE="):
                    devtype = line.split("=", 1)[1].strip()
        except OSError:
            pass
        try:
            virtual = "/devices/virtual/" in os.path.realpath(base)
        except OSError:
            virtual = False
        index = _read_int(base / "ifindex")
        if index is None:
            try:
                index = socket.if_nametoindex(name)
            except OSError:
                index = 0
        snapshot[name] = InterfaceInfo(name, flags, tuple(ips), index, virtual, devtype)
    return snapshot


__all__ = [
    "InterfaceInfo",
    "SelectedInterface",
    "Snapshot",
    "is_local_scope",
    "select_interfaces",
    "take_snapshot",
]
