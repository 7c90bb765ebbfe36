"""Map tunnel names to the mDNS names announced for them, and propose alternatives."""

from __future__ import annotations

from ..errors import RuntimeFailure

HTTPS_SERVICE = "_https._tcp.local."
HTTP_SERVICE = "_http._tcp.local."


class NameConflict(RuntimeFailure):
    """Another host on the LAN already answers for the name we wanted to announce."""

    def __init__(self, name: str, suggestion: str | None, what: str) -> None:
        hint = (
            f"pick another name, e.g. {suggestion!r}" if suggestion else "pick another name"
        )
        super().__init__(f"{name}.local is already in use on the local network ({what})", hint)
        self.name = name
        self.suggestion = suggestion


def mdns_base_name(name: str) -> str:
    """The .local label announced for tunnel `name`: `*.x` (a wildcard tunnel) announces `x`."""
    name = name.strip().lower().rstrip(".")
    if name.startswith("*."):
        name = name[2:]
    if name.endswith(".local"):
        name = name[: -len(".local")]
    if not name or "*" in name:
        raise ValueError(f"cannot announce {name!r} over mDNS")
    return name


def host_name(base: str) -> str:
    """Fully qualified mDNS host name for a base name: `myapp` -> `myapp.local.`."""
    return f"{base}.local."


def instance_name(base: str, service_type: str) -> str:
    """DNS-SD service instance name: `myapp` + `_https._tcp.local.`."""
    return f"{base}.{service_type}"


def candidates(base: str, count: int = 4) -> list[str]:
    """Alternative names to probe when `base` is taken: `base-2`, `base-3`, ..."""
    return [f"{base}-{n}" for n in range(2, 2 + count)]
