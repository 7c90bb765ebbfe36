"""gotunnel's pytest plugin (entry point `pytest11: gotunnel`), loaded by pytest wherever
gotunnel-core is installed. It adds:

- the `gotunnel` fixture (a CLI runner with a private state dir and free ports, its daemon
  stopped by pid at teardown) and the `echo_backend` fixture (JSON echo servers);
- the `--gotunnel-engine NAME` option: run the engine conformance suite
  (`gotunnel_core.testing.conformance`) against NAME (repeatable or comma-separated). When pytest
  runs its default test paths (no paths on the command line), the suite is collected as well, so
  `pytest --gotunnel-engine haproxy` in an engine's project runs its own tests and the whole suite;
- the parametrization of every `@behaviour` test over the selected engines (default: every
  installed engine), with each engine's `Engine.capabilities` (or its `runtime_capabilities` for
  the runtime this run selects): unsupported -> skipped with the reason, pending -> strict
  expected failure. An engine whose program is missing is skipped,
  unless named in GOTUNNEL_REQUIRE_ENGINES (then it fails), and a selected engine that is not
  installed fails.

Blocked like any pytest plugin with `-p no:gotunnel`.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from ..engine import EngineSpec
from .backends import EchoBackend, closing_factory, start_echo_backend
from .runner import Gotunnel, gotunnel_runner

REQUIRE_ENV = "GOTUNNEL_REQUIRE_ENGINES"
SUITE_DIR = Path(__file__).resolve().parent / "conformance"


@dataclass
class EngineSelection:
    """The engines the suite runs against, the installed specs, and which are required."""

    names: list[str]
    specs: dict[str, EngineSpec]
    explicit: bool
    required: set[str] = field(default_factory=set)
    _missing: dict[str, str | None] = field(default_factory=dict)

    def unavailable(self, name: str) -> str | None:
        """None when `name` can run here, else why not (plugin or program missing)."""
        if name not in self._missing:
            spec = self.specs.get(name)
            if spec is None:
                self._missing[name] = f"engine {name!r} is not installed"
            else:
                probe = spec.engine_class.probe(_settings_from_environment(name))
                self._missing[name] = None if probe.found else f"engine {name!r}: {probe.hint}"
        return self._missing[name]

    def runtime(self, name: str) -> str | None:
        """The runtime `name` runs under in this run (GOTUNNEL_RUNTIME, GOTUNNEL_<ENGINE>_RUNTIME),
        which picks its `runtime_capabilities`; None when it cannot be resolved (the run reports that)."""
        spec = self.specs.get(name)
        if spec is None:
            return None
        from ..errors import UsageError

        try:
            return spec.engine_class.runtime_name(_settings_from_environment(name))
        except UsageError:  # a bad setting: the engine's own start fails with its message
            return None

    def must_run(self, name: str) -> bool:
        """Whether a missing engine fails the run instead of being skipped."""
        return name in self.required or (self.explicit and name not in self.specs)


def _settings_from_environment(engine: str) -> dict[str, Any]:
    """The settings a CLI run of the suite sees (the environment, e.g. GOTUNNEL_RUNTIME or
    GOTUNNEL_<ENGINE>_IMAGE, and no config file), with `engine` selected: what to probe."""
    from ..config import resolve

    with tempfile.TemporaryDirectory() as empty:
        env = {**os.environ, "XDG_CONFIG_HOME": empty, "GOTUNNEL_ENGINE": engine}
        return dict(resolve({}, env=env, cwd=Path(empty)).values)


_SELECTION = pytest.StashKey[EngineSelection]()


def _requested(config: pytest.Config) -> list[str]:
    names: list[str] = []
    for value in config.getoption("gotunnel_engine") or []:
        names += [part.strip() for part in value.split(",") if part.strip() and part.strip() not in names]
    return names


def engine_selection(config: pytest.Config) -> EngineSelection:
    """The engines this run tests (computed once per run)."""
    if _SELECTION not in config.stash:
        from ..engine import collect_engines
        from ..plugins import make_plugin_manager
        from .matrix import FIRST

        specs = collect_engines(make_plugin_manager().pm)
        requested = _requested(config)
        names = requested or [n for n in FIRST if n in specs] + sorted(n for n in specs if n not in FIRST)
        required = {e.strip() for e in os.environ.get(REQUIRE_ENV, "").split(",") if e.strip()}
        config.stash[_SELECTION] = EngineSelection(names, specs, bool(requested), required)
    return config.stash[_SELECTION]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gotunnel", "gotunnel engine conformance suite")
    group.addoption("--gotunnel-engine", action="append", default=[], metavar="NAME",
                    help="run the engine conformance suite against NAME (repeatable or comma-separated); "
                         "without test paths on the command line the suite is collected too")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "behaviour(key): the conformance behaviour a test checks "
                                       "(gotunnel_core.testing.conformance)")
    config.addinivalue_line("markers", "slow: streams large bodies or runs many processes")
    config.addinivalue_line("markers", "root: needs root (network namespaces, system trust store)")
    if _requested(config) and config.args_source != pytest.Config.ArgsSource.ARGS:
        config.args.append(str(SUITE_DIR))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize `engine` of every `@behaviour` test over the selected engines, with their capabilities."""
    marker = metafunc.definition.get_closest_marker("behaviour")
    if marker is None or "engine" not in metafunc.fixturenames:
        return
    key = marker.args[0]
    selection = engine_selection(metafunc.config)
    params = []
    for name in selection.names:
        marks: list[Any] = []
        missing = selection.unavailable(name)
        spec = selection.specs.get(name)
        capability = spec.engine_class.capability(key, selection.runtime(name)) if spec is not None else None
        if missing and not selection.must_run(name):
            marks.append(pytest.mark.skip(reason=missing))
        elif capability is not None and capability.kind == "unsupported":
            marks.append(pytest.mark.skip(reason=f"{name} does not support this: {capability.reason}"))
        elif capability is not None and capability.kind == "pending":
            marks.append(pytest.mark.xfail(strict=True, reason=capability.reason))
        params.append(pytest.param(name, marks=marks, id=name))
    metafunc.parametrize("engine", params)


@pytest.fixture
def gotunnel() -> Iterator[Gotunnel]:
    """A CLI runner with its own short state dir and free ports; its daemon is stopped at teardown."""
    yield from gotunnel_runner()


@pytest.fixture
def echo_backend() -> Iterator[Callable[..., EchoBackend]]:
    """Factory for real HTTP echo backends on free ports; all are shut down at teardown."""
    yield from closing_factory(start_echo_backend, "backend")
