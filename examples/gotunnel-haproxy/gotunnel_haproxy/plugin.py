"""Registers the haproxy engine (entry point `gotunnel: haproxy`). Kept light: rendering (jinja2)
is imported only when used."""

from __future__ import annotations

from typing import Callable

from gotunnel_core.engine import EngineSpec
from gotunnel_core.hookspecs import hookimpl

from .engine import HAProxyEngine


@hookimpl
def gotunnel_register_engines(register: Callable[[EngineSpec], None]) -> None:
    """Announce the `haproxy` engine."""
    register(EngineSpec("haproxy", HAProxyEngine, "supervised HAProxy (master-worker), seamless reloads"))
