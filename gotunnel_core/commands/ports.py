"""`ports enable`, `ports disable`, `ports status`: ports 80/443 for the user's unprivileged daemon."""

from __future__ import annotations

import click

from ..cli.app import CliState, emit_json, pass_state
from ..hookspecs import hookimpl


@click.group()
def ports() -> None:
    """Let your (unprivileged) daemon serve on ports 80 and 443: URLs without port numbers.

    \b
      sudo gotunnel ports enable     root binds 80/443 once; only your daemon can take them
      gotunnel ports status
      sudo gotunnel ports disable    removes exactly what enable installed
    """


@ports.command()
@click.option("--user", "user", metavar="NAME", help="Whose daemon gets the ports (default: the user running sudo).")
@click.option("--bind", "bind", metavar="ADDR", default="0.0.0.0", show_default=True,
              help="Address to bind 80/443 on (127.0.0.1: this machine only, no LAN access).")
def enable(user: str | None, bind: str) -> None:
    """Bind 80/443 (as root) and hand them to USER's daemon through a broker that runs as USER."""
    from ..ports.install import enable as do_enable

    record = do_enable(user, bind)
    if record.get("already"):
        click.echo(f"ports {record['bind']}:80/443 are already enabled for {record['user']} ({record['mode']})")
        return
    how = {"process": "until `gotunnel ports disable` or a reboot", "systemd": "also after a reboot (systemd)",
           "launchd": "also after a reboot (launchd)"}[record["mode"]]
    click.echo(f"ports {record['bind']}:80 and :443 are {record['user']}'s, {how}")
    click.echo(f"{record['user']}'s daemon uses them from its next start (running one? `gotunnel stop --all`)")


@ports.command()
@click.option("--user", "user", metavar="NAME", help="Whose broker to remove (default: the user running sudo).")
def disable(user: str | None) -> None:
    """Stop the broker and remove exactly what `ports enable` installed."""
    from ..ports.install import disable as do_disable, target_user

    done = do_disable(user)
    if not done:
        click.echo(f"nothing is installed for {target_user(user).pw_name}")
    for line in done:
        click.echo(line)


@ports.command()
@click.option("--user", "user", metavar="NAME", help="Whose setup to show (default: you).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
def status(state: CliState, user: str | None, as_json: bool) -> None:
    """Whether ports 80/443 are enabled for you, how, and whether the broker answers."""
    from ..ports.install import status as get_status

    info = get_status(user)
    if as_json:
        emit_json(info)
        return
    record, broker = info["record"], info["broker"]
    if record is None:
        click.echo(f"ports 80/443: not enabled for {info['user']}  (sudo gotunnel ports enable)")
    else:
        lasting = "survives a reboot" if record.get("persistent") else "until disable or a reboot"
        click.echo(f"ports 80/443: enabled for {info['user']} on {record['bind']} ({record['mode']}, {lasting})")
    state_line = ("answers you" if broker["serves_you"] else "runs (answers only its user)" if broker["answers"]
                  else "not running")
    pid = f" (pid {broker['pid']})" if broker["pid"] else ""
    click.echo(f"broker: {state_line}{pid}, socket {broker['socket']}")


@hookimpl
def gotunnel_register_commands(cli: click.Group) -> None:
    cli.add_command(ports)
