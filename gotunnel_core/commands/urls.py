"""`url`, `open` and `qr`: one tunnel's URL for a script, a browser, or a phone's camera.

    gotunnel url myapp          ->  https://myapp.localhost:8443
    gotunnel url myapp --lan    ->  https://myapp.local:8443   (other devices, through mDNS)
    gotunnel qr myapp           ->  the --lan URL as a QR code in the terminal

The QR code comes from `segno` (pure Python, no dependencies, maintained, implements ISO/IEC
18004 and prints straight to a terminal), rather than `qrcode` (which wants Pillow for most output).
"""

from __future__ import annotations

from typing import Any

import click

from ..cli.app import CliState, pass_state
from ..errors import RuntimeFailure
from ..hookspecs import hookimpl

_LAN_OPTION = click.option("--lan", is_flag=True, help="The NAME.local URL (other devices on the LAN, through mDNS).")
_HTTP_OPTION = click.option("--http", "plain", is_flag=True, help="The http:// URL instead of https://.")


def tunnel_url(state: CliState, raw_name: str, *, lan: bool, plain: bool) -> str:
    """The URL of a running tunnel: https (or http) on NAME.localhost (or NAME.local)."""
    from ..daemon.client import DaemonNotRunning
    from ..models import parse_tunnel_name
    from ..urls import pick_url

    name = parse_tunnel_name(raw_name)
    try:
        tunnels = state.client(spawn=False).request("list")
    except DaemonNotRunning:
        raise RuntimeFailure(f"no tunnel named {name!r}: no gotunnel daemon is running",
                             hint=f"gotunnel start -d {name} -p PORT") from None
    item: Any = next((t for t in tunnels if t["name"] == name), None)
    if item is None:
        running = ", ".join(sorted(t["name"] for t in tunnels)) or "none"
        raise RuntimeFailure(f"no tunnel named {name!r}; running: {running}")
    return pick_url(item["urls"], lan=lan, plain=plain, name=name)


@click.command()
@click.argument("name")
@_LAN_OPTION
@_HTTP_OPTION
@pass_state
def url(state: CliState, name: str, lan: bool, plain: bool) -> None:
    """Print the URL of tunnel NAME (for scripts): https://NAME.localhost by default."""
    click.echo(tunnel_url(state, name, lan=lan, plain=plain))


@click.command("open")
@click.argument("name")
@_LAN_OPTION
@_HTTP_OPTION
@pass_state
def open_(state: CliState, name: str, lan: bool, plain: bool) -> None:
    """Open tunnel NAME in the browser ($BROWSER, else the desktop's default)."""
    import webbrowser

    target = tunnel_url(state, name, lan=lan, plain=plain)
    if not webbrowser.open(target):
        raise RuntimeFailure(f"no browser could open {target}", hint="set $BROWSER, or open the URL yourself")
    click.echo(f"opened {target}")


@click.command()
@click.argument("name")
@_HTTP_OPTION
@click.option("--localhost", is_flag=True, help="Encode the NAME.localhost URL instead of the LAN one.")
@pass_state
def qr(state: CliState, name: str, plain: bool, localhost: bool) -> None:
    """Show the LAN URL of tunnel NAME as a QR code, for a phone on the same network."""
    import sys

    import segno

    target = tunnel_url(state, name, lan=not localhost, plain=plain)
    segno.make(target, error="m").terminal(out=sys.stdout, compact=True)
    click.echo(target)


@hookimpl
def gotunnel_register_commands(cli: click.Group) -> None:
    for command in (url, open_, qr):
        cli.add_command(command)
