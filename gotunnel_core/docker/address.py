"""Which address reaches a container's port from where the proxy runs, or exactly why none does.

The proxy (the builtin engine, a supervised engine, or either in a host-network container) runs
in this process's network namespace. In order of preference:

1. a container in host network mode listens on this machine: loopback at its labelled port;
2. the container's IP on a network this namespace has an address on (a Docker bridge network
   gives the host its gateway address; a Compose project's `<project>_default` network too);
3. a port the container publishes on the host;
4. none: the reason names the networks and ports, and the fix says what to change.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

#: Labels Docker Compose puts on the containers it creates.
COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"


@dataclass(frozen=True)
class Network:
    """One network a container is attached to: its name, the container's address, the subnet."""

    name: str
    ip: str
    subnet: str


@dataclass(frozen=True)
class ContainerView:
    """What address resolution and reports need from `docker inspect`."""

    id: str
    name: str
    labels: Mapping[str, str]
    network_mode: str
    networks: tuple[Network, ...] = ()
    exposed: tuple[int, ...] = ()
    #: container TCP port -> [(host ip, host port)] it is published on
    published: Mapping[int, tuple[tuple[str, int], ...]] = field(default_factory=dict)
    running: bool = True
    #: creation time as Docker reports it (RFC 3339): the older of two containers keeps a shared name
    created: str = ""

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def origin(self) -> str:
        """How reports name the container: `web-1 (3f2a...)`, plus its Compose project and service."""
        project, service = self.labels.get(COMPOSE_PROJECT), self.labels.get(COMPOSE_SERVICE)
        compose = f", service {service} of Compose project {project}" if project and service else ""
        return f"container {self.name} ({self.short_id}{compose})"

    @classmethod
    def from_inspect(cls, attrs: Mapping[str, Any]) -> "ContainerView":
        """Build from the docker SDK's `container.attrs` (the Engine API's inspect document)."""
        config = attrs.get("Config") or {}
        settings = attrs.get("NetworkSettings") or {}
        networks = []
        for name, net in sorted((settings.get("Networks") or {}).items()):
            ip, prefix = net.get("IPAddress") or "", net.get("IPPrefixLen") or 0
            if ip:
                subnet = str(ipaddress.ip_interface(f"{ip}/{prefix}").network)
                networks.append(Network(name, ip, subnet))
        published: dict[int, tuple[tuple[str, int], ...]] = {}
        for spec, bindings in (settings.get("Ports") or {}).items():
            port, _, proto = spec.partition("/")
            if proto == "tcp" and bindings:
                published[int(port)] = tuple((b.get("HostIp") or "", int(b["HostPort"])) for b in bindings if b.get("HostPort"))
        exposed = sorted(int(spec.partition("/")[0]) for spec in (config.get("ExposedPorts") or {})
                         if spec.endswith("/tcp"))
        return cls(
            id=attrs["Id"],
            name=(attrs.get("Name") or attrs["Id"][:12]).lstrip("/"),
            labels=dict(config.get("Labels") or {}),
            network_mode=(attrs.get("HostConfig") or {}).get("NetworkMode") or "default",
            networks=tuple(networks),
            exposed=tuple(exposed),
            published=published,
            running=bool((attrs.get("State") or {}).get("Running", True)),
            created=str(attrs.get("Created") or ""),
        )


@dataclass(frozen=True)
class Resolution:
    """Where to send a tunnel's requests (`url`), or why nothing can reach the container."""

    url: str | None
    reason: str = ""
    fix: str = ""


def local_networks() -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    """Every address of this network namespace with its prefix (psutil: no parsing of `ip`)."""
    import socket

    import psutil

    out: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface] = []
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family not in (socket.AF_INET, socket.AF_INET6) or not addr.netmask:
                continue
            try:
                out.append(ipaddress.ip_interface(f"{addr.address.split('%')[0]}/{addr.netmask}"))
            except ValueError:
                continue
    return out


def choose_port(view: ContainerView, labelled: int | None) -> tuple[int | None, str]:
    """The container port to proxy to: the label's, else the only exposed one; else why not."""
    if labelled is not None:
        return labelled, ""
    if len(view.exposed) == 1:
        return view.exposed[0], ""
    if view.exposed:
        return None, f"exposes ports {', '.join(map(str, view.exposed))}; say which with a gotunnel.port label"
    return None, "exposes no port; say which port it listens on with a gotunnel.port label"


def resolve(view: ContainerView, port: int, local: Iterable[ipaddress.IPv4Interface | ipaddress.IPv6Interface]) -> Resolution:
    """The backend URL for `port` of the container, by the rules in this module's docstring."""
    if view.network_mode == "host":
        return Resolution(f"http://127.0.0.1:{port}")
    local = list(local)
    for net in view.networks:
        subnet = ipaddress.ip_network(net.subnet)
        if any(addr.ip in subnet and not addr.ip.is_loopback for addr in local):
            host = f"[{net.ip}]" if ":" in net.ip else net.ip
            return Resolution(f"http://{host}:{port}")
    for host_ip, host_port in view.published.get(port, ()):
        target = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host_ip, host_ip)
        host = f"[{target}]" if ":" in target else target
        return Resolution(f"http://{host}:{host_port}")
    if view.network_mode == "none":
        where = "has no network (network mode none)"
    elif view.network_mode.startswith("container:"):
        where = f"shares the network of {view.network_mode.split(':', 1)[1][:12]}, which gotunnel cannot reach"
    elif view.networks:
        names = ", ".join(f"{n.name} ({n.subnet})" for n in view.networks)
        where = f"is only on network(s) {names}, where this machine has no address"
    else:
        where = "has no IP address on any network"
    return Resolution(
        None,
        reason=f"{view.origin} {where}, and publishes no host port for {port}/tcp",
        fix=(f"publish the port (`docker run -p {port}` or Compose `ports: [\"{port}\"]`), attach the container "
             "to a network gotunnel's machine is on (any bridge network), or run it with network_mode: host"),
    )
