"""`gotunnel team init|invite|revoke|show` and `gotunnel agent`: team mode's core commands.

The hub and the edge are Envoy-specific and come from the Envoy plugin (`gotunnel hub`,
`gotunnel edge`). Everything heavy (grpc, aetcd, cryptography) is imported inside commands;
the work is done by `gotunnel_core.team`.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import click

from ..errors import RuntimeFailure, UsageError
from ..hookspecs import hookimpl
from ..team.etcdtls import etcd_tls_options


def _team_dir(state: Any) -> Path:
    return state.layout.root / "team"


def _local_team(state: Any) -> tuple[Any, Any]:
    """The team CA and Team of this state directory (made by `team init`)."""
    from ..team.identity import Team, team_ca

    try:
        info = json.loads((_team_dir(state) / "team.json").read_text())
    except (OSError, ValueError):
        raise RuntimeFailure(f"no team here ({_team_dir(state)})",
                             hint="run `gotunnel team init --domain DOMAIN` on the machine that holds the team CA") from None
    team = Team(info["domain"], info["template"])
    return team_ca(_team_dir(state) / "ca", team.domain), team


def _etcd_client(urls: str, tls: Any) -> Any:
    from ..team import quiet_grpc_core

    quiet_grpc_core()
    try:
        from ..team.etcd import Etcd
    except ImportError as exc:
        raise RuntimeFailure(f"team mode needs its extra: {exc.name} is not installed",
                             hint="pip install 'gotunnel-core[team]'") from None
    return Etcd.from_urls(urls, tls)


async def _with_etcd(urls: str, tls: Any, action: Any) -> Any:
    etcd = _etcd_client(urls, tls)
    try:
        return await action(etcd)
    except Exception as exc:
        import grpc

        from ..team.etcd import unreachable

        if isinstance(exc, grpc.aio.AioRpcError):
            raise RuntimeFailure(unreachable(urls, exc, tls),
                                 hint="check --etcd (and --etcd-ca/--etcd-cert/--etcd-key) and that etcd runs") from None
        raise
    finally:
        await etcd.close()


def _etcd_tls(state: Any, urls: str, ca: str | None, cert: str | None, key: str | None) -> Any:
    from ..team import quiet_grpc_core

    quiet_grpc_core()
    from ..team.etcd import parse_endpoints
    from ..team.etcdtls import resolve_etcd_tls

    parse_endpoints(urls)
    return resolve_etcd_tls(urls, state.settings.values, ca, cert, key)


@click.group()
def team() -> None:
    """Team mode: a team CA, invitations, revocations (hubs: `gotunnel hub`)."""


@team.command("init")
@click.option("--domain", required=True, metavar="DOMAIN", help="The team domain, e.g. dev.example.com.")
@click.option("--template", default="{name}.{user}", show_default=True, help="Published names under the domain.")
@click.option("--etcd", "etcd_urls", metavar="URL[,URL...]", help="Also store the team in this etcd (hubs read it there).")
@etcd_tls_options
@click.pass_obj
def team_init(state: Any, domain: str, template: str, etcd_urls: str | None, etcd_ca: str | None,
              etcd_cert: str | None, etcd_key: str | None) -> None:
    """Create the team CA (name-constrained to DOMAIN) in this state directory."""
    from ..certs.names import validate_suffix
    from ..fsutil import atomic_write, ensure_private_dir
    from ..team.identity import Team, fingerprint, parse_template, team_ca

    tls = _etcd_tls(state, etcd_urls, etcd_ca, etcd_cert, etcd_key) if etcd_urls else None
    domain = validate_suffix(domain.lower().rstrip("."))
    wanted = Team(domain, parse_template(template))
    state.layout.ensure()
    directory = ensure_private_dir(_team_dir(state))
    record = directory / "team.json"
    if record.exists():
        _, existing = _local_team(state)
        if existing != wanted:
            raise UsageError(f"this state directory already holds team {existing.domain!r} ({existing.template})",
                             hint="use another --state-dir for another team")
    ca = team_ca(directory / "ca", domain)
    ca.ensure()
    atomic_write(record, json.dumps({"domain": domain, "template": wanted.template}, indent=2) + "\n", mode=0o600)
    click.echo(f"team {domain}: CA {ca.cert_path} (sha256 {fingerprint(ca.certificate)[:16]}...)")
    if etcd_urls:
        from ..team.store import TeamRecord, publish_team

        rec = TeamRecord(wanted, ca.cert_pem(), ca.key_path.read_bytes())
        stored = asyncio.run(_with_etcd(etcd_urls, tls, lambda etcd: publish_team(etcd, rec)))
        click.echo(f"{'stored the team in' if stored else 'the team was already in'} etcd {etcd_urls}")


@team.command("invite")
@click.argument("name")
@click.option("--ttl", default="1h", show_default=True, help="How long the token stays usable (e.g. 30m, 1h, 2d).")
@click.option("--role", type=click.Choice(["agent", "edge"]), default="agent", show_default=True,
              help="What the token enrols: an agent (publishes names) or an edge (serves them).")
@click.pass_obj
def team_invite(state: Any, name: str, ttl: str, role: str) -> None:
    """Print a one-time enrolment token for member NAME."""
    from ..team.identity import parse_member_name
    from ..team.tokens import invite, parse_ttl

    name = parse_member_name(name)
    duration = parse_ttl(ttl)
    ca, _ = _local_team(state)
    click.echo(invite(ca, name, role, duration))


@team.command("revoke")
@click.argument("name")
@click.option("--etcd", "etcd_urls", required=True, metavar="URL[,URL...]", help="The team's etcd.")
@etcd_tls_options
@click.pass_obj
def team_revoke(state: Any, name: str, etcd_urls: str, etcd_ca: str | None, etcd_cert: str | None,
                etcd_key: str | None) -> None:
    """Refuse member NAME from now on: its sessions end and its names go."""
    import time

    from ..team.identity import parse_member_name

    name = parse_member_name(name)
    tls = _etcd_tls(state, etcd_urls, etcd_ca, etcd_cert, etcd_key)  # first: it quiets gRPC before grpc loads
    from ..team.store import REVOKED

    asyncio.run(_with_etcd(etcd_urls, tls, lambda etcd: etcd.put(REVOKED + name, json.dumps({"at": time.time()}).encode())))
    click.echo(f"revoked {name}")


@team.command("show")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def team_show(state: Any, as_json: bool) -> None:
    """The team of this state directory: domain, template, CA."""
    from ..team.identity import fingerprint

    ca, info = _local_team(state)
    data = {"domain": info.domain, "template": info.template, "ca": str(ca.cert_path),
            "ca_sha256": fingerprint(ca.certificate), "permitted_dns": list(ca.info().permitted_dns)}
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    for key, value in data.items():
        click.echo(f"{key:<14} {value}")


@click.command()
@click.option("--hub", "hubs", required=True, metavar="ADDR:PORT[,...]", help="The team's hubs, in failover order.")
@click.option("--token", metavar="TOKEN", help="One-time token from `gotunnel team invite` (first run only).")
@click.option("--tls-port", "tls_port", default="7444", show_default=True,
              help="Port of the TLS listener edges reach this machine on (0: any free port).")
@click.option("--tls-address", "tls_bind", default="0.0.0.0", show_default=True,
              help="Address of that listener.")
@click.option("--plain-http", "plain_http", is_flag=True,
              help="Publish the engine's HTTP port instead: edges reach it unencrypted (anyone on the LAN can read "
                   "and impersonate it).")
@click.pass_obj
def agent(state: Any, hubs: str, token: str | None, tls_port: str, tls_bind: str, plain_http: bool) -> None:
    """Publish this machine's tunnels to the team as NAME.USER.<team domain>."""
    from ..team import quiet_grpc_core

    quiet_grpc_core()
    from ..team.agent import Agent, daemon_source
    from ..team.api import parse_hubs
    from ..models import parse_bind, parse_port
    from ..team.agentlink import AgentLink
    from ..team.identity import can_serve
    from ..team.member import ensure, member_dir, renew

    hub_list = parse_hubs(hubs)
    port = 0 if str(tls_port) == "0" else parse_port(tls_port, "--tls-port")
    bind = parse_bind(tls_bind)
    layout = state.layout.ensure()
    directory = member_dir(layout.root, "agent")
    creds = ensure(hub_list, token, directory, "agent")
    link = None
    if not plain_http:
        if not can_serve(creds.cert_pem):  # enrolled before the TLS hop: a certificate that can serve it
            creds = renew(hub_list, creds, directory)
        link = AgentLink(directory / "cert.pem", directory / "key.pem", port, bind)
    click.echo(f"agent {creds.name} of team {creds.team.domain}: publishing through {', '.join(hub_list)}"
               + (" (plain HTTP)" if plain_http else f" (TLS on {bind}:{port})"), err=True)
    runner = Agent(creds, hub_list, daemon_source(layout), status_dir=directory, link=link)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await runner.run(stop)

    try:
        asyncio.run(main())
    except PermissionError as exc:
        raise RuntimeFailure(f"the hub refused this agent: {exc}",
                             hint="ask the team for a new invitation (`gotunnel team invite NAME`)") from None
    except OSError as exc:
        raise RuntimeFailure(f"cannot listen on {bind}:{port} for the edges: {exc.strerror or exc}",
                             hint="pick another --tls-port") from None


@hookimpl
def gotunnel_register_commands(cli: click.Group) -> None:
    cli.add_command(team)
    cli.add_command(agent)
