"""How an external engine's program runs: the `Runtime` protocol and the process runtime.

Engines never start programs themselves: `SupervisedEngine` asks its runtime to `spawn` the
engine and to `run` its validator, and hands the engine paths through `map_path`. `ProcessRuntime`
runs a child process, `docker_runtime.DockerRuntime` a container; the protocol keeps engines
independent of how their program runs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any, Callable, Mapping, Protocol, Sequence

StderrSink = Callable[[str], None]

#: The runtimes the option `runtime` names (an engine's `runtime_capabilities` are keyed by these).
RUNTIME_NAMES = ("process", "docker")


class EngineProcess(Protocol):
    """A running engine as its supervisor sees it."""

    pid: int | None

    @property
    def returncode(self) -> int | None:
        """The exit status once the engine exited (negative: killed by that signal), else None."""

    def send_signal(self, sig: int) -> None:
        """Signal the engine's main process (reload, graceful stop)."""

    def kill_all(self) -> None:
        """SIGKILL the engine and every process it started (nginx workers outlive a killed master)."""

    async def wait(self) -> int:
        """Wait for the main process to exit; return its exit status."""

    def identity(self) -> dict[str, Any]:
        """What a later daemon needs to recognise this very process as ours (the pidfile record)."""

    def children(self) -> dict[int, str]:
        """The engine's worker processes: pid -> command line (nginx shows its state there)."""


class Runtime(Protocol):
    """Starts engines, runs their validators, and cleans up engines left over by a dead daemon."""

    name: str
    #: Whether `spawn` can hand the engine listening sockets (`pass_fds`); a container cannot.
    passes_fds: bool

    def map_path(self, path: str) -> str:
        """The name under which the engine sees a host path (identity for plain processes)."""

    async def spawn(self, argv: Sequence[str], *, env: Mapping[str, str], cwd: str,
                    on_stderr: StderrSink, pass_fds: Sequence[int] = ()) -> EngineProcess:
        """Start the engine; every line it writes to stderr goes to `on_stderr`; `pass_fds` are
        inherited under the same numbers (listening sockets the daemon owns). `env` holds the
        engine's own variables (`SupervisedEngine.environment()`): a process gets them on top of
        the daemon's environment, a container gets only them."""

    async def run(self, argv: Sequence[str], *, env: Mapping[str, str], cwd: str, timeout: float,
                  pass_fds: Sequence[int] = ()) -> tuple[int, str]:
        """Run a short command (the engine's validator) to completion: (exit status, output);
        `env` and `pass_fds` as for `spawn`."""

    def reap_orphan(self, record: Mapping[str, Any], stop_signal: int, deadline: float, log: Any) -> str:
        """Stop the engine described by `record` if (and only if) it is still that very process.

        Returns what happened: "none", "gone", "stopped", "killed" or "not ours".
        """


class _Process:
    """An engine started by `ProcessRuntime`: its own session, so its process group is its pid."""

    def __init__(self, proc: asyncio.subprocess.Process, reader: asyncio.Task[None] | None,
                 argv: Sequence[str]) -> None:
        self._proc = proc
        self.argv = list(argv)
        self._reader = reader
        self.pid: int | None = proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    def send_signal(self, sig: int) -> None:
        if self._proc.returncode is None:
            try:
                self._proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def kill_all(self) -> None:
        # The group id is the master's pid (own session). While any member lives, the kernel
        # cannot hand that number to a new process, so this never reaches an unrelated process.
        assert self.pid is not None
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    async def wait(self) -> int:
        return await self._proc.wait()

    def children(self) -> dict[int, str]:
        assert self.pid is not None
        return live_children(self.pid)

    def identity(self) -> dict[str, Any]:
        import psutil

        assert self.pid is not None
        proc = psutil.Process(self.pid)
        with proc.oneshot():
            return {"runtime": "process", "pid": self.pid, "create_time": proc.create_time(), "argv": list(self.argv)}


class ProcessRuntime:
    """Runs the engine as a child process of the daemon, as the daemon's own user."""

    name = "process"
    passes_fds = True

    def map_path(self, path: str) -> str:
        return path

    async def spawn(self, argv: Sequence[str], *, env: Mapping[str, str], cwd: str,
                    on_stderr: StderrSink, pass_fds: Sequence[int] = ()) -> EngineProcess:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **env},
            cwd=cwd,
            start_new_session=True,  # own process group: signals to the daemon's group miss it
            pass_fds=tuple(pass_fds),
        )
        reader = asyncio.get_running_loop().create_task(_forward_lines(proc.stderr, on_stderr))
        return _Process(proc, reader, argv)

    async def run(self, argv: Sequence[str], *, env: Mapping[str, str], cwd: str, timeout: float,
                  pass_fds: Sequence[int] = ()) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **env},
            cwd=cwd,
            start_new_session=True,
            pass_fds=tuple(pass_fds),
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except asyncio.TimeoutError:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await proc.wait()
            return -signal.SIGKILL, f"{argv[0]} did not finish within {timeout:g} s"
        return proc.returncode if proc.returncode is not None else -1, out.decode("utf-8", "replace")

    def reap_orphan(self, record: Mapping[str, Any], stop_signal: int, deadline: float, log: Any) -> str:
        """Find the recorded process; stop it only when its create time and command line match.

        A pid reused by an unrelated process has another create time (and usually another
        command line): it is never signalled. When the recorded master is gone but processes of
        its group that started after it remain (nginx workers survive a SIGKILLed master), those
        are killed: they are the engine's, and they hold its ports.
        """
        import psutil

        try:
            pid = int(record["pid"])
            create_time = float(record["create_time"])
            cmdline = [str(part) for part in record["argv"]]
        except (KeyError, TypeError, ValueError):
            return "none"
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                same = abs(proc.create_time() - create_time) < 0.05 and _same_command(proc.cmdline(), cmdline)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return "killed" if _kill_group_leftovers(pid, create_time, cmdline, log) else "gone"
        except psutil.AccessDenied:
            same = False
        if not same:
            log.warning("engine pidfile names a process that is not ours; leaving it alone", pid=pid)
            return "not ours"
        log.warning("stopping an engine left over by a previous daemon", pid=pid, cmdline=" ".join(cmdline))
        try:
            proc.send_signal(stop_signal)
            proc.wait(deadline)
            _kill_group_leftovers(pid, create_time, cmdline, log)
            return "stopped"
        except psutil.NoSuchProcess:
            _kill_group_leftovers(pid, create_time, cmdline, log)
            return "stopped"
        except psutil.TimeoutExpired:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                proc.wait(5)
            except (psutil.NoSuchProcess, psutil.TimeoutExpired):
                pass
            return "killed"


def live_children(pid: int) -> dict[int, str]:
    """The live (not zombie) children of `pid`: pid -> command line (nginx retitles its workers)."""
    import psutil

    result: dict[int, str] = {}
    try:
        kids = psutil.Process(pid).children()
    except psutil.NoSuchProcess:
        return result
    for kid in kids:
        try:
            if kid.status() != psutil.STATUS_ZOMBIE:
                result[kid.pid] = " ".join(kid.cmdline())
        except psutil.NoSuchProcess:
            continue
    return result


def _same_command(actual: Sequence[str], spawned: Sequence[str]) -> bool:
    """Whether a live command line is the one we spawned. Programs may retitle themselves
    (nginx shows `nginx: master process <argv>`), so the spawned argv must appear in order."""
    if list(actual) == list(spawned):
        return True
    return bool(spawned) and " ".join(spawned) in " ".join(actual)


def _kill_group_leftovers(pgid: int, create_time: float, cmdline: Sequence[str], log: Any) -> bool:
    """SIGKILL processes of group `pgid` started after the recorded master from the same program."""
    import psutil

    program = os.path.basename(cmdline[0]) if cmdline else ""
    killed = False
    for proc in psutil.process_iter(["pid", "create_time", "name", "exe"]):
        try:
            # The group leader itself is gone; a process now *leading* a group with that number
            # reuses the pid and is someone else's.
            if proc.pid in (os.getpid(), pgid) or os.getpgid(proc.pid) != pgid:
                continue
            if proc.info["create_time"] + 0.05 < create_time:
                continue
            names = {proc.info["name"] or "", os.path.basename(proc.info["exe"] or "")}
            if program and program not in names:
                continue
            log.warning("killing a leftover engine process", pid=proc.pid, group=pgid)
            proc.kill()
            killed = True
        except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError, PermissionError):
            continue
    if killed:
        end = time.monotonic() + 5
        while time.monotonic() < end and any(_in_group(p, pgid) for p in psutil.pids()):
            time.sleep(0.02)
    return killed


def _in_group(pid: int, pgid: int) -> bool:
    try:
        return os.getpgid(pid) == pgid
    except (ProcessLookupError, PermissionError):
        return False


async def _forward_lines(stream: asyncio.StreamReader | None, sink: StderrSink) -> None:
    """Hand every line of `stream` to `sink` until EOF (all writers of the pipe closed it)."""
    if stream is None:
        return
    while True:
        try:
            line = await stream.readline()
        except (ValueError, asyncio.LimitOverrunError):  # an overlong line: skip what is buffered
            continue
        except (ConnectionError, OSError):
            return
        if not line:
            return
        hand_line(line, sink)


def hand_line(line: bytes, sink: StderrSink) -> None:
    """Give one line of engine output to `sink` (blank lines dropped; a failing sink never stops the reader)."""
    text = line.decode("utf-8", "replace").rstrip()
    if text:
        try:
            sink(text)
        except Exception:  # noqa: BLE001 - logging must never kill the reader
            pass
