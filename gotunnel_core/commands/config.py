"""`config show`: every setting's and every installed engine's options' effective value and where it came from."""

from __future__ import annotations

import json

import click

from ..cli.app import CliState, emit_json, pass_state
from ..hookspecs import hookimpl


@click.group()
def config() -> None:
    """Inspect the effective configuration."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
def config_show(state: CliState, as_json: bool) -> None:
    """Every setting's effective value and where it came from."""
    settings = state.settings
    state.note_ignored()
    engines = state.engine_options()
    uninstalled = sorted(set(settings.values.get("engines") or {}) - set(engines))
    if as_json:
        emit_json({**settings.as_json(), "engines": {name: options.as_json() for name, options in engines.items()},
                   "uninstalled_engine_tables": uninstalled})
        return
    click.echo(f"config file: {settings.config_file or '(none)'}")
    for name, item in settings.as_json()["settings"].items():
        click.echo(f"{name:<20} {json.dumps(item['value']):<24} {item['source']}")
    for engine, options in engines.items():
        click.echo(f"[engines.{engine}]")
        for name, item in options.as_json().items():
            click.echo(f"  {name:<22} {json.dumps(item['value']):<22} {item['source']:<10} {item['env']}")
    for engine in uninstalled:
        click.echo(f"[engines.{engine}]  (engine not installed here; ignored)")


@hookimpl
def gotunnel_register_commands(cli: click.Group) -> None:
    cli.add_command(config)
