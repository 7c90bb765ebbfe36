"""The engine conformance suite: behaviours every engine runs through the real CLI and daemon, with
real backends and real sockets.

Rows live in this package's `test_*.py` modules (loaded in name order; `test_core.py` first). A
row is one test function decorated with `@behaviour(key, title)`, which registers the behaviour
(the README matrix shows `title`) and marks the test; the pytest plugin (`gotunnel_core.testing.plugin`)
parametrizes it over the selected engines, using each engine's own declaration
(`Engine.capabilities`): skipped when unsupported, an expected failure while pending.

Adding a row: write a test in one of these modules (or a new `test_<topic>.py`) taking the `env`
fixture (and `app` for backends), decorate it with `@behaviour("my_key", "What the matrix says")`,
declare the engines that cannot do it in their `capabilities`, and regenerate the README matrix
(`python -m gotunnel_core.testing.matrix --write README.md`).
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, TypeVar

import pytest

from ...engine import Capability, EngineSpec
from ..backends import AppServer, Client, closing_factory, get
from ..runner import Gotunnel

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Behaviour:
    """One row of the suite: its key (what capabilities name), the matrix title, and its test."""

    key: str
    title: str
    test: str  # module:function


#: Every registered behaviour, in registration order (the README matrix's row order).
BEHAVIOURS: dict[str, Behaviour] = {}


def behaviour(key: str, title: str) -> Callable[[F], F]:
    """Register a conformance row and mark its test; a key registered twice is an error."""

    def decorate(fn: F) -> F:
        where = f"{fn.__module__}:{fn.__qualname__}"
        known = BEHAVIOURS.get(key)
        if known is not None and known.test != where:
            raise ValueError(f"behaviour {key!r} is registered by both {known.test} and {where}")
        BEHAVIOURS[key] = Behaviour(key, title, where)
        marked: F = pytest.mark.behaviour(key)(fn)
        return marked

    return decorate


def row_modules() -> list[str]:
    """The suite's row modules, in name order."""
    return sorted(f"{__name__}.{m.name}" for m in pkgutil.iter_modules(__path__) if m.name.startswith("test_"))


def load_rows() -> dict[str, Behaviour]:
    """Import every row module (registering its behaviours) and return the registry."""
    for name in row_modules():
        importlib.import_module(name)
    return BEHAVIOURS


# ----- fixtures the rows use -----------------------------------------------------------------------

@dataclass
class Env:
    """One engine under test: the CLI runner with `GOTUNNEL_ENGINE` set, and ways to reach tunnels."""

    g: Gotunnel
    engine: str
    spec: EngineSpec | None = None
    _ca: str | None = field(default=None, repr=False)

    def capability(self, key: str) -> Capability:
        """How the engine under test declares it does behaviour `key` (a row may adapt to it)."""
        return self.spec.engine_class.capability(key) if self.spec is not None else Capability()

    @property
    def ca(self) -> str:
        """gotunnel's CA certificate file (the only one the clients trust)."""
        if self._ca is None:
            self._ca = self.g("cert", "ca", "--path", check=True).out.strip()
        return self._ca

    def start(self, *args: str) -> Any:
        return self.g("start", *args, check=True)

    def url_host(self, name: str, https: bool = False) -> str:
        return f"{name}.localhost:{self.g.https_port if https else self.g.http_port}"

    def get(self, name: str, path: str = "/", https: bool = False, **kw: Any) -> tuple[int, dict[str, str], bytes]:
        port = self.g.https_port if https else self.g.http_port
        return get(port, self.url_host(name, https), path, ca=self.ca if https else None, **kw)

    def client(self, name: str, https: bool = False) -> Client:
        port = self.g.https_port if https else self.g.http_port
        return Client(port, self.url_host(name, https), self.ca if https else None)

    def write_config(self, text: str) -> None:
        (self.g.state_dir.parent / "gotunnel.toml").write_text(text)


@pytest.fixture
def env(engine: str, gotunnel: Gotunnel, request: pytest.FixtureRequest) -> Env:
    """The engine under test (parametrized by the plugin), failing when it is required but missing."""
    from ..plugin import engine_selection

    missing = engine_selection(request.config).unavailable(engine)
    if missing:
        pytest.fail(f"{engine} is required here (selected or in GOTUNNEL_REQUIRE_ENGINES) but: {missing}")
    gotunnel.env["GOTUNNEL_ENGINE"] = engine
    return Env(gotunnel, engine, engine_selection(request.config).specs.get(engine))


@pytest.fixture
def app() -> Iterator[Callable[..., AppServer]]:
    """Factory of `AppServer` backends (`app("name")`, default name "app"), all closed at teardown."""
    yield from closing_factory(AppServer, "app")


def body_json(body: bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(body)
    return data


__all__ = ["BEHAVIOURS", "Behaviour", "Env", "app", "behaviour", "body_json", "env", "load_rows", "row_modules"]
