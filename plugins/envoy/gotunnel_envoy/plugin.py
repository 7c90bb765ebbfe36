"""Registers the Envoy engine. Kept light: nothing heavy is imported until the engine runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from gotunnel_core.engine import EngineSpec
from gotunnel_core.hookspecs import hookimpl

from .engine import EnvoyEngine

if TYPE_CHECKING:
    import click


@hookimpl
def gotunnel_register_engines(register: Callable[[EngineSpec], None]) -> None:
    """Announce the `envoy` engine."""
    register(EngineSpec("envoy", EnvoyEngine, "supervised Envoy, configured through file-based LDS/CDS/RDS"))


@hookimpl
def gotunnel_register_commands(cli: "click.Group") -> None:
    """Add `gotunnel hub` and `gotunnel edge` (the team edge runs on Envoy)."""
    from .team.commands import register

    register(cli)
