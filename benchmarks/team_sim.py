"""The team-edge simulation: many agents, tunnels and edges in one process against real hubs and
a real etcd (see docs/team-edge.md, "Simulation").

    python -m benchmarks.team_sim [--agents 1000] [--tunnels 10] [--edges 50] [--hubs 2] [--out FILE]

- etcd (Debian etcd-server) and the hubs (`gotunnel hub`) run as real processes on loopback.
- Edges are delta-ADS clients in this process (not 50 Envoys: this machine cannot run 50):
  each holds its own edge certificate, opens the same mutual-TLS stream an Envoy opens and
  subscribes to every listener, cluster, route configuration and secret.
- Agents are agent-API clients in this process, each with its own member certificate and
  session, publishing `--tunnels` names each.

Measured: for every name, the time from the agent's publication until every edge holds
everything Envoy needs to serve it (p50/p99), in two phases:

- bulk start: every agent connects and publishes all its names at once (`--rate 0`, the
  default; or agents arriving at `--rate` per second); reported with the time until every
  name is on every edge (full convergence);
- steady state: once the bulk phase converged and the edges are in sync with the whole team,
  single new names arrive at a realistic rate (`--steady` of them, one every
  `--steady-interval` seconds).

Also each hub's CPU seconds per phase and peak RSS, and the load average, since the machine
may be shared. The simulator (agents and edges) is this process; the hubs and etcd are their
own processes, so the simulator's CPU never counts as the hubs'.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import psutil

from benchmarks.util import free_port, stop_pid
from gotunnel_core.certs.authority import key_to_pem, new_private_key
from gotunnel_core.team import api
from gotunnel_core.team.agent import CONNECT_TIMEOUT
from gotunnel_core.team.identity import issue_member, pem, team_ca
from gotunnel_envoy.team import protos
from gotunnel_envoy.team.resources import CLUSTER, LISTENER, ROUTE, SCOPED, SECRET

GOTUNNEL = [sys.executable, "-m", "gotunnel_core"]
DOMAIN = "sim.test"


@dataclass
class Tracker:
    """When each name was published, and when each edge first held its cluster and its route."""

    edges: int
    published: dict[str, float] = field(default_factory=dict)
    phase: dict[str, str] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)
    done: dict[str, float] = field(default_factory=dict)
    accepted: dict[str, float] = field(default_factory=dict)  # when the hub answered the publication
    all_done: asyncio.Event = field(default_factory=asyncio.Event)
    expected: int = 0

    def edge_has(self, fqdn: str, now: float) -> None:
        count = self.seen.get(fqdn, 0) + 1
        self.seen[fqdn] = count
        if count == self.edges and fqdn in self.published:
            self.done[fqdn] = now
            if len(self.done) >= self.expected:
                self.all_done.set()

    def latencies(self, phase: str) -> list[float]:
        return sorted(self.done[n] - self.published[n] for n in self.done if self.phase.get(n) == phase)


@dataclass
class SimEdge:
    """A delta-ADS client standing in for one Envoy edge. A name counts as present when the
    edge holds everything Envoy needs to serve it: its cluster, its virtual host, its user's
    scope, and a certificate (SDS secret) that names its user's wildcard."""

    index: int
    tracker: Tracker
    clusters: set[str] = field(default_factory=set)
    vhosts: set[str] = field(default_factory=set)
    scopes: set[str] = field(default_factory=set)
    certified: set[str] = field(default_factory=set)  # groups some bucket certificate names
    waiting: dict[str, set[str]] = field(default_factory=dict)  # group -> names not complete yet
    complete: set[str] = field(default_factory=set)
    bytes: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    versions: dict[str, dict[str, str]] = field(default_factory=dict)
    reconnects: int = 0

    def _check(self, fqdn: str, now: float) -> None:
        if fqdn in self.complete:
            return
        local = fqdn[: -len(DOMAIN) - 1]
        group = "*." + fqdn.split(".", 1)[1]
        if (fqdn in self.vhosts and f"tunnel_{local}" in self.clusters and group in self.certified
                and f"scope_{fqdn}" in self.scopes):
            self.complete.add(fqdn)
            self.waiting.get(group, set()).discard(fqdn)
            self.tracker.edge_has(fqdn, now)
        else:
            self.waiting.setdefault(group, set()).add(fqdn)

    def _group_ready(self, group: str, now: float) -> None:
        for fqdn in list(self.waiting.get(group, ())):
            self._check(fqdn, now)

    def handle(self, response: Any) -> None:
        now = time.monotonic()
        size = response.ByteSize()
        self.bytes += size
        kind = response.type_url.rsplit(".", 1)[-1]
        self.by_type[kind] = self.by_type.get(kind, 0) + size
        if response.type_url == CLUSTER:
            for res in response.resources:
                self.clusters.add(res.name)
                self._check(f"{res.name[len('tunnel_'):]}.{DOMAIN}", now)
        elif response.type_url == ROUTE:
            from envoy.config.route.v3 import route_pb2

            for res in response.resources:
                config = route_pb2.RouteConfiguration.FromString(res.resource.value)
                for vhost in config.virtual_hosts:
                    if vhost.domains and vhost.domains[0] != "*":
                        self.vhosts.add(vhost.domains[0])
                        self._check(vhost.domains[0], now)
        elif response.type_url == SCOPED:
            for res in response.resources:
                self.scopes.add(res.name)
                self._check(res.name[len("scope_"):], now)
        elif response.type_url == SECRET:
            for res in response.resources:
                # The wildcards a bucket certificate names, read from its DER-in-PEM without
                # parsing it: the SAN strings are in the secret's bytes as they are.
                from cryptography import x509

                from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

                pem_chain = secret_pb2.Secret.FromString(res.resource.value).tls_certificate.certificate_chain.inline_string
                cert = x509.load_pem_x509_certificate(pem_chain.encode())
                names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
                for group in set(names) - self.certified:
                    self.certified.add(group)
                    self._group_ready(group, now)

    async def run(self, channel: grpc.aio.Channel, ready: asyncio.Event) -> None:
        """Subscribe to everything; like Envoy, reconnect after a broken stream and list what it
        holds (`initial_resource_versions`), so the hub sends only what changed meanwhile."""
        from envoy.config.core.v3 import base_pb2

        node = base_pb2.Node(id=f"sim-edge-{self.index}", cluster="sim")
        node.metadata.update({"bind": "0.0.0.0", "http_port": 80, "https_port": 443})
        while True:
            call = channel.stream_stream("/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources",
                                         request_serializer=protos.DeltaDiscoveryRequest.SerializeToString,
                                         response_deserializer=protos.DeltaDiscoveryResponse.FromString)
            outbox: asyncio.Queue[Any] = asyncio.Queue()
            for type_url in (CLUSTER, SECRET, LISTENER, SCOPED, ROUTE):
                outbox.put_nowait(protos.DeltaDiscoveryRequest(
                    node=node, type_url=type_url, resource_names_subscribe=["*"],
                    initial_resource_versions=self.versions.get(type_url, {})))

            async def requests(outbox: asyncio.Queue[Any] = outbox) -> Any:
                while True:
                    yield await outbox.get()

            ready.set()
            try:
                async for response in call(requests()):
                    self.handle(response)
                    held = self.versions.setdefault(response.type_url, {})
                    for res in response.resources:
                        held[res.name] = res.version
                    for name in response.removed_resources:
                        held.pop(name, None)
                    outbox.put_nowait(protos.DeltaDiscoveryRequest(type_url=response.type_url, response_nonce=response.nonce))
            except grpc.aio.AioRpcError:
                pass
            self.reconnects += 1
            await asyncio.sleep(0.2)


@dataclass
class SimAgent:
    name: str
    creds: grpc.ChannelCredentials
    hub: str
    tracker: Tracker
    outbox: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    names: list[str] = field(default_factory=list)
    accepted: asyncio.Event = field(default_factory=asyncio.Event)
    reconnects: int = 0
    connect_timeouts: int = 0

    def publish(self, names: list[str], phase: str) -> None:
        now = time.monotonic()
        for name in names:
            fqdn = f"{name}.{self.name}.{DOMAIN}"
            self.tracker.published[fqdn] = now
            self.tracker.phase[fqdn] = phase
        self.names += names
        self.outbox.put_nowait({"port": 8080, "names": list(self.names)})

    async def run(self) -> None:
        """Hold a session; like the real agent, reconnect after a broken one and publish again."""
        while True:
            try:
                await self._session()
            except grpc.aio.AioRpcError:
                pass
            self.reconnects += 1
            self.outbox = asyncio.Queue()  # what the last session did not send is superseded
            self.outbox.put_nowait({"port": 8080, "names": list(self.names)})
            await asyncio.sleep(0.2)

    async def _session(self) -> None:
        async with grpc.aio.secure_channel(self.hub, self.creds, options=api.channel_options(f"hub.{DOMAIN}")) as channel:
            # Like the real agent: a hub that does not finish the handshake in time is tried again.
            try:
                await asyncio.wait_for(channel.channel_ready(), CONNECT_TIMEOUT)
            except asyncio.TimeoutError:
                self.connect_timeouts += 1
                return
            call = channel.stream_stream(api.SESSION, request_serializer=api.encode, response_deserializer=api.decode)

            async def requests() -> Any:
                while True:
                    try:
                        yield await asyncio.wait_for(self.outbox.get(), 5)
                    except asyncio.TimeoutError:
                        yield {"ping": True}

            async for reply in call(requests()):
                if reply.get("refused"):
                    print(f"refused: {reply['refused']}", file=sys.stderr)
                if "accepted" in reply:
                    now = time.monotonic()
                    for fqdn in reply["accepted"]:
                        self.tracker.accepted.setdefault(fqdn, now)
                    self.accepted.set()


def _member_creds(ca: Any, name: str, role: str) -> grpc.ChannelCredentials:
    key = new_private_key()
    cert = issue_member(ca, key.public_key(), name, role, timedelta(days=1))
    return api.client_credentials(ca.cert_pem(), pem(cert), key_to_pem(key))


def _percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    index = min(len(values) - 1, max(0, round(p / 100 * len(values) + 0.5) - 1))
    return values[index]


class HubMonitor:
    """Peak RSS and CPU seconds of the hub processes, sampled every 0.2 s."""

    def __init__(self, pids: list[int]) -> None:
        self.procs = [psutil.Process(p) for p in pids]
        self.peak = [0] * len(pids)
        self.start_cpu = [sum(p.cpu_times()[:2]) for p in self.procs]
        self.start = time.monotonic()

    async def run(self) -> None:
        while True:
            for i, proc in enumerate(self.procs):
                try:
                    self.peak[i] = max(self.peak[i], proc.memory_info().rss)
                except psutil.NoSuchProcess:
                    pass
            await asyncio.sleep(0.2)

    def rss_now(self) -> list[float]:
        """Each hub's RSS in MiB now (the peak is mostly the bulk phase's transient buffers)."""
        return [round(p.memory_info().rss / 2**20, 1) for p in self.procs]

    def cpu_now(self) -> list[float]:
        return [sum(p.cpu_times()[:2]) for p in self.procs]

    def report(self) -> list[dict[str, float]]:
        elapsed = time.monotonic() - self.start
        out = []
        for i, proc in enumerate(self.procs):
            cpu = sum(proc.cpu_times()[:2]) - self.start_cpu[i]
            out.append({"peak_rss_mib": round(self.peak[i] / 2**20, 1), "cpu_seconds": round(cpu, 1),
                        "cpu_percent_of_one_core": round(100 * cpu / elapsed, 1)})
        return out


async def simulate(args: argparse.Namespace, hubs: list[str], hub_pids: list[int], ca: Any) -> dict[str, Any]:
    tracker = Tracker(args.edges, expected=args.agents * args.tunnels)
    monitor = HubMonitor(hub_pids)
    monitor_task = asyncio.create_task(monitor.run())
    hub_name = f"hub.{DOMAIN}"
    edges = [SimEdge(i, tracker) for i in range(args.edges)]
    channels = []
    tasks = []
    for edge in edges:
        channel = grpc.aio.secure_channel(hubs[edge.index % len(hubs)], _member_creds(ca, f"edge{edge.index}", "edge"),
                                          options=[*api.channel_options(hub_name), ("grpc.max_receive_message_length", 256 << 20)])
        channels.append(channel)
        ready = asyncio.Event()
        tasks.append(asyncio.create_task(edge.run(channel, ready)))
        await ready.wait()
    t0 = time.monotonic()
    agents = [SimAgent(f"u{i}", _member_creds(ca, f"u{i}", "agent"), hubs[i % len(hubs)], tracker) for i in range(args.agents)]
    print(f"{args.edges} edges subscribed; {args.agents} agent certificates issued in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    load_before = os.getloadavg()
    bulk_cpu = monitor.cpu_now()
    bulk_start = time.monotonic()
    for i, agent in enumerate(agents):
        tasks.append(asyncio.create_task(agent.run()))
        agent.publish([f"t{j}" for j in range(args.tunnels)], "bulk")
        if args.rate > 0:
            delay = bulk_start + (i + 1) / args.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
    try:
        await asyncio.wait_for(tracker.all_done.wait(), args.timeout)
    except asyncio.TimeoutError:
        print(f"timeout: {len(tracker.done)} of {tracker.expected} names on every edge", file=sys.stderr)
    bulk_seconds = time.monotonic() - bulk_start
    print(f"bulk phase: {len(tracker.done)} names on every edge after {bulk_seconds:.1f} s", file=sys.stderr)
    # Steady phase: one new name at a time on the full team (after the bulk phase's leftovers:
    # lease keep-alives and pings go on, nothing else is queued).
    bulk_cpu = [round(after - before, 1) for before, after in zip(bulk_cpu, monitor.cpu_now())]
    bulk_peak, bulk_end_rss = [round(p / 2**20, 1) for p in monitor.peak], monitor.rss_now()
    await asyncio.sleep(args.settle)
    steady_cpu = monitor.cpu_now()
    steady_start = time.monotonic()
    tracker.all_done.clear()
    tracker.expected += args.steady
    for k in range(args.steady):
        agents[(k * 37) % len(agents)].publish([f"s{k}"], "steady")
        await asyncio.sleep(args.steady_interval)
    try:
        await asyncio.wait_for(tracker.all_done.wait(), 60)
    except asyncio.TimeoutError:
        print("steady phase: timeout", file=sys.stderr)
    steady_cpu = [after - before for before, after in zip(steady_cpu, monitor.cpu_now())]
    result: dict[str, Any] = {
        "steady_hub_cpu_ms_per_registration": [round(c * 1000 / max(1, args.steady), 1) for c in steady_cpu],
        "steady_hub_cpu_seconds": [round(c, 1) for c in steady_cpu], "bulk_hub_cpu_seconds": bulk_cpu,
        "steady_seconds": round(time.monotonic() - steady_start, 1),
        "hub_rss_mib": {"peak_in_bulk": bulk_peak, "after_bulk": bulk_end_rss, "after_steady": monitor.rss_now()},
        "load_average_1_5_15": {"before": [round(x, 2) for x in load_before],
                                "after": [round(x, 2) for x in os.getloadavg()]}}
    for phase in ("bulk", "steady"):
        values = tracker.latencies(phase)
        result[phase] = {"names": len(values), "p50_ms": round(_percentile(values, 50) * 1000, 1),
                         "p99_ms": round(_percentile(values, 99) * 1000, 1),
                         "max_ms": round(values[-1] * 1000, 1) if values else None,
                         "mean_ms": round(statistics.fmean(values) * 1000, 1) if values else None}
    result["bulk"]["seconds"] = round(bulk_seconds, 1)  # first publication to every name on every edge
    result["bulk"]["converged"] = len(tracker.latencies("bulk")) == args.agents * args.tunnels
    for phase in ("bulk", "steady"):
        hub_side = sorted(tracker.accepted[n] - tracker.published[n] for n in tracker.accepted if tracker.phase.get(n) == phase)
        result[phase]["accepted_by_hub_p50_ms"] = round(_percentile(hub_side, 50) * 1000, 1)
        result[phase]["accepted_by_hub_p99_ms"] = round(_percentile(hub_side, 99) * 1000, 1)
    result["hubs"] = monitor.report()
    result["edge_bytes_received_mib"] = round(sum(e.bytes for e in edges) / 2**20, 1)
    result["reconnects"] = {"edges": sum(e.reconnects for e in edges), "agents": sum(a.reconnects for a in agents),
                            "agent_connect_timeouts": sum(a.connect_timeouts for a in agents)}
    kinds = {k for e in edges for k in e.by_type}
    result["edge_bytes_by_type_mib"] = {k: round(sum(e.by_type.get(k, 0) for e in edges) / 2**20, 1) for k in sorted(kinds)}
    own = psutil.Process().cpu_times()
    result["simulator_cpu_seconds"] = round(own.user + own.system, 1)  # agents + edges in this one process
    monitor_task.cancel()
    for task in tasks:
        task.cancel()
    for channel in channels:
        await channel.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--tunnels", type=int, default=10, help="names per agent")
    parser.add_argument("--edges", type=int, default=50)
    parser.add_argument("--hubs", type=int, default=2)
    parser.add_argument("--rate", type=float, default=0.0,
                        help="agents arriving per second in the bulk phase (0: all at once)")
    parser.add_argument("--steady", type=int, default=300, help="single registrations in the steady phase")
    parser.add_argument("--steady-interval", type=float, default=0.05)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds between the bulk and the steady phase")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="gotunnel-sim-"))
    procs: list[subprocess.Popen] = []
    try:
        client, peer = free_port(), free_port()
        url = f"http://127.0.0.1:{client}"
        procs.append(subprocess.Popen(
            ["etcd", "--name", "sim", "--data-dir", str(work / "etcd"), "--listen-client-urls", url,
             "--advertise-client-urls", url, "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}", "--initial-cluster", f"sim=http://127.0.0.1:{peer}",
             "--quota-backend-bytes", str(4 << 30)],
            stdout=open(work / "etcd.log", "wb"), stderr=subprocess.STDOUT))
        admin = work / "admin"
        deadline = time.monotonic() + 30
        while subprocess.run([*GOTUNNEL, "--state-dir", str(admin), "team", "init", "--domain", DOMAIN, "--etcd", url],
                             capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise SystemExit("etcd did not start (see " + str(work / "etcd.log") + ")")
            time.sleep(0.2)
        hubs = []
        for i in range(args.hubs):
            port = free_port()
            hubs.append(f"127.0.0.1:{port}")
            procs.append(subprocess.Popen([*GOTUNNEL, "hub", "--listen", hubs[-1], "--etcd", url, "--lease-ttl", "30", "--warm-up", "0"],
                                          stdout=open(work / f"hub{i}.log", "wb"), stderr=subprocess.STDOUT))
        for hub in hubs:
            host, port = hub.rsplit(":", 1)
            deadline = time.monotonic() + 30
            while True:
                try:
                    import socket

                    socket.create_connection((host, int(port)), 1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"hub {hub} did not start (see {work})") from None
                    time.sleep(0.1)
        ca = team_ca(admin / "team" / "ca", DOMAIN)
        result = asyncio.run(simulate(args, hubs, [p.pid for p in procs[1:]], ca))
        result["config"] = {k: v for k, v in vars(args).items() if k != "out"}
        result["machine"] = {"cpu": _cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
                             "etcd": subprocess.run(["etcd", "--version"], capture_output=True, text=True).stdout.split("\n")[0]}
        text = json.dumps(result, indent=2)
        print(text)
        if args.out:
            args.out.write_text(text + "\n")
    finally:
        for proc in reversed(procs):
            stop_pid(proc.pid)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
