"""The Docker provider on a real Docker engine: labelled containers become tunnels and go away.

Containers run busybox's httpd from a `FROM scratch` image built here. This machine's dockerd runs
with `--bridge=none --iptables=false`, so containers use host networking, or a bridge network a test
creates (the host gets that network's gateway address, so the proxy shares it). Every container
and network is removed by id at teardown.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

import pytest

from gotunnel_core.testing import Gotunnel, free_port, wait_for
from gotunnel_core.testing.daemon import http_get
from docker_helpers import Tracker, busybox_image, docker_client, docker_tracker  # noqa: F401 - fixtures

pytestmark = pytest.mark.docker


def httpd(text: str, *ports: int) -> list[str]:
    """A busybox shell command serving `text` at / on each port (the last one in the foreground)."""
    serve = " && ".join(f"httpd -p {p} -h /www" for p in ports[:-1])
    script = f"mkdir -p /www && echo {text} > /www/index.html && {serve + ' && ' if serve else ''}exec httpd -f -p {ports[-1]} -h /www"
    return ["sh", "-c", script]


def body(g: Gotunnel, name: str, https: bool = False) -> tuple[int, bytes]:
    port = g.https_port if https else g.http_port
    try:
        status, _, data = http_get(port, f"{name}.localhost:{port}", https_ca=_ca(g) if https else None)
    except OSError:
        return 0, b""
    return status, data


_CAS: dict[str, str] = {}


def _ca(g: Gotunnel) -> str:
    key = str(g.state_dir)
    if key not in _CAS:
        _CAS[key] = g("cert", "ca", "--path", check=True).out.strip()
    return _CAS[key]


def listing(g: Gotunnel) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in g.json("list")["tunnels"]}


@pytest.fixture
def bb(docker_client: Any) -> str:  # noqa: F811
    return busybox_image(docker_client)


def test_labelled_container_served_over_http_and_https_then_gone(gotunnel: Gotunnel, docker_tracker: Tracker,  # noqa: F811
                                                                  bb: str) -> None:
    result = gotunnel("docker", "watch", check=True)
    assert "following the Docker engine" in result.out
    port = free_port()
    container = docker_tracker.run(bb, httpd("hello-web", port), network_mode="host",
                                   labels={"gotunnel.name": "web", "gotunnel.port": str(port)})
    started = time.monotonic()
    wait_for(lambda: body(gotunnel, "web")[0] == 200, timeout=1.0, what="web.localhost within a second of start")
    served_after = time.monotonic() - started
    assert body(gotunnel, "web") == (200, b"hello-web\n")
    assert body(gotunnel, "web", https=True) == (200, b"hello-web\n")  # certificate verified for web.localhost
    row = listing(gotunnel)["web"]
    assert row["source"] == "docker" and container.short_id in row["origin"] and row["problem"] is None
    assert row["backends"][0]["url"] == f"http://127.0.0.1:{port}"
    container.stop(timeout=2)
    wait_for(lambda: body(gotunnel, "web")[0] == 404, timeout=5, what="the tunnel to go when the container stops")
    assert "web" not in listing(gotunnel)
    print(f"served {served_after:.3f} s after the container started")


def test_container_on_a_bridge_network_is_reached_by_its_ip(gotunnel: Gotunnel, docker_tracker: Tracker,  # noqa: F811
                                                            bb: str) -> None:
    subnet = f"10.213.{random.randrange(10, 250)}.0/24"
    network = docker_tracker.network(f"gt-test-{random.randrange(1 << 30):x}", driver="bridge",
                                     ipam=_ipam(subnet))
    gotunnel("docker", "watch", check=True)
    container = docker_tracker.run(bb, httpd("on-bridge", 8080), network=network.name,
                                   labels={"gotunnel.name": "bridged", "gotunnel.port": "8080"})
    wait_for(lambda: body(gotunnel, "bridged")[0] == 200, timeout=5, what="bridged.localhost")
    assert body(gotunnel, "bridged", https=True) == (200, b"on-bridge\n")
    address = container.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
    assert listing(gotunnel)["bridged"]["backends"][0]["url"] == f"http://{address}:8080"


def test_unreachable_container_is_explained_in_status_list_and_the_502_page(gotunnel: Gotunnel,
                                                                            docker_tracker: Tracker,  # noqa: F811
                                                                            bb: str) -> None:
    gotunnel("docker", "watch", check=True)
    container = docker_tracker.run(bb, ["sleep", "600"], network_mode="none",
                                   labels={"gotunnel.name": "lonely", "gotunnel.port": "80"})
    wait_for(lambda: "lonely" in listing(gotunnel), timeout=5, what="the tunnel of the unreachable container")
    row = listing(gotunnel)["lonely"]
    assert container.name in row["problem"] and "network mode none" in row["problem"] and "80/tcp" in row["problem"]
    assert "publish the port" in row["fix"]
    for https in (False, True):
        status, page = body(gotunnel, "lonely", https=https)
        assert status == 502, page  # never a silent 503
        assert b"network mode none" in page and b"publish the port" in page and container.name.encode() in page
    text = gotunnel("status", check=True).out
    assert "unreachable:" in text and "network mode none" in text
    assert "why: " in gotunnel("list", check=True).out


def test_bad_labels_reported_by_container_and_label_others_keep_working(gotunnel: Gotunnel,
                                                                        docker_tracker: Tracker,  # noqa: F811
                                                                        bb: str) -> None:
    gotunnel("docker", "watch", check=True)
    good_port = free_port()
    good = docker_tracker.run(bb, httpd("good", good_port), network_mode="host",
                              labels={"gotunnel.name": "good", "gotunnel.port": str(good_port)})
    wait_for(lambda: body(gotunnel, "good")[0] == 200, timeout=5, what="good.localhost")
    bad_name = docker_tracker.run(bb, ["sleep", "600"], network_mode="none", labels={"gotunnel.name": "no way!"})
    bad_port = docker_tracker.run(bb, ["sleep", "600"], network_mode="host",
                                  labels={"gotunnel.name": "ported", "gotunnel.port": "70000"})
    duplicate = docker_tracker.run(bb, ["sleep", "600"], network_mode="host",
                                   labels={"gotunnel.name": "good", "gotunnel.port": "1"})

    def problems() -> list[dict[str, Any]]:
        return [p for p in gotunnel.json("status")["problems"] if p["source"] == "docker"]

    wait_for(lambda: len(problems()) == 3, timeout=5, what="three label problems in status")
    found = {p["origin"].split()[1]: p["problem"] for p in problems()}
    assert found[bad_name.name].startswith("label gotunnel.name='no way!'")
    assert found[bad_port.name].startswith("label gotunnel.port='70000'") and "65535" in found[bad_port.name]
    assert found[duplicate.name].startswith("label gotunnel.name='good'") and good.name in found[duplicate.name]
    assert body(gotunnel, "good") == (200, b"good\n") and body(gotunnel, "ported")[0] == 404
    text = gotunnel("docker", "status", check=True).out
    assert f"{bad_port.name}" in text and "gotunnel.port='70000'" in text
    log = [json.loads(line) for line in (gotunnel.state_dir / "daemon.log").read_text().splitlines() if line.startswith("{")]
    refused = [entry for entry in log if entry.get("event") == "container label refused"]
    assert {e["container"].split()[1] for e in refused} == {bad_name.name, bad_port.name, duplicate.name}


def test_a_user_tunnel_of_the_same_name_wins_and_the_conflict_is_reported(gotunnel: Gotunnel, echo_backend: Any,
                                                                         docker_tracker: Tracker,  # noqa: F811
                                                                         bb: str) -> None:
    mine = echo_backend("mine")
    gotunnel("start", "-d", "web", "-p", str(mine.port), check=True)
    gotunnel("docker", "watch", check=True)
    port = free_port()
    container = docker_tracker.run(bb, httpd("container", port), network_mode="host",
                                   labels={"gotunnel.name": "web", "gotunnel.port": str(port)})
    wait_for(lambda: any(p.get("tunnel") == "web" for p in gotunnel.json("status")["problems"]), timeout=5,
             what="the conflict in status")
    conflict = next(p for p in gotunnel.json("status")["problems"] if p.get("tunnel") == "web")
    assert container.short_id in conflict["origin"] and "user tunnel" in conflict["problem"]
    assert listing(gotunnel)["web"]["source"] == "user"
    status, data = body(gotunnel, "web")
    assert status == 200 and b'"backend": "mine"' in data.replace(b'":"', b'": "')
    gotunnel("stop", "web", check=True)  # the user's goes: the container's takes the name
    wait_for(lambda: body(gotunnel, "web") == (200, b"container\n"), timeout=5, what="the container's tunnel")


def test_several_tunnels_per_container_and_compose_labels(gotunnel: Gotunnel, docker_tracker: Tracker,  # noqa: F811
                                                          bb: str) -> None:
    gotunnel("docker", "watch", check=True)
    p1, p2 = free_port(), free_port()
    docker_tracker.testcontainer(bb, httpd("multi", p1, p2), network_mode="host", labels={
        "gotunnel.site.name": "site", "gotunnel.site.port": str(p1),
        "gotunnel.admin.name": "admin.site", "gotunnel.admin.port": str(p2), "gotunnel.admin.https": "false",
        "com.docker.compose.project": "shop", "com.docker.compose.service": "front",
    })
    wait_for(lambda: body(gotunnel, "site")[0] == 200 and body(gotunnel, "admin.site")[0] == 200, timeout=5,
             what="both tunnels of the container")
    rows = listing(gotunnel)
    assert rows["site"]["backends"][0]["url"].endswith(f":{p1}") and rows["admin.site"]["backends"][0]["url"].endswith(f":{p2}")
    assert "service front of Compose project shop" in rows["site"]["origin"]
    assert rows["admin.site"]["https"] is False and rows["site"]["https"] is True


def test_existing_containers_are_picked_up_when_the_daemon_starts(gotunnel: Gotunnel, docker_tracker: Tracker,  # noqa: F811
                                                                  echo_backend: Any, bb: str) -> None:
    port = free_port()
    docker_tracker.testcontainer(bb, httpd("early", port), network_mode="host",
                                 labels={"gotunnel.name": "early", "gotunnel.port": str(port)})
    gotunnel.env["GOTUNNEL_PROVIDERS"] = "docker"
    gotunnel("start", "-d", "mine", "-p", str(echo_backend().port), check=True)  # spawns the daemon
    assert body(gotunnel, "early") == (200, b"early\n")  # served by the time the daemon answers
    assert gotunnel.json("status")["providers"]["docker"]["connected"] is True


def test_watch_without_a_docker_engine_says_so(gotunnel: Gotunnel, tmp_path: Any) -> None:
    gotunnel("daemon", "--help", check=True)
    result = gotunnel("docker", "watch", extra_env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"})
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert lines[0] == f"error: cannot reach the Docker engine at unix://{tmp_path}/no-docker.sock: no such socket"
    assert lines[1].startswith("hint: start Docker")
    assert "docker" not in gotunnel.json("status").get("providers", {})


def _ipam(subnet: str) -> Any:
    import docker

    return docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet)])


@pytest.mark.slow
def test_provider_reconnects_and_resyncs_after_the_docker_engine_restarts(gotunnel: Gotunnel, tmp_path: Any,
                                                                          docker_client: Any) -> None:  # noqa: F811
    """A private dockerd (its own socket and data root) so the test can stop and restart it."""
    from docker_helpers import PrivateDockerd

    engine = PrivateDockerd(tmp_path)
    try:
        client = engine.start()
        image = busybox_image(client)
        gotunnel.env["DOCKER_HOST"] = engine.host
        gotunnel("docker", "watch", check=True)
        first, second = free_port(), free_port()
        client.containers.run(image, httpd("before", first), detach=True, network_mode="host",
                              labels={"gotunnel.name": "before", "gotunnel.port": str(first)})
        wait_for(lambda: body(gotunnel, "before")[0] == 200, timeout=5, what="before.localhost")
        client.close()
        engine.stop()  # its containers die with it
        wait_for(lambda: not gotunnel.json("status")["providers"]["docker"]["connected"], timeout=10,
                 what="the provider to notice the engine is gone")
        assert gotunnel.json("status")["providers"]["docker"]["error"]
        client = engine.start()
        client.containers.run(image, httpd("after", second), detach=True, network_mode="host",
                              labels={"gotunnel.name": "after", "gotunnel.port": str(second)})
        wait_for(lambda: body(gotunnel, "after")[0] == 200, timeout=20, what="after.localhost once reconnected")
        assert "before" not in listing(gotunnel)  # resynced: its container no longer runs
        assert gotunnel.json("status")["providers"]["docker"]["connected"] is True
        client.close()
    finally:
        engine.cleanup()


def test_a_killed_container_is_out_of_the_listing_once_its_die_event_is_seen(docker_client: Any,  # noqa: F811
                                                                            docker_tracker: Tracker, bb: str) -> None:  # noqa: F811
    """Docker 20.10 sends `die` before its container list catches up (it cleans the container up
    in between): the listing the provider and `sync --watch --docker` render from must leave the
    container out as soon as `die` is seen, or the route outlives the container until some other
    event. Many kills, because the window is short: the list-based check saw a dead container in
    3 of 20 kills once here, and then in none of about 270 more, so this row guards the property
    rather than reproducing that run; the listing now reads each container's state from inspect."""
    from gotunnel_core.docker.client import labelled_containers

    # On a bridge network: the clean-up between `die` and the list's update has its interface to remove.
    network = docker_tracker.network(f"gt-test-{random.randrange(1 << 30):x}", driver="bridge")
    stale = []
    for attempt in range(20):
        container = docker_tracker.run(bb, ["sh", "-c", "exec sleep 300"], network=network.name,
                                       labels={"gotunnel.name": f"k{attempt}", "gotunnel.port": "1"})
        assert container.id in labelled_containers(docker_client)
        # `until` ends the stream 20 s from now: the deadline for the `die` event.
        events = docker_client.api.events(decode=True, until=int(time.time()) + 20,
                                          filters={"type": ["container"], "event": ["die"], "container": [container.id]})
        try:
            docker_client.api.kill(container.id)
            assert any(event.get("id") == container.id for event in events), "no `die` event within 20 s"
            if container.id in labelled_containers(docker_client):
                stale.append(attempt)
        finally:
            events.close()
        container.remove(force=True)
    assert not stale, f"a killed container was still listed right after its `die` event (attempts {stale})"
