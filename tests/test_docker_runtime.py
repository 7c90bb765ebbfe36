"""The docker runtime of the external engines on a real Docker engine: what is specific to running
an engine in a container (labels, read-only mounts, user, orphans, crash restarts, logs, errors).
The engines' behaviours themselves are the conformance suite's, run with GOTUNNEL_RUNTIME=docker.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from gotunnel_core.testing import Gotunnel, pid_gone, wait_for
from gotunnel_core.testing.daemon import engine_status, serves, use_engine
from docker_helpers import docker_client, docker_or_skip, engine_image  # noqa: F401 - fixtures

pytestmark = pytest.mark.docker


def use_docker(g: Gotunnel, engine: str, client: Any) -> Gotunnel:
    use_engine(g, engine)
    g.env["GOTUNNEL_RUNTIME"] = "docker"
    g.env[f"GOTUNNEL_{engine.upper()}_IMAGE"] = engine_image(client, engine)
    return g


def engine_containers(client: Any, g: Gotunnel, engine: str) -> list[Any]:
    work = g.state_dir / "engines" / engine
    return client.containers.list(all=True, filters={"label": f"io.gotunnel.work-dir={work}"})


def test_engine_container_labels_mounts_user_and_crash_restart(gotunnel: Gotunnel, echo_backend: Any,
                                                              docker_client: Any) -> None:  # noqa: F811
    g = use_docker(gotunnel, "nginx", docker_client)
    g("start", "-d", "app", "-p", str(echo_backend().port), check=True)
    assert serves(g, "app")
    [container] = engine_containers(docker_client, g, "nginx")
    attrs = container.attrs
    assert container.labels["io.gotunnel.state-dir"] == str(g.state_dir)
    assert container.labels["io.gotunnel.engine"] == "nginx"
    assert not any(key.startswith("gotunnel.") for key in container.labels)  # never a tunnel for the provider
    assert attrs["HostConfig"]["NetworkMode"] == "host"
    assert attrs["Config"]["User"] == f"{os.getuid()}:{os.getgid()}"
    mounts = {m["Destination"]: m["RW"] for m in attrs["Mounts"]}
    work = g.state_dir / "engines" / "nginx"
    assert mounts == {str(work): True, str(work / "configs"): False, str(g.state_dir / "certs"): False}
    status = engine_status(g)
    assert status["extra"]["runtime"] == "docker" and status["extra"]["image"] == g.env["GOTUNNEL_NGINX_IMAGE"]
    record = json.loads((work / "supervisor.json").read_text())
    assert record["runtime"] == "docker" and record["container"] == container.id

    container.kill()  # a crash: SIGKILL through the API
    wait_for(lambda: engine_status(g)["extra"]["restarts"] >= 1 and engine_status(g)["running"], timeout=30,
             what="the supervisor to restart the engine in a new container")
    assert serves(g, "app")
    [again] = engine_containers(docker_client, g, "nginx")
    assert again.id != container.id  # the crashed one was removed by id

    g("stop", "--all", check=True)
    assert engine_containers(docker_client, g, "nginx") == []


def test_container_environment_is_the_engines_own_never_the_daemons(gotunnel: Gotunnel, echo_backend: Any,
                                                                    docker_client: Any) -> None:  # noqa: F811
    """A container gets the engine's `environment()` (Caddy: its data and config dirs, GOMAXPROCS)
    and the image's own variables, never the daemon's."""
    g = use_docker(gotunnel, "caddy", docker_client)
    g.env["GOTUNNEL_CADDY_GOMAXPROCS"] = "1"
    g.env["DAEMON_SECRET"] = "never-in-the-container"
    g("start", "-d", "app", "-p", str(echo_backend().port), check=True)
    assert serves(g, "app")
    [container] = engine_containers(docker_client, g, "caddy")
    env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])
    home = g.state_dir / "engines" / "caddy" / "home"
    assert env["XDG_DATA_HOME"] == str(home / "data") and env["XDG_CONFIG_HOME"] == str(home / "config")
    assert env["GOMAXPROCS"] == "1"
    assert env["GODEBUG"] == "http2xconnect=1"  # RFC 8441 websockets (the `http2` setting, on by default)
    assert set(env) == {"XDG_DATA_HOME", "XDG_CONFIG_HOME", "GOMAXPROCS", "GODEBUG", "PATH"}  # PATH: the image's ENV
    g("stop", "--all", check=True)


def test_container_of_a_dead_daemon_is_removed_at_the_next_start(gotunnel: Gotunnel, echo_backend: Any,
                                                                  docker_client: Any) -> None:  # noqa: F811
    import psutil

    g = use_docker(gotunnel, "nginx", docker_client)
    g("start", "-d", "app", "-p", str(echo_backend().port), check=True)
    [orphan] = engine_containers(docker_client, g, "nginx")
    pid = g.daemon_pid()
    assert pid is not None
    psutil.Process(pid).kill()  # the daemon dies without stopping its engine
    wait_for(lambda: pid_gone(pid), timeout=10,
             what="the daemon to die")
    orphan.reload()
    assert orphan.status == "running"
    g("start", "-d", "again", "-p", str(echo_backend().port), check=True)  # a new daemon restores `app`
    assert serves(g, "app") and serves(g, "again")
    [current] = engine_containers(docker_client, g, "nginx")
    assert current.id != orphan.id
    from docker.errors import NotFound

    with pytest.raises(NotFound):
        docker_client.containers.get(orphan.id)


def test_engine_output_goes_into_the_daemon_log(gotunnel: Gotunnel, echo_backend: Any,
                                               docker_client: Any) -> None:  # noqa: F811
    g = use_docker(gotunnel, "envoy", docker_client)
    g.env["GOTUNNEL_ENVOY_LOG_LEVEL"] = "info"  # Envoy then reports its startup
    g("start", "-d", "app", "-p", str(echo_backend().port), check=True)
    assert serves(g, "app")

    def envoy_lines() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in (g.state_dir / "daemon.log").read_text().splitlines() if line.startswith("{")]
        return [entry for entry in lines if entry.get("event") == "engine" and "[info]" in entry.get("line", "")
                and "starting main dispatch loop" in entry.get("line", "")]

    wait_for(envoy_lines, timeout=10, what="Envoy's own log line in the daemon log")


@pytest.mark.parametrize("problem", ["no-docker", "no-image"])
def test_without_docker_or_image_start_fails_in_one_line_saying_how_to_fix_it(gotunnel: Gotunnel, tmp_path: Any,
                                                                             problem: str) -> None:
    use_engine(gotunnel, "nginx")
    env = {"GOTUNNEL_RUNTIME": "docker"}
    if problem == "no-docker":
        env["DOCKER_HOST"] = f"unix://{tmp_path}/no-docker.sock"
    else:
        docker_or_skip()
        env["GOTUNNEL_NGINX_IMAGE"] = "gotunnel-test/no-such-image:1"
    result = gotunnel("start", "-d", "app", "-p", "3000", extra_env=env)
    assert result.code == 1 and result.out == ""
    error, hint = result.err.strip().splitlines()
    assert error == "error: engine 'nginx' cannot start: its Docker image is not usable"
    if problem == "no-docker":
        assert hint.startswith(f"hint: cannot reach the Docker engine at unix://{tmp_path}/no-docker.sock: no such socket")
        assert "start Docker" in hint
    else:
        assert "gotunnel-test/no-such-image:1 is not on this Docker engine" in hint and "docker pull" in hint
    assert gotunnel.daemon_pid() is None  # nothing was started


def test_engines_command_shows_the_image(gotunnel: Gotunnel, docker_client: Any) -> None:  # noqa: F811
    g = use_docker(gotunnel, "envoy", docker_client)
    rows = {row["name"]: row for row in g.json("engines")["engines"]}
    assert rows["envoy"]["binary"]["found"] and rows["envoy"]["binary"]["path"] == "docker:" + g.env["GOTUNNEL_ENVOY_IMAGE"]
