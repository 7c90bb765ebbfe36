"""`gotunnel sync --docker [--watch]` against a real Docker engine and a real "system" nginx (the
fixture of test_sync_nginx): labelled containers become routes of an nginx gotunnel does not run,
soon after starting and gone soon after stopping (0.2-0.5 s measured here; the deadline is
FOLLOW_DEADLINE, for a CI machine running Docker on vfs under load); a bad label refuses the sync
while nginx keeps the last good config; Docker down is one line (exit 2), or under --watch the
file's tunnels are served while the follower retries, and a restarted engine is followed again.

Containers run busybox's httpd in host network mode from a `FROM scratch` image built here (no
image can be pulled); every container is removed by id, every process stopped by its pid.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from gotunnel_core.testing import Gotunnel, free_port, stop_pid, wait_for
from gotunnel_core.testing.daemon import http_get

from docker_helpers import Tracker, busybox_image, docker_client, docker_tracker  # noqa: F401 - fixtures
from test_docker_provider import httpd
from test_sync_nginx import NGINX, SystemNginx, answers_from, system_nginx  # noqa: F401 - fixture

#: Seconds a container's start or stop may take to reach nginx (measured: 0.2-0.5 s; the test prints it).
FOLLOW_DEADLINE = 5.0

pytestmark = [pytest.mark.docker, pytest.mark.skipif(NGINX is None, reason="nginx is not installed (CI installs it)")]


def config(backend: str) -> str:
    """The file's own tunnel (keeps nginx's listener up), and the names/TLS labelled tunnels get."""
    return f"""
domain_template = "{{name}}.example.test"
tls = "off"

[[tunnels]]
name = "api"
hosts = ["api.example.test"]
backends = ["{backend}"]
"""


def page(port: int, host: str) -> bytes:
    """The body nginx answers for `host` (b"" when nothing answers)."""
    try:
        return http_get(port, host)[2]
    except OSError:
        return b""


class Watcher:
    """`gotunnel sync --watch ...` as a child process, its output in a file; stopped by its pid."""

    def __init__(self, g: Gotunnel, log: Path, *args: str) -> None:
        self.log = log
        with log.open("w") as sink:
            self.proc = subprocess.Popen([sys.executable, "-m", "gotunnel_core", "sync", "--watch", "--interval", "0.1", *args],
                                         env={**os.environ, **g.env}, cwd=g.state_dir.parent, stdout=sink,
                                         stderr=subprocess.STDOUT)
        g.seen_pids.append(self.proc.pid)

    def text(self) -> str:
        return self.log.read_text()

    def wait_for(self, predicate: Any, timeout: float, what: str) -> None:
        """`wait_for`, with what the watcher printed in the failure (why a sync did not happen)."""
        try:
            wait_for(predicate, timeout=timeout, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the watcher printed:\n{self.text()[-3000:]}") from None

    def stop(self) -> None:
        stop_pid(self.proc.pid)
        self.proc.wait(timeout=10)


@pytest.fixture
def bb(docker_client: Any) -> str:  # noqa: F811
    return busybox_image(docker_client)


@pytest.fixture
def watch_setup(gotunnel: Gotunnel, system_nginx: SystemNginx, echo_backend: Any) -> Iterator[tuple[Path, list[str]]]:  # noqa: F811
    """The config file (one file tunnel `api`) and the sync arguments for the system nginx."""
    (gotunnel.state_dir.parent / "gotunnel.toml").write_text(config(echo_backend("api").url))
    out = system_nginx.conf_d / "gotunnel.conf"
    yield out, ["--engine", "nginx", "--out", str(out), "--main-config", str(system_nginx.conf)]


def test_watch_routes_a_container_within_two_seconds_refuses_a_bad_label_and_drops_a_stopped_one(
        gotunnel: Gotunnel, system_nginx: SystemNginx, docker_tracker: Tracker, bb: str,  # noqa: F811
        watch_setup: tuple[Path, list[str]], tmp_path: Path) -> None:
    out, args = watch_setup
    watcher = Watcher(gotunnel, tmp_path / "watch.log", *args, "--docker")
    port = gotunnel.http_port
    try:
        wait_for(lambda: answers_from(port, "api.example.test", "api"), timeout=15, what="the file's tunnel")
        wait_for(lambda: "following the Docker engine" in watcher.text(), timeout=10, what="the follower")

        web_port = free_port()
        web = docker_tracker.run(bb, httpd("hello-web", web_port), network_mode="host",
                                 labels={"gotunnel.name": "web", "gotunnel.port": str(web_port)})
        started = time.monotonic()
        watcher.wait_for(lambda: page(port, "web.example.test") == b"hello-web\n", timeout=FOLLOW_DEADLINE,
                         what="web.example.test through nginx after the container's start")
        routed_after = time.monotonic() - started
        assert answers_from(port, "api.example.test", "api") and system_nginx.unrelated_answers()

        # A bad value: the sync is refused naming label and value, nginx keeps the last good config.
        good = out.read_text()
        bad = docker_tracker.run(bb, httpd("bad", free_port()), network_mode="host",
                                 labels={"gotunnel.name": "bad", "gotunnel.port": "eighty"})
        watcher.wait_for(lambda: "gotunnel.port='eighty'" in watcher.text(), timeout=5, what="the bad label to be refused")
        refusal = next(line for line in watcher.text().splitlines() if "eighty" in line)
        assert refusal.startswith("error: container ") and bad.short_id in refusal
        assert out.read_text() == good
        assert page(port, "web.example.test") == b"hello-web\n"
        assert answers_from(port, "api.example.test", "api")
        bad.remove(force=True)

        web.kill()  # busybox httpd as pid 1 ignores SIGTERM: `docker stop` would wait its timeout
        stopped = time.monotonic()
        watcher.wait_for(lambda: "web.example.test" not in out.read_text() and page(port, "web.example.test") != b"hello-web\n",
                         timeout=FOLLOW_DEADLINE, what="the route to go after the container's stop")
        gone_after = time.monotonic() - stopped
        assert answers_from(port, "api.example.test", "api")
        assert watcher.proc.poll() is None
        print(f"routed {routed_after:.3f} s after start, gone {gone_after:.3f} s after stop")
    finally:
        watcher.stop()


def test_one_shot_sync_adds_running_labelled_containers(gotunnel: Gotunnel, system_nginx: SystemNginx,  # noqa: F811
                                                        docker_tracker: Tracker, bb: str,
                                                        watch_setup: tuple[Path, list[str]]) -> None:
    out, args = watch_setup
    web_port = free_port()
    docker_tracker.run(bb, httpd("one-shot", web_port), network_mode="host",
                       labels={"gotunnel.name": "shot", "gotunnel.port": str(web_port)})
    # A container that names the file's tunnel: the file's is rendered, the container is reported.
    docker_tracker.run(bb, httpd("shadow", free_port()), network_mode="host",
                       labels={"gotunnel.name": "api", "gotunnel.port": "1"})
    result = gotunnel("sync", *args, "--docker", check=True)
    assert "synced" in result.out
    assert "also in the config file" in result.err
    wait_for(lambda: page(gotunnel.http_port, "shot.example.test") == b"one-shot\n", timeout=10, what="shot route")
    assert answers_from(gotunnel.http_port, "api.example.test", "api")
    # Without --docker (and no `providers = ["docker"]`), the containers are none of sync's business.
    gotunnel("sync", *args, check=True)
    assert "shot.example.test" not in out.read_text()
    # With the daemon's switch in the config file, sync follows it too.
    config_file = gotunnel.state_dir.parent / "gotunnel.toml"
    config_file.write_text('providers = ["docker"]\n' + config_file.read_text())
    gotunnel("sync", *args, check=True)
    assert "shot.example.test" in out.read_text()
    gotunnel("sync", *args, "--no-docker", check=True)
    assert "shot.example.test" not in out.read_text()


def test_docker_down_is_one_line_for_a_one_shot_sync(gotunnel: Gotunnel, tmp_path: Path, echo_backend: Any) -> None:
    (gotunnel.state_dir.parent / "gotunnel.toml").write_text(config(echo_backend("api").url))
    out = tmp_path / "gotunnel.conf"
    sock = tmp_path / "no-docker.sock"
    result = gotunnel("sync", "--engine", "nginx", "--out", str(out), "--docker",
                      extra_env={"DOCKER_HOST": f"unix://{sock}"})
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and str(sock) in lines[0] and "DOCKER_HOST" in lines[0], result.err
    assert not out.exists()


@pytest.mark.slow
def test_watch_serves_the_file_while_docker_is_down_and_follows_a_restarted_engine(
        gotunnel: Gotunnel, system_nginx: SystemNginx, watch_setup: tuple[Path, list[str]],  # noqa: F811
        tmp_path: Path) -> None:
    """A private dockerd (its own socket and data root) the test starts late, stops and restarts."""
    from docker_helpers import PrivateDockerd

    out, args = watch_setup
    # A short root: containerd's socket under it must fit a unix socket path (108 bytes).
    engine = PrivateDockerd(Path(tempfile.mkdtemp(prefix="gt-dockerd-")))
    gotunnel.env["DOCKER_HOST"] = engine.host
    watcher = Watcher(gotunnel, tmp_path / "watch.log", *args, "--docker")
    port = gotunnel.http_port
    try:
        # No engine yet: the file's tunnels are served, and the outage is said once, not per retry.
        wait_for(lambda: answers_from(port, "api.example.test", "api"), timeout=15, what="the file's tunnel")
        wait_for(lambda: "cannot reach the Docker engine" in watcher.text(), timeout=10, what="the outage line")
        client = engine.start()  # takes seconds: several retries of the follower
        image = busybox_image(client)
        wait_for(lambda: "following the Docker engine" in watcher.text(), timeout=15, what="the follower to connect")
        assert watcher.text().count("cannot reach the Docker engine") == 1, watcher.text()

        first = free_port()
        client.containers.run(image, httpd("before", first), detach=True, network_mode="host",
                              labels={"gotunnel.name": "before", "gotunnel.port": str(first)})
        wait_for(lambda: page(port, "before.example.test") == b"before\n", timeout=FOLLOW_DEADLINE, what="before.example.test")
        client.close()
        engine.stop()  # its containers die with it
        wait_for(lambda: "lost the Docker engine" in watcher.text(), timeout=10, what="the lost engine to be said")
        client = engine.start()
        wait_for(lambda: watcher.text().count("following the Docker engine") == 2, timeout=30, what="the reconnect")
        assert watcher.text().count("lost the Docker engine") == 1
        # Resynced from a fresh listing: `before` died with the engine.
        wait_for(lambda: "before.example.test" not in out.read_text(), timeout=FOLLOW_DEADLINE, what="the resync")
        second = free_port()
        client.containers.run(image, httpd("after", second), detach=True, network_mode="host",
                              labels={"gotunnel.name": "after", "gotunnel.port": str(second)})
        wait_for(lambda: page(port, "after.example.test") == b"after\n", timeout=FOLLOW_DEADLINE, what="after.example.test")
        assert answers_from(port, "api.example.test", "api") and watcher.proc.poll() is None
        client.close()
    finally:
        watcher.stop()
        engine.cleanup()
        shutil.rmtree(engine.root, ignore_errors=True)


def test_a_failed_listing_makes_the_next_poll_list_again(docker_client: Any,  # noqa: F811
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The follower on a real engine; listings fail (injected): each moves `generation`, so
    `sync --watch` syncs again on its next poll instead of keeping the routes of the last good
    listing until some unrelated event, and the failure is said once. The next listing is the
    engine's again."""
    from gotunnel_core.docker import follow

    said: list[str] = []
    follower = follow.ContainerFollower(said.append).start()
    try:
        wait_for(lambda: follower.generation > 0, timeout=10, what="the follower to connect")
        real_listing = follow.labelled_containers

        def failing_listing(client: Any) -> Any:
            raise ConnectionError("injected: the listing failed")

        monkeypatch.setattr(follow, "labelled_containers", failing_listing)
        for _ in range(2):
            before = follower.generation
            follower.views()
            assert follower.generation != before
        failures = [line for line in said if "listing the containers failed" in line]
        assert len(failures) == 1 and "injected: the listing failed" in failures[0], said  # said once, with the cause
        monkeypatch.setattr(follow, "labelled_containers", real_listing)
        settled = follower.generation
        assert {v.id for v in follower.views()} == set(real_listing(docker_client))
        assert follower.generation == settled
    finally:
        follower.close()
