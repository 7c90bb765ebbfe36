"""gotunnel's own image (the repository's Dockerfile) builds here and serves a tunnel.

No base image can be pulled, so the Dockerfile's `PYTHON_IMAGE` is a base built from this
machine's Python (tests/docker_helpers.py); on a normal machine it is `python:3.11-slim`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cli_helpers import http_get
from conftest import REPO, free_port, wait_for
from docker_helpers import Tracker, build_image, docker_client, docker_tracker, python_base_image  # noqa: F401

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def gotunnel_image(client: Any, tmp_path: Path) -> str:
    """`make image`, with the local Python base: wheels of the core + builtin engine, then the Dockerfile."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(wheels), ".[docker]", "./plugins/builtin_proxy"],
                   cwd=REPO, check=True, capture_output=True)
    files: dict[str, Any] = {f"dist/wheels/{wheel.name}": wheel for wheel in sorted(wheels.iterdir())}
    return build_image(client, "gotunnel", files, (REPO / "Dockerfile").read_text(),
                       buildargs={"PYTHON_IMAGE": python_base_image(client)})


def test_image_builds_runs_as_non_root_and_serves_a_tunnel(docker_client: Any, docker_tracker: Tracker,  # noqa: F811
                                                           echo_backend: Any, tmp_path: Path) -> None:
    image = gotunnel_image(docker_client, tmp_path)
    backend = echo_backend("behind-the-image")
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, 10001, 10001)  # the image's user owns its volume
    config = tmp_path / "gotunnel.toml"
    config.write_text(f'[[tunnels]]\nname = "app"\nbackends = ["{backend.url}"]\n')
    http_port, https_port = free_port(), free_port()
    container = docker_tracker.run(
        image, network_mode="host",
        environment={"GOTUNNEL_HTTP_PORT": str(http_port), "GOTUNNEL_HTTPS_PORT": str(https_port),
                     "GOTUNNEL_BIND": "127.0.0.1"},
        volumes={str(data): {"bind": "/data", "mode": "rw"},
                 str(config): {"bind": "/etc/gotunnel/gotunnel.toml", "mode": "ro"}})

    def answer() -> Any:
        container.reload()
        assert container.status == "running", container.logs().decode(errors="replace")[-2000:]
        try:
            return http_get(http_port, f"app.localhost:{http_port}")
        except OSError:
            return None

    status, _, body = wait_for(answer, timeout=60, interval=0.2, what="the image to serve app.localhost")
    assert status == 200 and b"behind-the-image" in body
    ca = data / "state" / "ca" / "ca.pem"
    status, _, body = http_get(https_port, f"app.localhost:{https_port}", https_ca=str(ca))
    assert status == 200 and b"behind-the-image" in body
    assert (data / "state").stat().st_uid == 10001  # it ran as the image's non-root user
    assert docker_client.images.get(image).attrs["Config"]["User"] == "10001:10001"
    container.stop(timeout=15)  # SIGTERM reaches the daemon (PID 1) and it shuts down cleanly
    container.reload()
    assert container.attrs["State"]["ExitCode"] == 0, container.logs().decode(errors="replace")[-2000:]
