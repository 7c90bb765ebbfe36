"""The builtin engine's options (declared on `BuiltinEngine`, validated by the core like any engine
option: `[engines.builtin]`, `GOTUNNEL_BUILTIN_<OPTION>`, and the old top-level keys) and the
`Settings` snapshot the proxy reads on its hot path."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

from gotunnel_core.options import EngineOption
from gotunnel_core.values import boolean, integer, number

#: Every option is also read from the top-level setting of the same name (older config files,
#: `GOTUNNEL_WORKERS`, and the settings a worker process is started with).
OPTIONS = (
    EngineOption("workers", integer(1, 64), 1, "processes serving the listeners (1 = in-process only)", legacy=True),
    EngineOption("max_header_size", integer(1024, 1 << 20), 65536, "largest request head in bytes (431 above)",
                 legacy=True),
    EngineOption("header_timeout", number(0.1, 3600), 10.0,
                 "absolute deadline for a request head from its first byte, seconds (408); also the TLS handshake's",
                 legacy=True),
    EngineOption("idle_timeout", number(0.1, 86400), 75.0,
                 "keep-alive idle time and body/response inactivity limit, seconds", legacy=True),
    EngineOption("max_connections", integer(1, 1_000_000), 10000,
                 "concurrent client connections (per worker); more are answered 503 and closed", legacy=True),
    EngineOption("via", boolean, False, "add `Via: 1.1 gotunnel` to requests and responses", legacy=True),
    EngineOption("drain_timeout", number(0.01, 3600), 5.0, "how long stop() lets in-flight requests finish, seconds",
                 legacy=True),
    EngineOption("upstream_idle_timeout", number(0.01, 86400), 30.0,
                 "idle pooled upstream connections are closed after this, seconds", legacy=True),
    EngineOption("max_idle_upstream", integer(1, 100_000), 512, "idle pooled connections kept per backend address",
                 legacy=True),
)


@dataclass(frozen=True, slots=True)
class Settings:
    """Limits and options of the builtin engine, one field per option in `OPTIONS`."""

    max_header_size: int = 65536
    header_timeout: float = 10.0
    idle_timeout: float = 75.0
    max_connections: int = 10000
    via: bool = False
    workers: int = 1
    drain_timeout: float = 5.0
    upstream_idle_timeout: float = 30.0
    max_idle_upstream: int = 512
    http2: bool = True  # offer h2 by ALPN on the HTTPS listener: the core `http2` setting, not an option

    @classmethod
    def from_options(cls, options: Mapping[str, Any], http2: bool = True) -> "Settings":
        """The snapshot of the engine's validated options, plus the core's `http2` setting."""
        return cls(**{f.name: options[f.name] for f in fields(cls) if f.name != "http2"}, http2=http2)
