"""The plugin manager factory: built-in plugins registered explicitly, third-party ones from the
`gotunnel` entry-point group, each loaded on its own so a broken plugin is reported and skipped.

Nothing happens at import time; callers build a manager with `make_plugin_manager()` when a
command needs plugins. Hooks are called through pluggy only: `pm.hook.<name>(...)` where one
failure may fail the call (the core's own command modules; `gotunnel_request`, whose caller
answers 500), and `call_hook` everywhere a failing plugin must be logged and skipped.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Iterable, Mapping

import pluggy

from . import hookspecs

ENTRY_POINT_GROUP = "gotunnel"
DISABLE_ENV = "GOTUNNEL_DISABLE_PLUGINS"
TRACE_ENV = "GOTUNNEL_TRACE_HOOKS"

#: Plugins shipped with gotunnel that are registered explicitly when importable:
#: plugin name -> module. They also declare entry points, which are then skipped.
DEFAULT_PLUGINS: dict[str, str] = {
    "builtin": "gotunnel_builtin_proxy.plugin",
    "nginx": "gotunnel_nginx.plugin",
    "caddy": "gotunnel_caddy.plugin",
    "envoy": "gotunnel_envoy.plugin",
}


@dataclass(frozen=True)
class PluginRecord:
    """What `gotunnel plugins` shows about one plugin: where it came from and whether it loaded."""

    name: str
    source: str  # "default" or "entry point"
    distribution: str | None = None
    version: str | None = None
    module: str | None = None
    status: str = "loaded"  # loaded | failed | blocked
    error: str | None = None
    hooks: tuple[str, ...] = ()


@dataclass
class GotunnelPluginManager:
    """A pluggy manager plus the load report of every plugin it saw."""

    pm: pluggy.PluginManager
    records: list[PluginRecord] = field(default_factory=list)

    @property
    def hook(self) -> pluggy.HookRelay:
        return self.pm.hook

    def failures(self) -> list[PluginRecord]:
        return [r for r in self.records if r.status == "failed"]


def disabled_plugins(env: dict[str, str] | None = None) -> set[str]:
    """Plugin names blocked by GOTUNNEL_DISABLE_PLUGINS (comma- or space-separated)."""
    raw = (env if env is not None else os.environ).get(DISABLE_ENV, "")
    return {part.strip() for part in raw.replace(",", " ").split() if part.strip()}


def _hook_names(pm: pluggy.PluginManager, plugin: object) -> tuple[str, ...]:
    return tuple(sorted(caller.name for caller in (pm.get_hookcallers(plugin) or [])))


def _register_checked(pm: pluggy.PluginManager, plugin: object, name: str) -> None:
    """Register and verify every hook implementation names a known hook (catches misspellings)."""
    pm.register(plugin, name=name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError:
        pm.unregister(plugin)
        raise


def make_plugin_manager(
    *,
    load_entrypoints: bool = True,
    load_defaults: bool = True,
    extra_plugins: Iterable[tuple[str, object]] = (),
    blocked: Iterable[str] | None = None,
) -> GotunnelPluginManager:
    """Build a manager: hook specs, default plugins, entry-point plugins, then `extra_plugins`.

    `load_defaults=False` and `load_entrypoints=False` give a manager with only `extra_plugins`
    (the CLI registers the core's own command modules that way, without importing any engine).
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    manager = GotunnelPluginManager(pm)
    blocked_names = set(disabled_plugins() if blocked is None else blocked)
    for name in blocked_names:
        pm.set_blocked(name)

    for name, module_name in (DEFAULT_PLUGINS if load_defaults else {}).items():
        if name in blocked_names:
            manager.records.append(PluginRecord(name, "default", module=module_name, status="blocked"))
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue  # not installed: its entry point (if any) is tried below
        _register_checked(pm, module, name)
        manager.records.append(PluginRecord(name, "default", module=module_name, hooks=_hook_names(pm, module)))

    if load_entrypoints:
        _load_entrypoints(manager, blocked_names)

    for name, plugin in extra_plugins:
        _register_checked(pm, plugin, name)
        manager.records.append(PluginRecord(name, "extra", module=getattr(plugin, "__name__", None), hooks=_hook_names(pm, plugin)))

    if os.environ.get(TRACE_ENV, "").lower() in ("1", "true", "yes"):
        _enable_tracing(pm)
    return manager


def _load_entrypoints(manager: GotunnelPluginManager, blocked_names: set[str]) -> None:
    """Load each entry point on its own; a failing one is recorded, logged and skipped."""
    pm = manager.pm
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else None
        dist_version = dist.version if dist is not None else None
        if pm.has_plugin(ep.name) or ep.name in {r.name for r in manager.records}:
            continue
        if ep.name in blocked_names:
            manager.records.append(PluginRecord(ep.name, "entry point", dist_name, dist_version, ep.value, status="blocked"))
            continue
        try:
            plugin = ep.load()
            _register_checked(pm, plugin, ep.name)
        except Exception as exc:  # noqa: BLE001 - any error in third-party code must not crash the CLI
            error = f"{type(exc).__name__}: {exc}"
            manager.records.append(
                PluginRecord(ep.name, "entry point", dist_name, dist_version, ep.value, status="failed", error=error)
            )
            _log_failure(ep.name, dist_name, error)
            continue
        manager.records.append(
            PluginRecord(ep.name, "entry point", dist_name, dist_version, ep.value, hooks=_hook_names(pm, plugin))
        )


def call_hook(pm: pluggy.PluginManager, name: str,
              kwargs: Mapping[str, Any] | Callable[[str], Mapping[str, Any]]) -> list[tuple[str, Any]]:
    """Call hook `name` once per implementing plugin, each call through pluggy, so
    GOTUNNEL_TRACE_HOOKS traces it and `wrapper=True` implementations wrap it; a plugin that
    raises is logged and skipped and the others still run. `kwargs` may be a function of the
    plugin's name (per-plugin callbacks, e.g. `register`). Returns (plugin name, result) for
    each plugin that returned, in pluggy's call order (last registered first)."""
    caller = getattr(pm.hook, name)
    plain = [impl for impl in caller.get_hookimpls() if not (impl.wrapper or impl.hookwrapper)]
    results: list[tuple[str, Any]] = []
    for impl in reversed(plain):
        others = [other.plugin for other in plain if other is not impl]
        arguments = kwargs(impl.plugin_name) if callable(kwargs) else kwargs
        try:
            outcome = pm.subset_hook_caller(name, remove_plugins=others)(**arguments)
        except Exception as exc:  # noqa: BLE001 - one plugin's bug must not break the daemon or the CLI
            _log_hook_failure(name, impl.plugin_name, f"{type(exc).__name__}: {exc}")
            continue
        results.append((impl.plugin_name, outcome))
    return results


def _log_hook_failure(hook: str, plugin: str, error: str) -> None:
    import structlog

    structlog.get_logger("gotunnel.plugins").warning("plugin hook failed; skipped", hook=hook, plugin=plugin,
                                                     error=error)


def _log_failure(name: str, dist: str | None, error: str) -> None:
    import structlog

    # info, not warning: the CLI reports failures through `gotunnel plugins`; the daemon logs them.
    structlog.get_logger("gotunnel.plugins").info("plugin failed to load; skipped", plugin=name, distribution=dist, error=error)


def _enable_tracing(pm: pluggy.PluginManager) -> None:
    import structlog

    log = structlog.get_logger("gotunnel.hooks")
    pm.trace.root.setwriter(lambda message: log.debug("hook", trace=message.rstrip()))
    pm.enable_tracing()
