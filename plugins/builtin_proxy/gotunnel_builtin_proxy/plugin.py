"""Registers the builtin engine. Kept light: the engine class imports uvloop/httptools lazily."""

from __future__ import annotations

from typing import Callable

from gotunnel_core.engine import EngineSpec
from gotunnel_core.hookspecs import hookimpl

from .engine import BuiltinEngine


@hookimpl
def gotunnel_register_engines(register: Callable[[EngineSpec], None]) -> None:
    """Announce the `builtin` engine."""
    register(EngineSpec("builtin", BuiltinEngine, "in-process asyncio proxy (uvloop + httptools), no external program"))
