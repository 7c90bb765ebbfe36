"""`hosts list|sync|clean`: the gotunnel block in the hosts file (NAME.local -> loopback)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..cli.app import CliState, emit_json, pass_state
from ..hookspecs import hookimpl


@click.group()
def hosts() -> None:
    """The gotunnel block in the hosts file (NAME.local -> loopback)."""


def _hosts_file(state: CliState) -> Any:
    from ..hosts import HostsFile, default_hosts_path

    return HostsFile(Path(state.settings["hosts_file"] or default_hosts_path()))


def _saved_tunnel_names(state: CliState) -> list[str]:
    from ..names import base_name
    from ..state import TunnelStore

    layout = state.layout
    if not layout.tunnels_file.exists():
        return []
    return sorted({f"{base_name(t)}.local" for t in TunnelStore(layout.tunnels_file, layout.tunnels_lock).load()})


@hosts.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
def hosts_list(state: CliState, as_json: bool) -> None:
    """Names in gotunnel's hosts block."""
    hosts_file = _hosts_file(state)
    names = hosts_file.entries()
    if as_json:
        emit_json({"hosts_file": str(hosts_file.path), "names": names})
        return
    for name in names:
        click.echo(name)


@hosts.command("sync")
@pass_state
def hosts_sync(state: CliState) -> None:
    """Make the block hold exactly the saved tunnels' NAME.local names."""
    names = _saved_tunnel_names(state)
    changed = _hosts_file(state).sync(names)
    click.echo(f"{'updated' if changed else 'unchanged'}: {len(names)} name(s)")


@hosts.command("clean")
@pass_state
def hosts_clean(state: CliState) -> None:
    """Remove gotunnel's block from the hosts file; every other byte stays."""
    changed = _hosts_file(state).clean()
    click.echo("removed the gotunnel block" if changed else "no gotunnel block found")


@hookimpl
def gotunnel_register_commands(cli: click.Group) -> None:
    cli.add_command(hosts)
