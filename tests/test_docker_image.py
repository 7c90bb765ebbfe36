"""gotunnel's own image (the repository's Dockerfile) builds here and serves tunnels, the way the
examples run it: the Kubernetes sidecar (config from the ConfigMap, read-only root, non-root user)
and the Compose setup (following Docker through the mounted socket).

No base image can be pulled, so the Dockerfile's `PYTHON_IMAGE` is a base built from this
machine's Python (tests/docker_helpers.py); on a normal machine it is `python:3.11-slim`. Neither
`docker compose` nor a Kubernetes cluster exists here: the tests run the same containers with the
docker SDK, with the settings read from the example files.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from gotunnel_core.testing import free_port, wait_for
from gotunnel_core.testing.daemon import http_get
from docker_helpers import (Tracker, build_image, busybox_image, docker_or_skip, python_base_image,  # noqa: F401
                            docker_client, docker_tracker)

pytestmark = [pytest.mark.docker, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """`make image` with the local Python base: wheels of the core + builtin engine, then the Dockerfile."""
    client = docker_or_skip()
    wheels = tmp_path_factory.mktemp("wheels")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(wheels), ".[docker]", "./plugins/builtin_proxy"],
                   cwd=REPO, check=True, capture_output=True)
    files: dict[str, Any] = {f"dist/wheels/{wheel.name}": wheel for wheel in sorted(wheels.iterdir())}
    return build_image(client, "gotunnel", files, (REPO / "Dockerfile").read_text(),
                       buildargs={"PYTHON_IMAGE": python_base_image(client)})


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, 10001, 10001)  # the image's user owns its volume
    return data


def _yaml(path: Path) -> list[Any]:
    import yaml

    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _serving(container: Any, port: int, host: str, ca: Path | None = None) -> Any:
    def answer() -> Any:
        container.reload()
        assert container.status == "running", container.logs().decode(errors="replace")[-2000:]
        try:
            result = http_get(port, f"{host}:{port}", https_ca=str(ca) if ca else None)
        except OSError:
            return None
        return result if result[0] == 200 else None

    return wait_for(answer, timeout=60, interval=0.2, what=f"the image to serve {host}")


def test_image_serves_the_kubernetes_example_config_as_non_root_on_a_read_only_root(
        image: str, docker_client: Any, docker_tracker: Tracker, echo_backend: Any, data_dir: Path,  # noqa: F811
        tmp_path: Path) -> None:
    docs = {doc["kind"]: doc for doc in _yaml(EXAMPLES / "kubernetes" / "gotunnel.yaml")}
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    container_spec = next(c for c in pod["containers"] if c["name"] == "gotunnel")
    ports = {p["name"]: p["containerPort"] for p in container_spec["ports"]}
    assert {p["targetPort"] for p in docs["Service"]["spec"]["ports"]} == set(ports)
    assert pod["securityContext"]["runAsUser"] == 10001 and container_spec["securityContext"]["readOnlyRootFilesystem"]
    # The ConfigMap's config, with the app's port moved to a free one (the test's app).
    backend = echo_backend("sidecar-app")
    config = docs["ConfigMap"]["data"]["gotunnel.toml"].replace("127.0.0.1:8000", f"127.0.0.1:{backend.port}")
    assert tomllib.loads(config)["tunnels"][0]["name"] == "app"
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "gotunnel.toml").write_text(config)
    http_port, https_port = free_port(), free_port()
    container = docker_tracker.run(
        image, container_spec["args"], network_mode="host", read_only=True,
        environment={"GOTUNNEL_HTTP_PORT": str(http_port), "GOTUNNEL_HTTPS_PORT": str(https_port),
                     "GOTUNNEL_BIND": "127.0.0.1"},
        volumes={str(data_dir): {"bind": "/data", "mode": "rw"},
                 str(tmp_path / "etc"): {"bind": "/etc/gotunnel", "mode": "ro"}})
    status, _, body = _serving(container, http_port, "app.localhost")
    assert b"sidecar-app" in body
    ca = data_dir / "state" / "ca" / "ca.pem"
    status, _, body = _serving(container, https_port, "app.localhost", ca)
    assert b"sidecar-app" in body
    assert (data_dir / "state").stat().st_uid == 10001  # it ran as the image's non-root user
    assert docker_client.images.get(image).attrs["Config"]["User"] == "10001:10001"
    container.stop(timeout=15)  # SIGTERM reaches the daemon (PID 1) and it shuts down cleanly
    container.reload()
    assert container.attrs["State"]["ExitCode"] == 0, container.logs().decode(errors="replace")[-2000:]


def test_image_follows_docker_like_the_compose_example(image: str, docker_client: Any,  # noqa: F811
                                                        docker_tracker: Tracker, data_dir: Path) -> None:
    compose = _yaml(EXAMPLES / "docker" / "docker-compose.yml")[0]
    service, app = compose["services"]["gotunnel"], compose["services"]["app"]
    socket = "/var/run/docker.sock"
    if not os.path.exists(socket):
        pytest.skip(f"the Compose example mounts {socket}; this Docker engine listens elsewhere")
    project = f"gtexample{random.randrange(1 << 20):x}"
    network = docker_tracker.network(f"{project}_default", driver="bridge",
                                     labels={"com.docker.compose.project": project})
    http_port, https_port = free_port(), free_port()
    environment = {**service["environment"], "GOTUNNEL_HTTP_PORT": str(http_port),
                   "GOTUNNEL_HTTPS_PORT": str(https_port), "GOTUNNEL_BIND": "127.0.0.1"}
    volumes = {str(data_dir): {"bind": "/data", "mode": "rw"}, socket: {"bind": socket, "mode": "ro"}}
    assert f"{socket}:{socket}:ro" in service["volumes"]
    gotunnel = docker_tracker.run(image, network_mode=service["network_mode"], environment=environment,
                                  volumes=volumes, group_add=[str(os.stat(socket).st_gid)])
    # The app: busybox's httpd instead of python:3.11-slim (nothing can be pulled), with the
    # example's labels and the labels Compose adds, on the project's network.
    labels = {**app["labels"], "com.docker.compose.project": project, "com.docker.compose.service": "app"}
    port = labels["gotunnel.port"]
    docker_tracker.run(busybox_image(docker_client), ["sh", "-c", f"mkdir -p /www && echo compose-app > /www/index.html "
                                                                  f"&& exec httpd -f -p {port} -h /www"],
                       network=network.name, labels=labels)
    status, _, body = _serving(gotunnel, http_port, "app.localhost")
    assert body == b"compose-app\n"
    out = gotunnel.exec_run(["gotunnel", "list"], environment=environment).output.decode()
    assert f"service app of Compose project {project}" in out
