"""`daemon` and `logs`: run the daemon in the foreground, and read its log."""

from __future__ import annotations

import os
import time
from typing import Any

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
@click.option("--restore", is_flag=True,
              help="Serve the saved tunnels with the settings saved with them (what `list` does after a crash).")
@pass_state
def daemon(state: CliState, restore: bool) -> None:
    """Run the daemon in the foreground (`gotunnel start` spawns it when needed)."""
    from ..daemon.server import run_daemon
    from ..logs import configure

    if restore:
        settings = _restored_settings(state)
    else:
        settings = state.settings
    layout = state_layout_of(settings).ensure()
    log_fh = open(layout.log_file, "a", buffering=1)
    os.chmod(layout.log_file, 0o600)
    configure("json", settings["log_level"], stream=log_fh)
    run_daemon(layout, settings.values, state.plugins)


def state_layout_of(settings: Any) -> Any:
    from ..paths import state_layout

    return state_layout(settings["state_dir"])


def _restored_settings(state: CliState) -> Any:
    """The saved settings of the saved tunnels' daemon; no config file is read (it may have
    changed, or belong to another directory), only `--state-dir` says where to look."""
    from ..config import restore_settings
    from ..errors import UsageError
    from ..paths import state_layout
    from ..state import read_saved

    state_dir = state.flags.get("state_dir")
    if not state_dir:
        raise UsageError("`gotunnel daemon --restore` needs --state-dir")
    layout = state_layout(state_dir)
    saved, _ = read_saved(layout.tunnels_file)
    if saved is None:
        raise UsageError(f"no saved daemon settings in {layout.tunnels_file}")
    return restore_settings(saved, str(layout.root))


@hookimpl
def gotunnel_register_commands(cli: click.Group) -> None:
    cli.add_command(logs)
    cli.add_command(daemon)
