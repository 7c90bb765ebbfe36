"""`gotunnel hub` and `gotunnel edge`, added to the CLI by the Envoy plugin's
`gotunnel_register_commands` hook (grpc and the xDS protos load only when one runs)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import click

from gotunnel_core.errors import RuntimeFailure
from gotunnel_core.team.etcdtls import etcd_tls_options


def _needs_team_extra() -> None:
    from gotunnel_core.team import quiet_grpc_core

    quiet_grpc_core()
    try:
        import aetcd  # noqa: F401
        import grpc  # noqa: F401
        from envoy.service.discovery.v3 import ads_pb2  # noqa: F401
    except ImportError as exc:
        raise RuntimeFailure(f"team mode needs its extra: {exc.name} is not installed",
                             hint="pip install 'gotunnel-envoy[team]'") from None


def _listen_address(raw: str) -> str:
    from gotunnel_core.errors import ValidationError
    from gotunnel_core.models import parse_bind, parse_port

    host, sep, port = raw.rpartition(":")
    if not sep:
        raise ValidationError("--listen", raw, "expected ADDR:PORT, e.g. 0.0.0.0:7443")
    bind = parse_bind(host.strip("[]"))
    return f"[{bind}]:{parse_port(port, '--listen port')}" if ":" in bind else f"{bind}:{parse_port(port, '--listen port')}"


@click.command()
@click.option("--listen", required=True, metavar="ADDR:PORT", help="The hub's port (xDS and agent API, mutual TLS).")
@click.option("--etcd", "etcd_urls", required=True, metavar="URL[,URL...]", help="The team's etcd cluster.")
@etcd_tls_options
@click.option("--lease-ttl", default=10, show_default=True, type=click.IntRange(2, 3600),
              help="Seconds an agent's names outlive the agent when it vanishes without a word.")
@click.option("--edge-cert-validity", default=7 * 86400, show_default=True, type=click.IntRange(30, 397 * 86400),
              help="Seconds an edge certificate (the team's names) is valid; rotated when a third is left.")
@click.option("--member-cert-validity", default=30 * 86400, show_default=True, type=click.IntRange(60, 397 * 86400),
              help="Seconds a member (agent or edge) certificate issued here is valid; renewed when a third is left.")
@click.option("--warm-up", "warm_up", type=click.IntRange(0, 3600), metavar="SECONDS",
              help="Seconds after start before edges get answers, so agents re-register first after an outage of "
                   "every hub [default: the lease TTL + 5].")
@click.option("--hub-cert-validity", default=30 * 86400, show_default=True, type=click.IntRange(60, 397 * 86400),
              help="Seconds the hub's own server certificate is valid; renewed when a third is left.")
@click.pass_obj
def hub(state: Any, listen: str, etcd_urls: str, etcd_ca: str | None, etcd_cert: str | None, etcd_key: str | None,
        lease_ttl: int, edge_cert_validity: int, warm_up: int | None, member_cert_validity: int,
        hub_cert_validity: int) -> None:
    """Run a team hub: the xDS control plane for edges and the API for agents."""
    _needs_team_extra()
    from gotunnel_core.team.etcd import parse_endpoints
    from gotunnel_core.team.etcdtls import resolve_etcd_tls

    from .hub import HubOptions, run

    parse_endpoints(etcd_urls)
    tls = resolve_etcd_tls(etcd_urls, state.settings.values, etcd_ca, etcd_cert, etcd_key)
    run(HubOptions(_listen_address(listen), etcd_urls, lease_ttl, timedelta(seconds=edge_cert_validity), tls,
                   hub_cert_validity=timedelta(seconds=hub_cert_validity),
                   member_cert_validity=timedelta(seconds=member_cert_validity), warm_up=warm_up))


@click.command()
@click.option("--hub", "hubs", required=True, metavar="ADDR:PORT[,...]", help="The team's hubs (failover between them).")
@click.option("--token", metavar="TOKEN", help="One-time token from `gotunnel team invite NAME --role edge` (first run).")
@click.option("--http-port", "http_port", default="80", show_default=True, help="Plain HTTP port (redirects to HTTPS).")
@click.option("--https-port", "https_port", default="443", show_default=True, help="HTTPS port serving the team's names.")
@click.option("--listen-address", "bind", default="0.0.0.0", show_default=True, help="Address the edge listens on.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Envoy worker threads.")
@click.pass_obj
def edge(state: Any, hubs: str, token: str | None, http_port: str, https_port: str, bind: str, workers: int) -> None:
    """Run a team edge: an Envoy configured by the hubs over delta xDS."""
    _needs_team_extra()
    from gotunnel_core.models import Listen, parse_bind, parse_port
    from gotunnel_core.team.api import parse_hubs
    from gotunnel_core.team.member import ensure, member_dir

    from .edge import EdgeOptions, run

    hub_list = parse_hubs(hubs)
    listen = Listen(parse_bind(bind), parse_port(http_port, "--http-port"), parse_port(https_port, "--https-port"))
    layout = state.layout.ensure()
    directory = member_dir(layout.root, "edge")
    creds = ensure(hub_list, token, directory, "edge")
    click.echo(f"edge {creds.name} of team {creds.team.domain}: https://*.{creds.team.domain}:{listen.https_port}", err=True)
    run(creds, EdgeOptions(tuple(hub_list), listen, directory, workers), dict(state.settings.values))


def register(cli: click.Group) -> None:
    cli.add_command(hub)
    cli.add_command(edge)
