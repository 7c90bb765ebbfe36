"""`docker watch`, `docker unwatch`, `docker status`: containers labelled `gotunnel.name` become tunnels."""

from __future__ import annotations

from typing import Any

import click

from ..cli.app import CliState, emit_json, pass_state
from ..hookspecs import hookimpl


@click.group()
def docker() -> None:
    """Serve Docker containers by their labels (gotunnel.name, gotunnel.port, ...)."""


@docker.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
def watch(state: CliState, as_json: bool) -> None:
    """Make the daemon follow Docker: labelled containers are served while they run.

    \b
    docker run -d -l gotunnel.name=web -l gotunnel.port=80 nginx  ->  https://web.localhost:8443
    The daemon keeps following Docker after a restart (until `gotunnel docker unwatch`).
    """
    result = state.client(spawn=True).request("watch", provider="docker")
    if as_json:
        emit_json(result)
        return
    click.echo(f"following the Docker engine: {len(result['containers'])} labelled container(s)")
    _print_tunnels(result["tunnels"], result["problems"])


@docker.command()
@pass_state
def unwatch(state: CliState) -> None:
    """Stop following Docker and stop serving the containers' tunnels."""
    from ..daemon.client import DaemonNotRunning

    try:
        gone = state.client(spawn=False).request("unwatch", provider="docker")
    except DaemonNotRunning:
        click.echo("no daemon running")
        return
    click.echo(f"stopped following Docker; {len(gone)} tunnel(s) no longer served")


@docker.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
def docker_status(state: CliState, as_json: bool) -> None:
    """Whether the daemon follows Docker, the containers' tunnels, and the labels it refused."""
    info = state.ask_running_daemon("status")
    provider = (info or {}).get("providers", {}).get("docker")
    tunnels = [t for t in (info or {}).get("tunnels", []) if t.get("source") == "docker"]
    problems = [p for p in (info or {}).get("problems", []) if p.get("source") == "docker"]
    if as_json:
        emit_json({"following": provider is not None, "provider": provider, "tunnels": tunnels, "problems": problems})
        return
    if provider is None:
        click.echo("not following Docker (start with `gotunnel docker watch`)")
        return
    if provider["connected"]:
        click.echo(f"following the Docker engine: {len(provider['containers'])} labelled container(s)")
    else:
        click.echo(f"Docker engine not reachable: {provider['error']} (retrying)")
    _print_tunnels(tunnels, problems)


def _print_tunnels(tunnels: list[dict[str, Any]], problems: list[dict[str, Any]]) -> None:
    for item in tunnels:
        click.echo(f"  {item['name']}: {' '.join(item['urls'])}  <- {item['origin']}")
        if item.get("problem"):
            click.echo(f"    unreachable: {item['problem']}")
            click.echo(f"    fix: {item['fix']}")
    for problem in problems:
        click.echo(f"  problem: {problem['origin']}: {problem['problem']}")


@hookimpl
def gotunnel_register_commands(cli: click.Group) -> None:
    cli.add_command(docker)
