"""Registers the nginx engine. Kept light: rendering (jinja2) is imported only when used."""

from __future__ import annotations

from typing import Callable

from gotunnel_core.engine import EngineSpec
from gotunnel_core.hookspecs import hookimpl

from .engine import NginxEngine


@hookimpl
def gotunnel_register_engines(register: Callable[[EngineSpec], None]) -> None:
    """Announce the `nginx` engine."""
    register(EngineSpec("nginx", NginxEngine, "supervised nginx, configured from Jinja2 templates"))
