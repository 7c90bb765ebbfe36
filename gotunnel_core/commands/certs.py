"""`cert ca|list|show|renew`: the local CA and the tunnel certificates."""

from __future__ import annotations

from typing import Any

import click

from ..cli.app import CliState, emit_json, pass_state
from ..errors import UsageError
from ..hookspecs import hookimpl


@click.group()
def cert() -> None:
    """The local CA and the tunnel certificates."""


def _cert_service(state: CliState) -> Any:
    from ..certservice import CertService

    return CertService(state.layout.ensure(), state.settings.values)


@cert.command("ca")
@click.option("--path", "path_only", is_flag=True, help="Print only the CA certificate's path.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
def cert_ca(state: CliState, path_only: bool, as_json: bool) -> None:
    """The local CA certificate (PEM): its path, or its details."""
    service = _cert_service(state)
    if path_only:
        click.echo(str(service.ca.cert_path))
        return
    info = service.ca.info().to_dict()
    if as_json:
        emit_json(info)
        return
    for key, value in info.items():
        click.echo(f"{key:<16} {value}")


@cert.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
def cert_list(state: CliState, as_json: bool) -> None:
    """Every tunnel certificate with its expiry."""
    leaves = [info.to_dict() for info in _cert_service(state).issuer.list_leaves()]
    if as_json:
        emit_json({"certificates": leaves})
        return
    for leaf in leaves:
        due = " (renewal due)" if leaf["due_for_renewal"] else ""
        click.echo(f"{leaf['name']:<24} expires {leaf['not_after']}{due}")


@cert.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
def cert_show(state: CliState, name: str, as_json: bool) -> None:
    """Details of one tunnel certificate."""
    from ..models import parse_tunnel_name

    info = _cert_service(state).issuer.leaf_info(parse_tunnel_name(name)).to_dict()
    if as_json:
        emit_json(info)
        return
    for key, value in info.items():
        click.echo(f"{key:<16} {value}")


@cert.command("renew")
@click.argument("names", nargs=-1)
@pass_state
def cert_renew(state: CliState, names: tuple[str, ...]) -> None:
    """Renew certificates now (all due ones, or the named ones); a running engine picks them up."""
    from ..daemon.client import DaemonClient
    from ..models import parse_tunnel_name

    parsed = [parse_tunnel_name(n) for n in names]
    client = DaemonClient(state.layout.ensure())
    if client.ping() is not None:
        renewed = client.request("renew", names=parsed)
    else:
        service = _cert_service(state)
        stored = {leaf.name: leaf for leaf in service.issuer.list_leaves()}
        missing = [n for n in parsed if n not in stored]
        if missing:
            raise UsageError(f"no certificate named {missing[0]!r}; stored: {', '.join(sorted(stored)) or 'none'}")
        targets = parsed or [name for name, leaf in stored.items() if leaf.due_for_renewal]
        renewed = [service.issuer.renew(n).name for n in targets]
    for name in renewed:
        click.echo(f"renewed {name}")
    if not renewed:
        click.echo("nothing to renew")


@hookimpl
def gotunnel_register_commands(cli: click.Group) -> None:
    cli.add_command(cert)
