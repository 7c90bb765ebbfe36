"""Team mode pieces on this machine's loopback: names, the team CA's constraints (checked by
openssl), tokens, the etcd registry against a real etcd, the xDS resources, and the CLI's
error contract. The whole system in network namespaces is tests/test_team_edge.py."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from datetime import timedelta
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

@pytest.fixture()
def etcd_url(tmp_path: Path) -> Iterator[str]:
    if shutil.which("etcd") is None:
        pytest.skip("needs etcd (Debian etcd-server)")
    client, peer = free_port(), free_port()
    url = f"http://127.0.0.1:{client}"
    proc = subprocess.Popen(["etcd", "--name", "t", "--data-dir", str(tmp_path / "etcd"), "--listen-client-urls", url,
                             "--advertise-client-urls", url, "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                             "--initial-cluster", f"t=http://127.0.0.1:{peer}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import socket

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
