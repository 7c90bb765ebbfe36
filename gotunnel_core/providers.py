"""Tunnel providers: sources of tunnels other than the user (Docker containers by label).

A provider runs inside the daemon and hands the tunnel manager its whole current view at once
(`TunnelManager.set_provided(source, tunnels, problems)`). Provided tunnels are never persisted
(the provider derives them again after a restart), carry their `source` and `origin` in `list` and
`status`, and never replace a user's tunnel of the same name: that is reported as a conflict.
A provided tunnel whose backend nothing can reach is still served, by the daemon's explainer,
which answers 502 with the `problem` and the `fix` (never a silent 503).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from .models import Tunnel

#: Provider name -> "module:class" of its implementation.
PROVIDERS: dict[str, str] = {"docker": "gotunnel_core.docker.provider:DockerProvider"}


@dataclass(frozen=True)
class ProvidedTunnel:
    """A tunnel a provider wants served, where it comes from, and why it cannot work (if so)."""

    tunnel: Tunnel
    source: str
    origin: str
    problem: str | None = None
    fix: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "origin": self.origin, "problem": self.problem, "fix": self.fix}


@dataclass(frozen=True)
class ProviderProblem:
    """Something a provider could not turn into a tunnel (a bad label), with where it comes from."""

    source: str
    origin: str
    problem: str
    #: True for a name another container already serves (not a bad label: the older one wins)
    conflict: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "origin": self.origin, "problem": self.problem}


class Provider(Protocol):
    """What the daemon starts for each enabled provider."""

    name: str

    async def start(self) -> None:
        """Connect and publish the current view; raise RuntimeFailure when the source is unreachable."""

    async def run(self) -> None:
        """Follow changes until cancelled, reconnecting on its own."""

    async def close(self) -> None:
        """Stop following and release connections."""

    def status(self) -> dict[str, Any]:
        """Connection state for `gotunnel status`."""


def load_provider(name: str, manager: Any) -> Provider:
    """Instantiate provider `name` for `manager`; an unknown name lists the known ones."""
    import importlib

    from .errors import UsageError

    if name not in PROVIDERS:
        raise UsageError(f"unknown provider {name!r}; available: {', '.join(sorted(PROVIDERS))}")
    module_name, _, class_name = PROVIDERS[name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)(manager)
