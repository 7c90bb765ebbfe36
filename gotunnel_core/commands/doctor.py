"""`doctor`: check this machine for what gotunnel needs (.local resolution, mDNS interfaces, engine)."""

from __future__ import annotations

from typing import Any

import click

from ..cli.app import CliState, emit_json, pass_state
from ..errors import GotunnelError
from ..hookspecs import hookimpl


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
def doctor(state: CliState, as_json: bool) -> None:
    """Check this machine (.local resolution, mDNS interfaces, engine) and that each running
    tunnel's backend accepts the Host it gets (Vite, Django and Rails refuse unknown names)."""
    from dataclasses import asdict

    from ..engine import find_engine
    from ..mdns.interfaces import select_interfaces, take_snapshot
    from ..mdns.resolver_check import check_local_resolution

    settings = state.settings
    state.note_ignored()
    resolution = check_local_resolution()
    try:
        chosen = select_interfaces(take_snapshot(), settings["mdns_interface"] or None)
        interfaces: Any = [{"name": i.name, "ipv4": list(i.ipv4), "ipv6": list(i.ipv6)} for i in chosen]
    except GotunnelError as exc:
        interfaces = {"error": exc.message}
    spec = find_engine(state.engine_specs(), settings["engine"])
    probe = spec.engine_class.probe(settings.values)
    tunnels = _tunnel_checks(state)
    report = {
        "tunnels": tunnels,
        "local_resolution": asdict(resolution),
        "mdns": {"enabled": settings["mdns"], "interfaces": interfaces},
        "engine": {"name": spec.name, "found": probe.found, "path": probe.path, "version": probe.version, "hint": probe.hint},
        "state_dir": str(state.layout.root),
    }
    if as_json:
        emit_json(report)
        return
    mark = "ok" if resolution.ok else resolution.verdict.upper()
    click.echo(f"[{mark}] this machine resolves .local names: {resolution.verdict}")
    for detail in resolution.details:
        click.echo(f"       {detail}")
    if resolution.hint:
        click.echo(f"       fix: {resolution.hint}")
    if isinstance(interfaces, dict):
        click.echo(f"[ERROR] mDNS interfaces: {interfaces['error']}")
    else:
        names = ", ".join(f"{i['name']} ({', '.join(i['ipv4'] + i['ipv6'])})" for i in interfaces) or "none found"
        click.echo(f"[{'ok' if interfaces else 'WARN'}] mDNS would announce on: {names}")
    click.echo(f"[{'ok' if probe.found else 'MISSING'}] engine {spec.name}: {probe.path or 'in-process'} {probe.version or ''}".rstrip())
    if not probe.found and probe.hint:
        click.echo(f"       fix: {probe.hint}")
    for tunnel in tunnels:
        if not tunnel["refusals"]:
            click.echo(f"[ok] tunnel {tunnel['name']}: its backend accepts the names it is reached by")
        for refusal in tunnel["refusals"]:
            click.echo(f"[WARN] tunnel {tunnel['name']}: the backend ({refusal['framework']}) refuses the Host "
                       f"{refusal['host']!r} (HTTP {refusal['status']})")
            click.echo(f"       fix: {refusal['fix']}  (or start the tunnel with --host-header backend)")


def _tunnel_checks(state: CliState) -> list[dict[str, Any]]:
    """Each running tunnel and the Host refusals of its backend (none when no daemon runs)."""
    from ..daemon.client import DaemonClient
    from ..hostcheck import check_described

    client = DaemonClient(state.layout)
    info = client.ping()
    if info is None:
        return []
    result = []
    for item in client.request("list"):
        refusals = check_described([item], info)
        result.append({"name": item["name"], "refusals": [r.to_dict() for r in refusals]})
    return result


@hookimpl
def gotunnel_register_commands(cli: click.Group) -> None:
    cli.add_command(doctor)
