"""The engine interface every proxy engine implements, and the registry that finds engines by name.

An engine turns a `RouteTable` into served traffic. `render` is pure (the ops use case:
`gotunnel render`), `validate` asks the engine's own validator, and `start`/`apply`/`stop`
run it; `apply` must not drop in-flight requests or open websockets.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .errors import RuntimeFailure, UsageError

if TYPE_CHECKING:
    import pluggy

    from .metrics.stats import EngineStats
    from .models import RouteTable


@dataclass(frozen=True)
class BinaryStatus:
    """Whether an engine's external program was found, where, and its version."""

    found: bool
    path: str | None = None
    version: str | None = None
    hint: str | None = None


@dataclass(frozen=True)
class EngineHealth:
    """What `gotunnel status` shows about the running engine."""

    running: bool
    detail: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class EngineContext:
    """What the core hands an engine: its private work directory, settings, hooks and logger."""

    work_dir: Path
    settings: Mapping[str, Any]
    hook: Any = None  # pluggy HookRelay of the plugin manager
    log: Any = None  # structlog logger bound to the engine


class EngineValidationError(UsageError):
    """The engine's own validator refused a rendered configuration; carries its message."""


class Engine(abc.ABC):
    """A proxy engine. Subclasses set `name` and implement the abstract methods."""

    name: str = ""
    #: Formats `gotunnel render --format` accepts; the first is the native one `render` returns.
    #: Empty: only the native format.
    formats: tuple[str, ...] = ()

    def __init__(self, context: EngineContext) -> None:
        self.context = context

    @abc.abstractmethod
    def render(self, table: "RouteTable") -> dict[str, str]:
        """Render the route table to config files: relative file name -> content. Pure."""

    def render_format(self, table: "RouteTable", fmt: str | None) -> dict[str, str]:
        """`render` in one of `formats` (None: the native one). Engines with more formats override this."""
        if fmt is None or (self.formats and fmt == self.formats[0]):
            return self.render(table)
        offered = ", ".join(self.formats) if self.formats else "only its native format"
        raise UsageError(f"engine {self.name!r} cannot render format {fmt!r}; it renders {offered}")

    async def validate(self, table: "RouteTable") -> None:
        """Check a rendered table with the engine's own validator; raise EngineValidationError."""

    @abc.abstractmethod
    async def start(self, table: "RouteTable") -> None:
        """Start serving `table`; return once the listeners accept connections."""

    @abc.abstractmethod
    async def apply(self, table: "RouteTable") -> None:
        """Switch to `table` with zero downtime; on failure the running config stays."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop serving, letting in-flight requests finish within a short deadline."""

    def health(self) -> EngineHealth:
        """Report whether the engine runs, and anything worth showing in `status`."""
        return EngineHealth(running=False)

    async def metrics(self) -> "EngineStats | None":
        """Per-tunnel request counters, backend health and restarts, read at each metrics scrape.

        Counters are cumulative since the engine started, keyed by tunnel name (relabel the
        engine's own statistics to tunnel names). Backend health None: the daemon probes the
        backends itself. None (the default): the engine counts nothing per request.
        """
        return None

    @classmethod
    def probe(cls, settings: Mapping[str, Any]) -> BinaryStatus:
        """Find the engine's program (if it needs one) and its version, for `gotunnel engines`."""
        return BinaryStatus(found=True, path=None, version=None)


@dataclass(frozen=True)
class EngineSpec:
    """What a plugin registers: the engine's name, its class and a one-line description."""

    name: str
    engine_class: type[Engine]
    description: str = ""
    plugin: str = ""


def engine_option(settings: Mapping[str, Any], engine: str, key: str, env: Mapping[str, str] | None = None) -> Any:
    """An engine-specific option: `--engine-bin` (for `bin`, when `engine` is selected), then
    the environment `GOTUNNEL_<ENGINE>_<KEY>`, then the config file's `[engines.<engine>]` table."""
    import os

    env = os.environ if env is None else env
    if key == "bin" and settings.get("engine") == engine and settings.get("engine_bin"):
        return settings["engine_bin"]
    from_env = env.get(f"GOTUNNEL_{engine.upper()}_{key.upper()}")
    if from_env:
        return from_env
    table = (settings.get("engines") or {}).get(engine) or {}
    return table.get(key)


def write_rendered(files: Mapping[str, str], out_dir: Path) -> list[Path]:
    """Write rendered files under `out_dir`, refusing names that would escape it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    root = out_dir.resolve()
    for rel, content in sorted(files.items()):
        target = (out_dir / rel).resolve()
        if root not in target.parents:
            raise RuntimeFailure(f"engine rendered a file outside the output directory: {rel!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        written.append(target)
    return written


def collect_engines(pm: "pluggy.PluginManager") -> dict[str, EngineSpec]:
    """Ask every plugin for its engines; refuse two engines with one name."""
    specs: dict[str, EngineSpec] = {}
    problems: list[str] = []

    for impl in pm.hook.gotunnel_register_engines.get_hookimpls():
        plugin_name = impl.plugin_name

        def register(spec: EngineSpec, _plugin: str = plugin_name) -> None:
            spec = EngineSpec(spec.name, spec.engine_class, spec.description, spec.plugin or _plugin)
            if spec.name in specs:
                problems.append(
                    f"engine {spec.name!r} is registered by both {specs[spec.name].plugin!r} and {spec.plugin!r}"
                )
                return
            specs[spec.name] = spec

        kwargs = {"register": register}
        impl.function(*[kwargs[arg] for arg in impl.argnames])
    if problems:
        raise RuntimeFailure(problems[0], hint="uninstall one of the two plugins, or block one with GOTUNNEL_DISABLE_PLUGINS")
    return specs


def find_engine(specs: Mapping[str, EngineSpec], name: str) -> EngineSpec:
    """The spec for `name`, or a usage error listing what is installed."""
    if name in specs:
        return specs[name]
    installed = ", ".join(sorted(specs)) or "none"
    raise UsageError(f"unknown engine {name!r}; installed: {installed} (is gotunnel-{name} installed?)")
