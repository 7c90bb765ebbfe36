"""The engine interface every proxy engine implements, and the registry that finds engines by name.

An engine turns a `RouteTable` into served traffic. `render` is pure (the ops use case:
`gotunnel render`), `validate` asks the engine's own validator (`gotunnel validate`), and
`start`/`apply`/`stop` run it. `start` and `apply` validate the table themselves, once, as part
of switching (the daemon calls nothing else first): a table the engine refuses raises
`EngineValidationError` and the running configuration stays. `apply` must not drop in-flight
requests or open websockets.

An engine class also declares, next to its code, its `options` (`EngineOption`: typed, with
defaults and help; read with `self.option(name)`) and its `capabilities` (how it departs from the
conformance suite's behaviours; the README matrix is generated from them).
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from .errors import RuntimeFailure, UsageError
from .options import EngineOption, EngineOptions, resolve_options

if TYPE_CHECKING:
    import pluggy

    from .existing import ExistingTable
    from .inspect.native import InspectMode, InspectRecorder
    from .metrics.stats import EngineStats
    from .models import RouteTable
    from .supervisor.listeners import ListenerSockets


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
    #: Listening sockets the daemon was given for the listen ports (ports below 1024, from the port
    #: broker of `gotunnel ports`), or None: the engine binds its ports itself. An engine with
    #: `serves_given_sockets` serves on them through its own `listeners.dup()`, which it closes when
    #: it stops; the originals stay open (the daemon and the broker keep the ports).
    listeners: ListenerSockets | None = None
    #: Given to an engine whose `inspect_mode` is `native` (its inspected tunnels come unchanged,
    #: and it records them itself through this, see `gotunnel_core.inspect.native`); else None.
    recorder: "InspectRecorder | None" = None


#: How an engine does one behaviour of the conformance suite (`gotunnel_core.testing.conformance`).
CAPABILITY_KINDS = ("supported", "variant", "unsupported", "pending")


@dataclass(frozen=True)
class Capability:
    """How an engine does one conformance behaviour, declared next to its code (`Engine.capabilities`).

    `supported`: the suite's test runs and must pass. `variant`: it runs and must pass, and the
    README matrix notes the difference. `unsupported`: the engine cannot do it; the test is skipped
    with the reason. `pending`: not done yet; the test runs as a strict expected failure, so the
    day it passes the suite says so. Every kind but `supported` needs a reason.
    """

    kind: str = "supported"
    reason: str = ""

    def __post_init__(self) -> None:
        if self.kind not in CAPABILITY_KINDS:
            raise ValueError(f"capability kind {self.kind!r} is not one of {', '.join(CAPABILITY_KINDS)}")
        if self.kind != "supported" and not self.reason.strip():
            raise ValueError(f"a {self.kind!r} capability needs a reason")

    @classmethod
    def variant(cls, reason: str) -> "Capability":
        return cls("variant", reason)

    @classmethod
    def unsupported(cls, reason: str) -> "Capability":
        return cls("unsupported", reason)

    @classmethod
    def pending(cls, reason: str) -> "Capability":
        return cls("pending", reason)


SUPPORTED = Capability()


class EngineValidationError(UsageError):
    """The engine's own validator refused a rendered configuration; carries its message."""


class Engine(abc.ABC):
    """A proxy engine. Subclasses set `name` and implement the abstract methods."""

    name: str = ""
    #: Formats `gotunnel render --format` accepts; the first is the native one `render` returns.
    #: Empty: only the native format.
    formats: tuple[str, ...] = ()
    #: Conformance behaviour key -> how this engine departs from it (see `Capability`). A key not
    #: listed is fully supported; the README's engine matrix is generated from these declarations.
    capabilities: ClassVar[Mapping[str, Capability]] = {}
    #: Runtime name (`--runtime`) -> behaviour key -> how the engine departs from it when its program
    #: runs under that runtime; replaces the `capabilities` entry there. For what only a runtime
    #: changes, e.g. a container cannot inherit the daemon's listening sockets.
    runtime_capabilities: ClassVar[Mapping[str, Mapping[str, Capability]]] = {}
    #: This class's own options; `declared_options()` merges them over the class hierarchy (a
    #: subclass may redeclare a base option, e.g. to change its default).
    options: ClassVar[tuple[EngineOption, ...]] = ()
    #: Whether the engine serves on listening sockets the daemon hands it (`EngineContext.listeners`),
    #: which is how an unprivileged daemon serves on ports 80/443. The daemon refuses such ports to
    #: an engine without it, quoting the reason its `capabilities` give for `given_sockets`.
    serves_given_sockets: ClassVar[bool] = False
    #: Formats of `render_existing` (config for a proxy gotunnel does not run), the first the
    #: default. Empty: the engine offers no such output (`render --for existing` says so, exit 2).
    existing_formats: ClassVar[tuple[str, ...]] = ()
    #: Whether the proxy picks up `render_existing`'s files as soon as they are in place (Envoy's
    #: file xDS): `sync` then validates them in a staging directory first, moves them into place
    #: only when valid, and reloads nothing (unless given --reload-cmd).
    existing_applies_on_write: ClassVar[bool] = False

    @classmethod
    def inspect_mode(cls, settings: Mapping[str, Any]) -> "InspectMode":
        """How this engine, with `settings`, records tunnels started with `inspect` (`engines --json`).

        The default, `relay`: the daemon routes an inspected tunnel through its recording relay.
        An engine answering `native` gets inspected tunnels unchanged and `EngineContext.recorder`,
        and must feed it the bytes of each connection to their backends itself
        (`gotunnel_core.inspect.native`); the `detail` says how, or why not.
        """
        from .inspect.native import RELAY

        return RELAY

    def __init__(self, context: EngineContext) -> None:
        self.context = context
        self._option_values: EngineOptions | None = None

    @property
    def option_values(self) -> EngineOptions:
        """The effective, validated options, resolved on first use from `context.settings` and the
        environment (a bad or unknown one: `ValidationError`/`UsageError`, exit 2)."""
        if self._option_values is None:
            self._option_values = self.resolve_options(self.context.settings)
        return self._option_values

    @classmethod
    def declared_options(cls) -> dict[str, EngineOption]:
        """Every option of this engine by name, base classes' first."""
        merged: dict[str, EngineOption] = {}
        for klass in reversed(cls.__mro__):
            for option in vars(klass).get("options", ()):
                merged[option.name] = option
        return merged

    @classmethod
    def resolve_options(cls, settings: Mapping[str, Any], env: Mapping[str, str] | None = None) -> EngineOptions:
        """The engine's options from resolved settings and the environment (see `gotunnel_core.options`)."""
        return resolve_options(cls.name, cls.declared_options().values(), settings, env)

    def option(self, name: str) -> Any:
        """The effective value of a declared option."""
        return self.option_values[name]

    @abc.abstractmethod
    def render(self, table: "RouteTable") -> dict[str, str]:
        """Render the route table to config files: relative file name -> content. Pure."""

    def render_format(self, table: "RouteTable", fmt: str | None) -> dict[str, str]:
        """`render` in one of `formats` (None: the native one). Engines with more formats override this."""
        if fmt is None or (self.formats and fmt == self.formats[0]):
            return self.render(table)
        offered = ", ".join(self.formats) if self.formats else "only its native format"
        raise UsageError(f"engine {self.name!r} cannot render format {fmt!r}; it renders {offered}")

    async def validate(self, table: "RouteTable") -> None:  # noqa: B027 - a no-op default, not abstract
        """Check a table with the engine's own validator, changing nothing (`gotunnel validate`);
        raise EngineValidationError."""

    # ----- optional: a proxy gotunnel does not run (`render --for existing`, `sync`) ------------------
    def render_existing(self, table: "ExistingTable", fmt: str | None) -> dict[str, str]:
        """Config for a proxy the user runs: relative file name -> content, one of `existing_formats`
        (None: the first). Pure. Paths in it are absolute and every name it defines in the proxy's
        shared namespace starts with `gotunnel_`, so it can sit next to the user's own config."""
        raise UsageError(f"engine {self.name!r} cannot render for an existing proxy",
                         hint="engines that can: those listing existing_formats (nginx, caddy)")

    def validate_existing(self, output: Path, main_config: Path | None, fmt: str | None) -> None:
        """Check `output` (as `sync` wrote it; a staging copy for `existing_applies_on_write`)
        with the proxy's own validator, against the whole host config `main_config` when given;
        raise EngineValidationError with its message."""
        raise UsageError(f"engine {self.name!r} cannot validate a config for an existing proxy")

    def reload_existing(self, output: Path, main_config: Path | None, fmt: str | None) -> None:
        """Make the running proxy load `output` by its usual means (`nginx -s reload`, ...);
        `sync --reload-cmd` replaces this. Raise RuntimeFailure when the proxy did not take it."""
        raise UsageError(f"engine {self.name!r} cannot reload an existing proxy", hint="give --reload-cmd")

    def existing_format(self, fmt: str | None) -> str:
        """`fmt` checked against `existing_formats` (None: the first); a usage error otherwise."""
        if not self.existing_formats:
            raise UsageError(f"engine {self.name!r} cannot render for an existing proxy")
        if fmt is None:
            return self.existing_formats[0]
        if fmt not in self.existing_formats:
            raise UsageError(f"engine {self.name!r} cannot render format {fmt!r} for an existing proxy; "
                             f"it renders {', '.join(self.existing_formats)}")
        return fmt

    @abc.abstractmethod
    async def start(self, table: "RouteTable") -> None:
        """Validate `table` and start serving it; return once the listeners accept connections."""

    @abc.abstractmethod
    async def apply(self, table: "RouteTable") -> None:
        """Validate `table` and switch to it with zero downtime; on failure (EngineValidationError
        for a refused table) the running config stays. Called alone: nobody validates first."""

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

    @classmethod
    def capability(cls, behaviour: str, runtime: str | None = None) -> Capability:
        """How this engine does `behaviour` (a conformance suite key) under `runtime` (None: the
        engine's default): `SUPPORTED` unless declared."""
        declared = cls.runtime_capabilities.get(runtime, {}) if runtime is not None else {}
        return declared.get(behaviour) or cls.capabilities.get(behaviour, SUPPORTED)

    @classmethod
    def runtime_name(cls, settings: Mapping[str, Any]) -> str | None:
        """The runtime the engine's program runs under with these settings; None for an engine
        that runs inside the daemon (it has no runtime option)."""
        return None


@dataclass(frozen=True)
class EngineSpec:
    """What a plugin registers: the engine's name, its class and a one-line description."""

    name: str
    engine_class: type[Engine]
    description: str = ""
    plugin: str = ""


class RenderedLink(str):
    """A rendered file that is a symbolic link to an existing file instead of content; the string
    is the link's absolute target. For a file an engine must find under a name of its own (HAProxy
    loads a certificate's key from `<certificate>.key`) without copying a secret into a config
    directory or into `gotunnel render --out`."""

    def __new__(cls, target: str) -> "RenderedLink":
        if not os.path.isabs(target) or any(ord(ch) < 0x20 for ch in target):
            raise ValueError(f"a rendered link needs an absolute target path, not {target!r}")
        return super().__new__(cls, target)


def write_rendered(files: Mapping[str, str], out_dir: Path) -> list[Path]:
    """Write rendered files under `out_dir` (a `RenderedLink` as a symbolic link), refusing names
    that would escape it; a file or link already at a name is replaced, never written through."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    root = out_dir.resolve()
    for rel, content in sorted(files.items()):
        name = PurePath(rel).name
        parent = (root / rel).parent.resolve()
        if name in ("", ".", "..") or (parent != root and root not in parent.parents):
            raise RuntimeFailure(f"engine rendered a file outside the output directory: {rel!r}")
        parent.mkdir(parents=True, exist_ok=True)
        target = parent / name
        if target.is_symlink():
            target.unlink()  # an earlier render's link: replace it, never write into what it names
        if isinstance(content, RenderedLink):
            if target.exists():
                target.unlink()
            os.symlink(str(content), target)
        else:
            target.write_text(content)
        written.append(target)
    return written


def collect_engines(pm: "pluggy.PluginManager") -> dict[str, EngineSpec]:
    """Ask every plugin for its engines (`gotunnel_register_engines`, through `call_hook`: a plugin
    whose hook fails is logged and skipped); refuse two engines with one name."""
    from .plugins import call_hook

    specs: dict[str, EngineSpec] = {}
    problems: list[str] = []

    def registrar(plugin: str) -> dict[str, Any]:
        def register(spec: EngineSpec) -> None:
            spec = EngineSpec(spec.name, spec.engine_class, spec.description, spec.plugin or plugin)
            if spec.name in specs:
                problems.append(
                    f"engine {spec.name!r} is registered by both {specs[spec.name].plugin!r} and {spec.plugin!r}")
                return
            specs[spec.name] = spec

        return {"register": register}

    call_hook(pm, "gotunnel_register_engines", registrar)
    if problems:
        raise RuntimeFailure(problems[0], hint="uninstall one of the two plugins, or block one with GOTUNNEL_DISABLE_PLUGINS")
    return specs


def find_engine(specs: Mapping[str, EngineSpec], name: str) -> EngineSpec:
    """The spec for `name`, or a usage error listing what is installed."""
    if name in specs:
        return specs[name]
    installed = ", ".join(sorted(specs)) or "none"
    raise UsageError(f"unknown engine {name!r}; installed: {installed} (is gotunnel-{name} installed?)")
