"""`daemon` and `logs`: run the daemon in the foreground, and read its log."""

from __future__ import annotations

import os
import time

import click

from ..cli.app import CliState, pass_state
from ..hookspecs import hookimpl


@click.command()
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines.")
@click.option("--lines", "-n", default=200, show_default=True, help="Lines of history to show.")
@pass_state
def logs(state: CliState, follow: bool, lines: int) -> None:
    """Show the daemon's log."""
    path = state.layout.log_file
    if not path.exists():
        click.echo(f"no log yet at {path}", err=True)
        return
    with path.open("r", errors="replace") as fh:
        for line in fh.readlines()[-lines:]:
            click.echo(line, nl=False)
        while follow:
            line = fh.readline()
            if line:
                click.echo(line, nl=False)
            else:
                time.sleep(0.25)


@click.command()
@pass_state
def daemon(state: CliState) -> None:
    """Run the daemon in the foreground (`gotunnel start` spawns it when needed)."""
    from ..daemon.server import run_daemon
    from ..logs import configure

    layout = state.layout.ensure()
    log_fh = open(layout.log_file, "a", buffering=1)
    os.chmod(layout.log_file, 0o600)
    configure("json", state.settings["log_level"], stream=log_fh)
    run_daemon(layout, state.settings.values, state.plugins)


@hookimpl
def gotunnel_register_commands(cli: click.Group) -> None:
    cli.add_command(logs)
    cli.add_command(daemon)
