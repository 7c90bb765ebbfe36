"""Registers the Caddy engine. Importing this stays cheap: nothing runs until the engine is used."""

from __future__ import annotations

from typing import Callable

from gotunnel_core.engine import EngineSpec
from gotunnel_core.hookspecs import hookimpl

from .engine import CaddyEngine


@hookimpl
def gotunnel_register_engines(register: Callable[[EngineSpec], None]) -> None:
    """Announce the `caddy` engine."""
    register(EngineSpec("caddy", CaddyEngine, "Caddy, supervised; native JSON config loaded through its admin unix socket"))
