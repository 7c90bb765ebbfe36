"""The HAProxy engine: a supervised HAProxy in master-worker mode, reloaded seamlessly.

HAProxy runs in the foreground as `haproxy -W -S <master CLI> -C <work>/current -f haproxy.cfg`, a child of the
gotunnel daemon. `-C` makes every path in the config relative to the generation directory that
`current` names, so the validator (`haproxy -c -C <new generation>`) reads exactly the files the
reload will. A new route table is rendered into a new generation, checked with `haproxy -c`,
published by swapping `current`, and loaded with SIGUSR2 to the master: the master re-executes
itself on the new config, takes the listening sockets over from the running worker (the socket
transfer `-x` does), starts a new worker and soft-stops the old one, which stops accepting and
lets its open requests and websockets finish. No listening socket is ever closed, so no queued
connection is reset. The reload counts as done once the master CLI (`-S run/master.sock`) counts
one more reload (the master then handles signals again: see `master.py`), the control socket
(`run/ctl.sock`) answers the new generation, and no old worker still listens on the tunnel ports,
so a request sent after `apply` returns meets the new routes. Graceful stop is SIGUSR1 (soft stop).
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from pathlib import Path

from gotunnel_core.engine import Capability, EngineContext
from gotunnel_core.errors import RuntimeFailure, UsageError
from gotunnel_core.models import Listen, RouteTable
from gotunnel_core.options import EngineOption
from gotunnel_core.supervisor import AdminClient, EngineProcess, Runtime, SupervisedEngine, WorkDir, run_for_output
from gotunnel_core.values import integer

from .listening import listens_on
from .master import show_proc
from .metrics import parse_access_record

INSTALL_HINT = ("Install HAProxy 2.6 or later with `sudo apt-get install haproxy` (Debian/Ubuntu) "
                "or `brew install haproxy` (macOS).")
CONTROL_SOCKET = "ctl.sock"
MASTER_SOCKET = "master.sock"
#: What HAProxy says on every reload (its version and path; one line per proxy an old worker
#: stops, so one per tunnel): nothing to act on.
_ROUTINE = re.compile(r"Proxy \S+ stopped \(cumulated conns|Stopping (frontend|backend|proxy) |"
                      r"haproxy version is |path to executable is ")


#: `[ALERT]    (1234) : config : <what>`: the part worth showing.
_ALERT = re.compile(r"\[ALERT\]\s+\(\d+\)\s*:\s*(?:config\s*:\s*)?(.*)")
_SUMMARY = re.compile(r"^(Error\(s\) found in configuration file|Fatal errors found in configuration)")


class HAProxyEngine(SupervisedEngine):
    """HAProxy as a gotunnel engine."""

    name = "haproxy"
    # Debian installs it in /usr/sbin, which an ordinary user's PATH often lacks.
    binary_candidates = ("haproxy", "/usr/sbin/haproxy", "/usr/local/sbin/haproxy")
    install_hint = INSTALL_HINT
    stop_signal = signal.SIGUSR1
    options = (
        EngineOption("threads", integer(1, 64), None, "worker threads (unset: one per CPU HAProxy may run on)"),
        EngineOption("maxconn", integer(100, 1_000_000), None,
                     "most concurrent connections (unset: what the open-file limit allows)"),
    )
    capabilities = {
        "weights": Capability.variant(
            "HAProxy weights go from 1 to 256: when a tunnel has a larger one, all are scaled down "
            "(1000:1 becomes 256:1)"),
        "not_found_page": Capability.variant(
            "the page is served from one 16 KiB buffer (`http-request return`): it lists the tunnels that fit, "
            "by name (about 30), then how many more"),
        "host_header_backend_each": Capability.variant(
            "the chosen server's name is sent as Host (`http-send-name-header`), as HAProxy picks the server after "
            "every header rule ran; server names cannot hold `[` nor repeat, so with several IPv6 backends, or "
            "one address listed twice, every backend gets the first one's host:port"),
        "metrics_counters": Capability.variant(
            "counted from its access log sent to the daemon (option `metrics`): latency is HAProxy's active time "
            "(%Ta), no active-connections gauge, backend health from the daemon's own TCP probe"),
        "upstream_timeout": Capability.variant(
            "`timeout server` also applies between two reads of a response, so a stream silent for "
            "upstream_timeout is cut too (builtin: first byte only)"),
    }
    access_log_parser = staticmethod(parse_access_record)  # counted from the access log (option `metrics`)
    serves_given_sockets = True  # `bind fd@N` on the inherited sockets, kept by the master across reloads

    def __init__(self, context: EngineContext, runtime: Runtime | None = None) -> None:
        super().__init__(context, runtime)
        self._listen: Listen | None = None
        self._reloads = 0  # the master's reload count, as `show proc` last said

    # ----- rendering ------------------------------------------------------------------------------
    def control_socket(self) -> str:
        """The control socket's path as HAProxy sees it (the generation endpoint)."""
        return self._unix_socket(CONTROL_SOCKET, "control")

    def master_socket(self) -> str:
        """The master CLI's path (`-S`)."""
        return self._unix_socket(MASTER_SOCKET, "master")

    def _unix_socket(self, name: str, what: str) -> str:
        path = self.socket_path(name)
        if path is None:
            raise UsageError(f"the HAProxy {what} socket path {self.work.run / name} is too long for a unix socket",
                             hint="use a shorter --state-dir")
        return path

    def render(self, table: RouteTable) -> dict[str, str]:
        from .render import render_files, render_options

        return render_files(table, render_options(self.context.settings, self.option_values, self.control_socket(),
                                                  self.given_fds(), self.access_log_socket))

    def generation_files(self, generation: int) -> dict[str, str]:
        from .render import generation_file

        return generation_file(generation)

    # ----- the program ----------------------------------------------------------------------------
    @classmethod
    def version_of(cls, binary: str) -> str | None:
        """`2.6.12-1+deb12u4` from `haproxy -v` (`HAProxy version 2.6.12-1+deb12u4 2026/10/17 - ...`)."""
        match = re.search(r"version (\S+)", run_for_output([binary, "-v"]))
        return match.group(1) if match else None

    def command(self, binary: str, work: WorkDir) -> list[str]:
        from .render import CONFIG_FILE

        return [binary, "-W", "-S", self.master_socket(), "-C", self.runtime.map_path(str(work.current)), "-f", CONFIG_FILE]

    def validate_command(self, binary: str, work: WorkDir, config_dir: Path) -> list[str]:
        from .render import CONFIG_FILE

        # Not -q: HAProxy 2.6 then says nothing at all about what it refused.
        return [binary, "-c", "-C", str(config_dir), "-f", CONFIG_FILE]

    def validator_message(self, output: str, config_dir: Path) -> str:
        """HAProxy's [ALERT] lines without their banner and the closing summaries:
        `parsing [haproxy.cfg:97] : 'server s0' : could not resolve address 'no-such-host.invalid'.`"""
        alerts = []
        for line in output.splitlines():
            match = _ALERT.match(line.strip())
            if match and not _SUMMARY.search(match.group(1)):
                alerts.append(match.group(1).replace(str(config_dir) + "/", ""))
        return "; ".join(alerts) or super().validator_message(output, config_dir)

    def ignore_stderr_line(self, line: str) -> bool:
        return bool(_ROUTINE.search(line))

    # ----- sockets the daemon was given (ports 80/443 through `gotunnel ports`) ----------------------
    # HAProxy serves on inherited descriptors named `fd@N` in `bind` (`given_fds`; the base class
    # keeps the copies the master inherits); the master keeps them open across its re-executions,
    # and a reload hands the new worker the old worker's copies.

    # ----- readiness and reload -------------------------------------------------------------------
    async def served_generation(self) -> int | None:
        """The generation the control socket reports, or None when HAProxy does not answer."""
        answer = await AdminClient(unix=self.control_socket()).get("/generation", timeout=2.0)
        if answer is None or answer.status != 200 or not answer.text.isdigit():
            return None
        return int(answer.text)

    async def ready(self, proc: EngineProcess, generation: int) -> bool:
        """The worker serves `generation` and the master answers its CLI (so a signal sent now is
        handled, not lost)."""
        if await self.served_generation() != generation:
            return False
        processes = await show_proc(self.master_socket())
        if processes is not None:
            self._reloads = processes.reloads
        return processes is not None

    async def reload(self, proc: EngineProcess, generation: int) -> None:
        """SIGUSR2 to the master; done once the master answers with one more reload, the new
        worker serves `generation`, and every worker that ran before has stopped listening on
        the tunnel ports (it may live on to finish requests and websockets)."""
        mark = self.stderr_mark()
        before = set(proc.children())
        previous = await show_proc(self.master_socket())
        reloads, failed = (previous.reloads, previous.failed) if previous else (self._reloads, 0)
        ports = self._ports()
        proc.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + self.option("ready_deadline")
        settled = loaded = False
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise RuntimeFailure(f"haproxy exited during reload: {self.stderr_since(mark) or '(no output)'}")
            processes = await show_proc(self.master_socket())
            if processes is not None and processes.failed > failed:
                raise RuntimeFailure(f"haproxy did not load the new configuration: {self.stderr_since(mark) or '(no output)'}",
                                     hint="the previous configuration stays in use; see `gotunnel logs`")
            settled = settled or (processes is not None and processes.reloads > reloads)
            loaded = loaded or await self.served_generation() == generation
            if settled and loaded and not any(listens_on(pid, ports) for pid in before):
                self._reloads = processes.reloads if processes is not None else reloads + 1
                return
            await asyncio.sleep(0.02)
        raise RuntimeFailure(f"haproxy did not load the new configuration in time: {self.stderr_since(mark) or '(no output)'}",
                             hint="the previous configuration stays in use; see `gotunnel logs`")

    def _ports(self) -> set[int]:
        listen = self._listen
        return set() if listen is None else {listen.http_port, listen.https_port}

    async def start(self, table: RouteTable) -> None:
        self._listen = table.listen  # the ports old workers must stop listening on (fixed while running)
        await super().start(table)


__all__ = ["HAProxyEngine", "INSTALL_HINT"]
