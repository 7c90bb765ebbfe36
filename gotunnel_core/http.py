"""Engine-neutral request/response types handed to the `gotunnel_request` hook."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class HookRequest:
    """A request as the builtin engine parsed it; plugins may edit `path` and `headers` in place.

    `headers` keeps the client's order and case; names compare case-insensitively.
    """

    method: str
    path: str
    headers: list[tuple[str, str]]
    tunnel: str
    client: tuple[str, int]
    scheme: str

    def get_header(self, name: str) -> str | None:
        """First value of header `name` (case-insensitive), or None."""
        lower = name.lower()
        for key, value in self.headers:
            if key.lower() == lower:
                return value
        return None


@dataclass(slots=True)
class HookResponse:
    """A response a plugin sends instead of proxying the request."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
