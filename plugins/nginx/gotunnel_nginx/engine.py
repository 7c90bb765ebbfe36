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
import time
from pathlib import Path


from gotunnel_core.engine import engine_option
from gotunnel_core.errors import RuntimeFailure
from gotunnel_core.models import RouteTable
from gotunnel_core.supervisor import SupervisedEngine, WorkDir
from gotunnel_core.supervisor.binary import run_for_output
from gotunnel_core.supervisor.runtime import EngineProcess

INSTALL_HINT = "Install it with `sudo apt-get install nginx-light` (Debian/Ubuntu) or `brew install nginx` (macOS)."


class NginxEngine(SupervisedEngine):
    """nginx as a gotunnel engine."""

    name = "nginx"
    binary_candidates = ("nginx",)
    install_hint = INSTALL_HINT
    stop_signal = signal.SIGQUIT
    #: The docker runtime's image (official, pinned; GOTUNNEL_NGINX_IMAGE overrides it).
    docker_image = "nginx:1.28.0"

    # ----- rendering ------------------------------------------------------------------------------
    def render(self, table: RouteTable) -> dict[str, str]:
        from .render import render_files, render_options

        settings = self.context.settings
        options = render_options(settings, lambda key: engine_option(settings, self.name, key))
        return render_files(table, options)

    def generation_files(self, generation: int) -> dict[str, str]:
        from .render import generation_conf

        return {"generation.conf": generation_conf(generation)}

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

    def before_spawn(self) -> None:
        # A killed nginx leaves its unix socket behind; a new master could not bind it.
        try:
            (self.work.run / "ctl.sock").unlink()
        except FileNotFoundError:
            pass

    # ----- readiness and reload -------------------------------------------------------------------
    async def served_generation(self) -> int | None:
        """The generation the control socket reports, or None when nginx does not answer."""
        path = str(self.work.run / "ctl.sock")
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), 1.0)
        except (OSError, asyncio.TimeoutError):
            return None
        try:
            writer.write(b"GET /generation HTTP/1.0\r\nHost: gotunnel\r\n\r\n")
            data = await asyncio.wait_for(reader.read(4096), 2.0)
        except (OSError, asyncio.TimeoutError):
            return None
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200") or not body.strip().isdigit():
            return None
        return int(body.strip())

    async def ready(self, proc: EngineProcess, generation: int) -> bool:
        return await self.served_generation() == generation

    async def reload(self, proc: EngineProcess, generation: int) -> None:
        mark = self._lines_seen
        before = set(proc.children())
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + self._option("ready_deadline", self.ready_deadline)
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

