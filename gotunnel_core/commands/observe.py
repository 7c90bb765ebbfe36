"""`metrics`: what the daemon's engine counted, in Prometheus text, whichever engine runs."""

from __future__ import annotations

import click

from ..cli.app import CliState, pass_state
from ..errors import RuntimeFailure
from ..hookspecs import hookimpl


def running_client(state: CliState):  # type: ignore[no-untyped-def]
    """A client for the running daemon, or a one-line error when none runs (never spawns one)."""
    client = state.client(spawn=False)
    if client.ping() is None:
        raise RuntimeFailure("no gotunnel daemon is running", hint="start a tunnel first: gotunnel start -d NAME -p PORT")
    return client


@click.command()
@pass_state
def metrics(state: CliState) -> None:
    """Print the daemon's metrics once (the text its metrics_port endpoint serves)."""
    click.echo(running_client(state).request("metrics")["text"], nl=False)


@hookimpl
def gotunnel_register_commands(cli: click.Group) -> None:
    cli.add_command(metrics)
