"""The nginx engine: a supervised nginx master serving configs rendered from Jinja2 templates.

nginx runs in the foreground (`daemon off; master_process on;`) as a child of the gotunnel
daemon, with `-p <work dir>` so its pid file, lock, temp files and control socket stay in the
state directory. A new route table is rendered into a new generation, checked with `nginx -t`,
published by swapping `current`, and loaded with SIGHUP; the supervisor waits until the control
socket reports the new generation. Graceful stop is SIGQUIT.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from gotunnel_core.engine import Capability, EngineValidationError
from gotunnel_core.errors import RuntimeFailure, UsageError
from gotunnel_core.models import RouteTable
from gotunnel_core.options import EngineOption
from gotunnel_core.supervisor import AdminClient, EngineProcess, SupervisedEngine, WorkDir, run_for_output
from gotunnel_core.values import image_reference, integer

from .metrics import parse_access_record

if TYPE_CHECKING:
    from gotunnel_core.existing import ExistingTable

INSTALL_HINT = "Install it with `sudo apt-get install nginx-light` (Debian/Ubuntu) or `brew install nginx` (macOS)."


class NginxEngine(SupervisedEngine):
    """nginx as a gotunnel engine."""

    name = "nginx"
    binary_candidates = ("nginx",)
    install_hint = INSTALL_HINT
    stop_signal = signal.SIGQUIT
    options = (
        EngineOption("image", image_reference, "nginx:1.28.0", "the docker runtime's image (official, pinned)"),
        EngineOption("workers", integer(1, 64), 1, "nginx worker processes"),
        EngineOption("worker_connections", integer(64, 1_000_000), 4096, "connections per worker"),
        EngineOption("keepalive", integer(1, 10000), 256, "idle upstream connections kept per tunnel and worker"),
    )
    capabilities = {
        "health_ejection": Capability.variant(
            "passive only (max_fails/fail_timeout, failed requests retried on the next backend); "
            "active checks need nginx Plus"),
        "h2_websocket": Capability.unsupported(
            "nginx 1.22 (Debian) does not implement RFC 8441 and does not advertise it: browsers open websockets "
            "over HTTP/1.1, which works (see the browser row)"),
        "host_header_backend_each": Capability.unsupported(
            "nginx builds the request before it picks a server of the upstream block, so with several "
            "backends every backend gets the first one's host:port"),
        "upstream_timeout": Capability.variant(
            "proxy_read_timeout also applies between two reads of a response, so a stream silent for "
            "upstream_timeout is cut too (builtin: first byte only)"),
        "metrics_counters": Capability.variant(
            "counted from a syslog access-log stream to the daemon (nginx-light has no per-host counters; option "
            "`metrics`): no active-connections gauge, backend health from the daemon's own TCP probe"),
    }
    access_log_parser = staticmethod(parse_access_record)
    serves_given_sockets = True
    existing_formats = ("fragment", "full")

    # ----- rendering ------------------------------------------------------------------------------
    def render(self, table: RouteTable) -> dict[str, str]:
        from .render import render_files, render_options

        return render_files(table, render_options(self.context.settings, self.option_values,
                                                  metrics_socket=self.access_log_socket))

    def generation_files(self, generation: int) -> dict[str, str]:
        from .render import generation_conf

        return {"generation.conf": generation_conf(generation)}

    # ----- an nginx gotunnel does not run (`render --for existing`, `sync`) ---------------------------
    def render_existing(self, table: "ExistingTable", fmt: str | None) -> dict[str, str]:
        from .render import render_existing_files, render_options

        options = render_options(self.context.settings, self.option_values)
        return render_existing_files(table, options, self.existing_format(fmt))

    def validate_existing(self, output: Path, main_config: Path | None, fmt: str | None) -> None:
        """`nginx -t` on the host's whole config (`main_config`); without one, on the output itself
        (a full nginx.conf) or on a minimal config that includes the fragment."""
        binary = self.program()
        with tempfile.TemporaryDirectory(prefix="gotunnel-nginx-t-") as scratch:
            if main_config is not None:
                argv = [binary, "-t", "-q", "-e", "stderr", "-c", str(main_config)]
            elif self.existing_format(fmt) == "full":
                argv = [binary, "-t", "-q", "-e", "stderr", "-p", scratch + "/", "-c", str(output)]
            else:
                from .quoting import ngx_path

                wrapper = Path(scratch) / "nginx.conf"
                wrapper.write_text(f"pid {ngx_path(scratch + '/nginx.pid')};\nevents {{}}\n"
                                   f"http {{\n    include {ngx_path(str(output))};\n}}\n")
                argv = [binary, "-t", "-q", "-e", "stderr", "-p", scratch + "/", "-c", str(wrapper)]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
            raise EngineValidationError(f"nginx -t refused the configuration: {' / '.join(lines) or '(no output)'}")

    def reload_existing(self, output: Path, main_config: Path | None, fmt: str | None) -> None:
        """`nginx -s reload`, which signals the master named by the pid file of `main_config`."""
        argv = [self.program(), "-s", "reload", "-e", "stderr"] + (["-c", str(main_config)] if main_config else [])
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeFailure(f"nginx -s reload failed: {(done.stderr + done.stdout).strip() or '(no output)'}")

    # ----- the program ----------------------------------------------------------------------------
    @classmethod
    def version_of(cls, binary: str) -> str | None:
        match = re.search(r"nginx/(\S+)", run_for_output([binary, "-v"]))
        return match.group(1) if match else None

    def command(self, binary: str, work: WorkDir) -> list[str]:
        root = self.runtime.map_path(str(work.root))
        return [binary, "-p", root + "/", "-e", "stderr", "-c", root + "/current/nginx.conf"]

    def validate_command(self, binary: str, work: WorkDir, config_dir: Path) -> list[str]:
        root = self.runtime.map_path(str(work.root))
        return [binary, "-t", "-q", "-p", root + "/", "-e", "stderr", "-c", str(config_dir / "nginx.conf")]

    # ----- sockets the daemon was given (ports 80/443 through `gotunnel ports`) ----------------------
    # nginx adopts the listening sockets named in its NGINX environment variable ("fd;fd;", its
    # binary-upgrade mechanism) whose address matches a `listen` directive, and keeps them across
    # reloads; `nginx -t` inherits them too, as it binds every listen address it does not inherit.
    # The copies of the given sockets are the base class's (`open_listeners`, `inherited_fds`).
    def environment(self) -> Mapping[str, str]:
        fds = self.inherited_fds()
        return {"NGINX": "".join(f"{fd};" for fd in fds)} if fds else {}

    def before_spawn(self) -> None:
        if self.socket_path("ctl.sock") is None:
            raise UsageError(f"the nginx control socket path {self.work.run / 'ctl.sock'} is too long for a unix socket",
                             hint="use a shorter --state-dir")
        # A killed nginx leaves its unix socket behind; a new master could not bind it.
        try:
            (self.work.run / "ctl.sock").unlink()
        except FileNotFoundError:
            pass

    # ----- readiness and reload -------------------------------------------------------------------
    async def served_generation(self) -> int | None:
        """The generation the control socket reports, or None when nginx does not answer."""
        path = self.socket_path("ctl.sock")
        answer = await AdminClient(unix=path).get("/generation", timeout=2.0) if path else None
        if answer is None or answer.status != 200 or not answer.text.isdigit():
            return None
        return int(answer.text)

    async def ready(self, proc: EngineProcess, generation: int) -> bool:
        return await self.served_generation() == generation

    async def reload(self, proc: EngineProcess, generation: int) -> None:
        mark = self.stderr_mark()
        before = set(proc.children())
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + self.option("ready_deadline")
        loaded = False
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise RuntimeFailure(f"nginx exited during reload: {self.stderr_since(mark) or '(no output)'}")
            loaded = loaded or await self.served_generation() == generation
            # New workers serve the new generation; the old ones must also have stopped accepting
            # (they close their listeners on SIGQUIT and retitle themselves "shutting down"),
            # or a new connection could still land on the old routes. They may live on to finish
            # open requests and websockets.
            if loaded and all(pid not in before or "shutting down" in title
                              for pid, title in proc.children().items()):
                return
            await asyncio.sleep(0.02)
        raise RuntimeFailure(f"nginx did not load the new configuration: {self.stderr_since(mark) or '(no output)'}",
                             hint="the previous configuration stays in use; see `gotunnel logs`")


__all__ = ["NginxEngine", "INSTALL_HINT"]

