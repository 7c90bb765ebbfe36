"""Container labels and backend addresses, without a Docker engine: the pure half of the provider."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, strategies as st

from gotunnel_core.docker.address import ContainerView, Network, choose_port, resolve
from gotunnel_core.docker.labels import parse_labels
from gotunnel_core.docker.provider import build_tunnels
from gotunnel_core.docker.routes import container_routes
from gotunnel_core.errors import UsageError

HOST = [ipaddress.ip_interface("127.0.0.1/8"), ipaddress.ip_interface("172.30.0.1/16")]
EXPLAINER = "http://127.0.0.1:9"


def view(**kw: object) -> ContainerView:
    base: dict[str, object] = {"id": "c0ffee" * 10, "name": "web-1", "labels": {}, "network_mode": "bridge"}
    base.update(kw)
    return ContainerView(**base)  # type: ignore[arg-type]


def test_one_tunnel_with_every_field() -> None:
    tunnels, problems = parse_labels({"gotunnel.name": "Web", "gotunnel.port": "8080", "gotunnel.https": "false",
                                      "gotunnel.health": "/healthz", "other.label": "x"})
    assert problems == []
    assert [(t.key, t.name, t.port, t.https, t.health) for t in tunnels] == [("", "web", 8080, False, "/healthz")]


def test_several_tunnels_per_container() -> None:
    tunnels, problems = parse_labels({"gotunnel.api.name": "api", "gotunnel.api.port": "9000",
                                      "gotunnel.admin.name": "admin.shop", "gotunnel.name": "shop"})
    assert problems == []
    assert sorted((t.name, t.port) for t in tunnels) == [("admin.shop", None), ("api", 9000), ("shop", None)]


def test_bad_labels_name_the_label_and_keep_the_good_tunnels() -> None:
    tunnels, problems = parse_labels({
        "gotunnel.name": "bad name", "gotunnel.api.name": "api", "gotunnel.api.port": "70000",
        "gotunnel.ok.name": "ok", "gotunnel.dup.name": "ok", "gotunnel.prot": "80", "gotunnel.x.port": "1",
    })
    assert [t.name for t in tunnels] == ["ok"]
    text = sorted(str(p) for p in problems)
    assert any(p.startswith("label gotunnel.name='bad name'") for p in text)
    assert any(p.startswith("label gotunnel.api.port='70000'") and "65535" in p for p in text)
    assert any(p.startswith("label gotunnel.ok.name='ok'") and "duplicate" in p for p in text)  # `dup` sorts first
    assert any(p.startswith("label gotunnel.prot='80'") and "unknown label" in p for p in text)
    assert any(p.startswith("label gotunnel.x.name=''") and "missing" in p for p in text)


@given(st.dictionaries(st.text(min_size=1, max_size=30).map(lambda s: "gotunnel." + s), st.text(max_size=40), max_size=8))
def test_any_labels_either_parse_or_are_reported(labels: dict[str, str]) -> None:
    tunnels, problems = parse_labels(labels)
    for tunnel in tunnels:
        assert labels[tunnel.label("name")]
        assert tunnel.port is None or 1 <= tunnel.port <= 65535
    assert all(p.label in labels or p.label.endswith(".name") for p in problems)
    assert len({t.name for t in tunnels}) == len(tunnels)


def test_port_is_the_label_else_the_only_exposed_one() -> None:
    assert choose_port(view(exposed=(80,)), None) == (80, "")
    assert choose_port(view(exposed=(80, 443)), 8080) == (8080, "")
    port, why = choose_port(view(exposed=(80, 443)), None)
    assert port is None and "80, 443" in why and "gotunnel.port" in why
    assert choose_port(view(), None)[0] is None


def test_address_host_network_then_shared_network_then_published_port() -> None:
    assert resolve(view(network_mode="host"), 3000, HOST).url == "http://127.0.0.1:3000"
    shared = view(networks=(Network("app_default", "172.30.0.5", "172.30.0.0/16"),))
    assert resolve(shared, 80, HOST).url == "http://172.30.0.5:80"
    other = view(networks=(Network("backend", "10.99.0.5", "10.99.0.0/24"),), published={80: (("0.0.0.0", 32768),)})
    assert resolve(other, 80, HOST).url == "http://127.0.0.1:32768"
    bound = view(networks=(Network("backend", "10.99.0.5", "10.99.0.0/24"),), published={80: (("127.0.0.2", 5000),)})
    assert resolve(bound, 80, HOST).url == "http://127.0.0.2:5000"


def test_unreachable_says_why_and_what_to_change() -> None:
    isolated = view(networks=(Network("backend", "10.99.0.5", "10.99.0.0/24"),), published={443: (("", 1),)})
    result = resolve(isolated, 80, HOST)
    assert result.url is None
    assert "backend (10.99.0.0/24)" in result.reason and "no host port for 80/tcp" in result.reason
    assert "web-1" in result.reason and "publish" in result.fix and "network_mode: host" in result.fix
    assert "network mode none" in resolve(view(network_mode="none"), 80, HOST).reason


def test_build_tunnels_oldest_container_keeps_a_shared_name() -> None:
    old = view(id="a" * 64, name="old", created="2026-01-01T00:00:00Z", network_mode="host",
               labels={"gotunnel.name": "web", "gotunnel.port": "3000"})
    new = view(id="b" * 64, name="new", created="2026-02-01T00:00:00Z", network_mode="host",
               labels={"gotunnel.name": "web", "gotunnel.port": "3001"})
    none = view(id="c" * 64, name="nowhere", network_mode="none", labels={"gotunnel.name": "lost", "gotunnel.port": "80"})
    noport = view(id="d" * 64, name="noport", network_mode="host", labels={"gotunnel.name": "np"})
    tunnels, problems = build_tunnels([new, none, old, noport], EXPLAINER, HOST)
    by_name = {t.tunnel.name: t for t in tunnels}
    assert by_name["web"].origin.startswith("container old ") and by_name["web"].tunnel.backends[0].port == 3000
    assert [p.origin.split()[1] for p in problems] == ["new"] and "duplicate" in problems[0].problem
    assert by_name["lost"].problem and by_name["lost"].tunnel.backends[0].url == EXPLAINER
    assert by_name["np"].problem and "gotunnel.port" in by_name["np"].fix
    assert all(t.source == "docker" for t in tunnels)


def test_compose_containers_name_their_project_and_service() -> None:
    compose = view(labels={"com.docker.compose.project": "shop", "com.docker.compose.service": "api"})
    assert compose.origin == f"container web-1 ({compose.id[:12]}, service api of Compose project shop)"


def test_view_from_docker_inspect() -> None:
    attrs = {
        "Id": "f" * 64, "Name": "/shop-api-1", "Created": "2026-03-01T10:00:00.1Z", "State": {"Running": True},
        "Config": {"Labels": {"gotunnel.name": "api"}, "ExposedPorts": {"8000/tcp": {}, "53/udp": {}}},
        "HostConfig": {"NetworkMode": "shop_default"},
        "NetworkSettings": {"Networks": {"shop_default": {"IPAddress": "172.30.0.7", "IPPrefixLen": 16}},
                            "Ports": {"8000/tcp": [{"HostIp": "0.0.0.0", "HostPort": "49153"}], "53/udp": None}},
    }
    v = ContainerView.from_inspect(attrs)
    assert (v.name, v.exposed, v.network_mode) == ("shop-api-1", (8000,), "shop_default")
    assert v.networks == (Network("shop_default", "172.30.0.7", "172.30.0.0/16"),)
    assert v.published == {8000: (("0.0.0.0", 49153),)}


def test_explainer_gives_details_to_this_machine_only() -> None:
    """The 502 explainer answers by Host; container details only for a loopback client (by the
    X-Forwarded-For entry the engine appends), not for a LAN peer asking for NAME.local."""
    import asyncio

    from gotunnel_core.daemon.explainer import Explainer

    async def ask(explainer: Explainer, forwarded_for: str) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", explainer.port)
        writer.write(f"GET / HTTP/1.1\r\nHost: lonely.local:8080\r\nX-Forwarded-For: {forwarded_for}\r\n\r\n".encode())
        data = await reader.read()
        writer.close()
        return data

    async def main() -> tuple[bytes, bytes]:
        explainer = Explainer(lambda name: ("container secret-db-1 is on net 10.9.0.0/24", "publish it")
                              if name == "lonely" else None)
        await explainer.start()
        try:
            return await ask(explainer, "127.0.0.1"), await ask(explainer, "127.0.0.1, 192.0.2.7")
        finally:
            await explainer.close()

    local, lan = asyncio.run(main())
    assert local.startswith(b"HTTP/1.1 502 ") and b"secret-db-1" in local and b"publish it" in local
    assert lan.startswith(b"HTTP/1.1 502 ") and b"secret-db-1" not in lan and b"10.9.0.0" not in lan
    assert b"lonely" in lan and b"gotunnel status" in lan


def test_container_routes_for_sync_refuse_bad_labels_and_warn_about_conflicts_and_unreachables() -> None:
    """`sync --docker`'s view of the same rules: a bad label refuses the sync naming label and
    value; a file tunnel's name and an older container's name win with a warning; a container
    nothing reaches is left out with the fix (there is no explainer in a proxy gotunnel does not run)."""
    host = view(id="a" * 64, name="web-1", network_mode="host", created="2026-01-01",
                labels={"gotunnel.name": "web", "gotunnel.port": "8080"})
    younger = view(id="b" * 64, name="web-2", network_mode="host", created="2026-01-02",
                   labels={"gotunnel.name": "web", "gotunnel.port": "8081"})
    shadow = view(id="c" * 64, name="api-1", network_mode="host", labels={"gotunnel.name": "api", "gotunnel.port": "1"})
    lonely = view(id="d" * 64, name="lonely-1", network_mode="none", labels={"gotunnel.name": "lonely", "gotunnel.port": "80"})
    routes = container_routes([host, younger, shadow, lonely], ["api"], HOST)
    assert [(t.name, t.backends[0].url) for t in routes.tunnels] == [("web", "http://127.0.0.1:8080")]
    warnings = "\n".join(routes.warnings)
    assert "web-2" in warnings and "duplicate tunnel name" in warnings
    assert "'api' is also in the config file" in warnings
    assert "'lonely' left out" in warnings and "fix: publish the port" in warnings

    bad = view(id="e" * 64, name="bad-1", network_mode="host", labels={"gotunnel.name": "bad", "gotunnel.port": "eighty"})
    with pytest.raises(UsageError) as refused:
        container_routes([host, bad], [], HOST)
    assert refused.value.exit_code == 2 and "\n" not in refused.value.message
    assert "bad-1" in refused.value.message and "gotunnel.port='eighty'" in refused.value.message
