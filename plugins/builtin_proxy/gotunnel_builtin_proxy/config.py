"""Engine settings read from `EngineContext.settings`, with defaults and validation."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

from gotunnel_core.errors import ValidationError


@dataclass(frozen=True, slots=True)
class Settings:
    """Limits and options of the builtin engine; every field is a `context.settings` key."""

    max_header_size: int = 65536  # request line + headers, bytes -> 431 beyond
    header_timeout: float = 10.0  # absolute deadline for a request head, from its first byte -> 408
    idle_timeout: float = 75.0  # keep-alive idle and body/response inactivity, seconds
    max_connections: int = 10000  # concurrent client connections; more are answered 503 and closed
    via: bool = False  # add `Via: 1.1 gotunnel` to requests and responses
    workers: int = 1  # processes serving the listeners (1 = in-process only)
    drain_timeout: float = 5.0  # how long stop() lets in-flight requests finish
    upstream_idle_timeout: float = 30.0  # idle pooled upstream connections are closed after this
    max_idle_upstream: int = 512  # idle pooled connections kept per backend
    http2: bool = True  # offer h2 by ALPN on the HTTPS listener

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None) -> "Settings":
        """Pick known keys out of `raw` (unknown keys belong to other components) and check them."""
        raw = raw or {}
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in raw:
                continue
            value = raw[f.name]
            default = f.default
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ValidationError(f.name, value, "must be true or false")
            elif isinstance(default, int):
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValidationError(f.name, value, "must be a positive integer")
            else:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                    raise ValidationError(f.name, value, "must be a positive number of seconds")
                value = float(value)
            values[f.name] = value
        return cls(**values)
