"""`DockerRuntime`: an external engine in a container of its official image, through the docker SDK.

The same `Runtime` protocol as `ProcessRuntime`, so engines stay unchanged:

- host networking on Linux: the engine binds this machine's ports and reaches backends on
  loopback, exactly as a process would (the only mode implemented: see `require_linux`);
- every path at the same place inside as outside (`map_path` is the identity): the engine's
  work directory is mounted read-write (its `run/` holds the control sockets the supervisor
  talks to: nginx's status socket, Caddy's admin socket, Envoy's admin socket), its `configs/`
  read-only over it (rendered configs), and the state directory's `certs/` read-only;
- the container's environment is the engine's own variables (`SupervisedEngine.environment()`),
  never the daemon's, which hold nothing for the engine and may hold secrets;
- the container runs as the daemon's own user, is labelled with the owning state and work
  directories, and a container left by a dead daemon is found by those labels and removed by id;
- signals go through the Docker API (`kill`), so nginx reloads with SIGHUP as a process does;
- stdout and stderr of the container go line by line into the daemon log;
- a validator runs with `exec` in the running engine's container (no new container), or in a
  one-off container before the engine runs;
- daemon-owned listening sockets cannot cross into a container: `passes_fds` is False, and an
  engine that would inherit them binds its ports itself (see the Caddy engine).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..engine import BinaryStatus
from ..errors import RuntimeFailure
from ..options import option_env
from .runtime import StderrSink, hand_line, live_children

#: Labels on every engine container (never `gotunnel.*`: those declare tunnels to the Docker provider).
LABEL_ENGINE = "io.gotunnel.engine"
LABEL_STATE = "io.gotunnel.state-dir"
LABEL_WORK = "io.gotunnel.work-dir"


def require_linux() -> None:
    if not sys.platform.startswith("linux"):
        raise RuntimeFailure(
            "the docker runtime runs engines with host networking, which only Linux has",
            hint="use the process runtime (--runtime process) on this system")


class _Container:
    """A running engine container as the supervisor sees it (the `EngineProcess` protocol)."""

    def __init__(self, container: Any, loop: asyncio.AbstractEventLoop, on_output: StderrSink) -> None:
        self.container = container
        self.id: str = container.id
        self.pid: int | None = int(container.attrs.get("State", {}).get("Pid") or 0) or None
        self._exit: asyncio.Future[int] = loop.create_future()
        self._returncode: int | None = None
        threading.Thread(target=self._wait, args=(loop,), name=f"wait-{self.id[:12]}", daemon=True).start()
        threading.Thread(target=_forward_logs, args=(container, on_output), name=f"logs-{self.id[:12]}",
                         daemon=True).start()

    def _wait(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            code = int(self.container.wait().get("StatusCode", -1))
        except Exception:  # noqa: BLE001 - the container is gone, or Docker is: it no longer runs
            code = -1
        try:
            loop.call_soon_threadsafe(self._done, code)
        except RuntimeError:  # loop closed (daemon exiting)
            pass

    def _done(self, code: int) -> None:
        self._returncode = code
        if not self._exit.done():
            self._exit.set_result(code)

    @property
    def returncode(self) -> int | None:
        return self._returncode

    def send_signal(self, sig: int) -> None:
        if self._returncode is None:
            try:
                self.container.kill(signal=int(sig))
            except Exception:  # noqa: BLE001 - already stopped
                pass

    def kill_all(self) -> None:
        """SIGKILL everything in the container (its pid namespace) and remove it, by id."""
        try:
            self.container.remove(force=True)
        except Exception:  # noqa: BLE001 - already gone
            pass

    async def wait(self) -> int:
        return await asyncio.shield(self._exit)

    def identity(self) -> dict[str, Any]:
        return {"runtime": "docker", "container": self.id, "pid": self.pid,
                "image": self.container.attrs.get("Config", {}).get("Image")}

    def children(self) -> dict[int, str]:
        """The engine's workers: the main process's children, seen from the host's pid namespace."""
        return live_children(self.pid) if self.pid is not None else {}


def _forward_logs(container: Any, sink: StderrSink) -> None:
    """Thread: the container's stdout and stderr, line by line, until it exits."""
    pending = b""
    try:
        for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                hand_line(line, sink)
    except Exception:  # noqa: BLE001 - container removed or Docker gone: the supervisor sees the exit
        return


class DockerRuntime:
    """Runs an engine's program in a container of `image` with host networking."""

    name = "docker"
    #: Listening sockets of the daemon cannot be inherited by a container's process.
    passes_fds = False

    def __init__(self, engine: str, image: str, work_dir: Path, program: str) -> None:
        require_linux()
        self.engine = engine
        self.image = image
        self.work = Path(work_dir).absolute()
        self.state = self.work.parent.parent  # <state>/engines/<engine>
        self.program = program
        self._client: Any = None
        self._running: _Container | None = None

    # ----- docker ---------------------------------------------------------------------------------

    def client(self) -> Any:
        if self._client is None:
            from ..docker.client import connect

            self._client = connect()
        return self._client

    def _mounts(self) -> list[Any]:
        from docker.types import Mount

        mounts = [Mount(str(self.work), str(self.work), type="bind", read_only=False)]
        configs = self.work / "configs"
        configs.mkdir(parents=True, exist_ok=True, mode=0o700)
        mounts.append(Mount(str(configs), str(configs), type="bind", read_only=True))
        certs = self.state / "certs"
        if certs.is_dir():
            mounts.append(Mount(str(certs), str(certs), type="bind", read_only=True))
        return mounts

    def _labels(self) -> dict[str, str]:
        return {LABEL_ENGINE: self.engine, LABEL_STATE: str(self.state), LABEL_WORK: str(self.work)}

    def _options(self, argv: Sequence[str], env: Mapping[str, str], cwd: str) -> dict[str, Any]:
        return {
            "image": self.image,
            "command": [self.program, *argv[1:]],
            "entrypoint": [],
            "environment": dict(env),
            "working_dir": cwd,
            "user": f"{os.getuid()}:{os.getgid()}",
            "network_mode": "host",
            "mounts": self._mounts(),
            "labels": self._labels(),
            "init": False,
        }

    # ----- Runtime protocol -----------------------------------------------------------------------

    def map_path(self, path: str) -> str:
        return path

    async def spawn(self, argv: Sequence[str], *, env: Mapping[str, str], cwd: str,
                    on_stderr: StderrSink, pass_fds: Sequence[int] = ()) -> Any:
        if pass_fds:
            raise RuntimeFailure(f"the {self.engine} engine wants inherited sockets, which a container cannot get")
        await asyncio.to_thread(self.remove_orphans)
        loop = asyncio.get_running_loop()

        def create() -> Any:
            container = self.client().containers.create(**self._options(argv, env, cwd))
            try:
                container.start()
                container.reload()
            except BaseException:
                container.remove(force=True)
                raise
            return container

        try:
            container = await asyncio.to_thread(create)
        except RuntimeFailure:
            raise
        except Exception as exc:  # noqa: BLE001 - docker.errors.*: one line
            raise RuntimeFailure(f"could not start the {self.engine} container from {self.image}: {_one_line(exc)}",
                                 hint=f"check the image ({option_env(self.engine, 'image')}) and `docker info`") from None
        self._running = _Container(container, loop, on_stderr)
        return self._running

    async def run(self, argv: Sequence[str], *, env: Mapping[str, str], cwd: str, timeout: float,
                  pass_fds: Sequence[int] = ()) -> tuple[int, str]:
        running = self._running
        command = [self.program, *argv[1:]]
        try:
            if running is not None and running.returncode is None:
                result = await asyncio.wait_for(asyncio.to_thread(
                    running.container.exec_run, command, environment=dict(env), workdir=cwd,
                    user=f"{os.getuid()}:{os.getgid()}"), timeout)
                return int(result.exit_code if result.exit_code is not None else -1), result.output.decode("utf-8", "replace")
            return await asyncio.wait_for(asyncio.to_thread(self._run_once, argv, env, cwd), timeout)
        except asyncio.TimeoutError:
            return -signal.SIGKILL, f"{self.program} did not finish within {timeout:g} s"
        except RuntimeFailure:
            raise
        except Exception as exc:  # noqa: BLE001
            raise RuntimeFailure(f"could not run {self.program} in a container of {self.image}: {_one_line(exc)}") from None

    def _run_once(self, argv: Sequence[str], env: Mapping[str, str], cwd: str) -> tuple[int, str]:
        container = self.client().containers.create(**self._options(argv, env, cwd))
        try:
            container.start()
            code = int(container.wait().get("StatusCode", -1))
            return code, container.logs(stdout=True, stderr=True).decode("utf-8", "replace")
        finally:
            container.remove(force=True)

    def reap_orphan(self, record: Mapping[str, Any], stop_signal: int, deadline: float, log: Any) -> str:
        """Stop the recorded container when it is still ours (labelled with this work directory)."""
        cid = record.get("container")
        if not cid:
            return "none"
        try:
            container = self.client().containers.get(cid)
        except RuntimeFailure:
            raise
        except Exception:  # noqa: BLE001 - NotFound: already gone
            return "gone"
        if container.labels.get(LABEL_WORK) != str(self.work):
            log.warning("engine record names a container that is not ours; leaving it alone", container=cid[:12])
            return "not ours"
        log.warning("removing an engine container left over by a previous daemon", container=cid[:12])
        try:
            container.kill(signal=int(stop_signal))
            container.wait(timeout=deadline)
            outcome = "stopped"
        except Exception:  # noqa: BLE001 - not running, or did not stop in time
            outcome = "killed"
        container.remove(force=True)
        return outcome

    def remove_orphans(self) -> list[str]:
        """Remove, by id, every container labelled with this engine's work directory."""
        client = self.client()
        removed = []
        for container in client.containers.list(all=True, filters={"label": f"{LABEL_WORK}={self.work}"}):
            container.remove(force=True)
            removed.append(container.id)
        return removed


def probe_image(client: Any, engine: str, image: str) -> BinaryStatus:
    """`docker:<image>` and its short id when the engine has the image, else how to get it."""
    try:
        found = client.images.get(image)
    except Exception:  # noqa: BLE001 - ImageNotFound, or Docker trouble
        return BinaryStatus(False, f"docker:{image}", None, hint=(
            f"the image {image} is not on this Docker engine: `docker pull {image}`, or set "
            f"{option_env(engine, 'image')} / [engines.{engine}] image to one that is"))
    return BinaryStatus(True, f"docker:{image}", (found.id or "")[7:19])


def probe_docker(engine: str, image: str) -> BinaryStatus:
    """`SupervisedEngine.probe` under the docker runtime: Docker reachable and the image present."""
    from ..docker.client import connect

    try:
        client = connect()
    except RuntimeFailure as exc:
        return BinaryStatus(False, None, None, hint=f"{exc.message}; {exc.hint}")
    try:
        return probe_image(client, engine, image)
    finally:
        client.close()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__
