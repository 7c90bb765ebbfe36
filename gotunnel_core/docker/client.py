"""Connecting to the Docker engine through the `docker` SDK, with errors that say what to do.

The SDK (docker-py) is an optional dependency: `pip install 'gotunnel-core[docker]'`. It reads
DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH like the `docker` CLI does.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..errors import RuntimeFailure

if TYPE_CHECKING:
    from .address import ContainerView

SDK_HINT = "install the Docker support: pip install 'gotunnel-core[docker]'"
#: The events the provider and `sync --watch` follow: container lifecycle and network (dis)connects.
EVENT_FILTERS = {"type": ["container", "network"]}
START_HINT = ("start Docker (`sudo systemctl start docker`, or Docker Desktop), or point DOCKER_HOST at a running "
              "Docker engine")


def docker_host() -> str:
    """The engine address the SDK will use, for messages."""
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def connect(timeout: int = 10) -> Any:
    """A `docker.DockerClient` that answered a ping; RuntimeFailure naming the cause otherwise."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:
        raise RuntimeFailure("Docker support is not installed (the `docker` Python package is missing)",
                             hint=SDK_HINT) from None
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except DockerException as exc:
        raise RuntimeFailure(f"cannot reach the Docker engine at {docker_host()}: {describe(exc)}",
                             hint=START_HINT) from None
    return client


def labelled_containers(client: Any) -> "dict[str, ContainerView]":
    """The running containers with `gotunnel.*` labels, as `ContainerView`s by id.

    Running by each container's inspect document, not by the listing: Docker 20.10 sends a
    container's `die` event before its list catches up (seen here: listed 3 times in 20 right
    after `die`), while inspect reads the container's own state, set to stopped before `die` is
    sent. A container removed between the listing and its inspect is skipped, not an error."""
    from .address import ContainerView
    from .labels import has_tunnel_labels

    views = (ContainerView.from_inspect(c.attrs) for c in client.containers.list(ignore_removed=True))
    return {view.id: view for view in views if view.running and has_tunnel_labels(view.labels)}


def describe(exc: BaseException) -> str:
    """One line for a Docker SDK or connection error (they nest the real cause deeply)."""
    text = str(exc)
    for marker in ("FileNotFoundError", "ConnectionRefusedError", "PermissionError", "Connection refused",
                   "No such file or directory", "Permission denied"):
        if marker in text:
            return {"FileNotFoundError": "no such socket", "No such file or directory": "no such socket",
                    "ConnectionRefusedError": "connection refused", "Connection refused": "connection refused",
                    "PermissionError": "permission denied (is this user in the docker group?)",
                    "Permission denied": "permission denied (is this user in the docker group?)"}[marker]
    return " ".join(text.split())[:300] or type(exc).__name__
