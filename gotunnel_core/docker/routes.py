"""Labelled containers -> tunnels for a proxy gotunnel does not run (`gotunnel sync --docker`).

The same labels, address resolution and conflict rules as the daemon's provider
(`build_tunnels`), with two differences that come from writing a config for someone else's proxy:
there is no explainer to serve an unreachable container (its tunnel is left out, with a warning
saying why and what to change), and a bad label refuses the whole sync (exit 2, the previous
config keeps serving) instead of disabling one tunnel silently in a file nobody watches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from ..errors import UsageError
from ..models import Tunnel
from .address import ContainerView, local_networks
from .provider import build_tunnels

#: Backend of a tunnel nothing can reach; never rendered (sync drops those tunnels), required by the model.
UNREACHABLE = "http://127.0.0.1:9"


@dataclass(frozen=True)
class ContainerRoutes:
    """The containers' tunnels to render, and one line for each one left out."""

    tunnels: tuple[Tunnel, ...]
    warnings: tuple[str, ...]


def container_routes(views: Iterable[ContainerView], file_names: Iterable[str],
                     local: list[Any] | None = None) -> ContainerRoutes:
    """The tunnels `views` declare, next to the config file's tunnels named `file_names`.

    A bad label: UsageError naming the label, its value and the container (exit 2). A name the
    config file has, or an older container has: the file's (the older one's) is rendered, the
    other is a warning, as in the daemon. An unreachable container: a warning with the fix."""
    provided, problems = build_tunnels(views, UNREACHABLE, local_networks() if local is None else local)
    refused = [p for p in problems if not p.conflict]
    if refused:
        more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
        raise UsageError(f"{refused[0].origin}: {refused[0].problem}{more}; fix the label and recreate the container")
    warnings = [f"{p.origin}: {p.problem}" for p in problems]
    taken = set(file_names)
    tunnels = []
    for entry in provided:
        if entry.tunnel.name in taken:
            warnings.append(f"{entry.origin}: tunnel {entry.tunnel.name!r} is also in the config file; "
                            "the file's is rendered. Rename the label or the file's tunnel")
        elif entry.problem:
            warnings.append(f"{entry.origin}: tunnel {entry.tunnel.name!r} left out: {entry.problem}; fix: {entry.fix}")
        else:
            tunnels.append(entry.tunnel)
    return ContainerRoutes(tuple(tunnels), tuple(warnings))


__all__ = ["ContainerRoutes", "container_routes"]
