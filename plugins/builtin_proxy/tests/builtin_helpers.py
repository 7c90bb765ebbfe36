"""Test helpers for the builtin engine: the engine on a uvloop thread (`engine_factory`).

The generic parts (PKI, echo backends, tables, clients, the loop thread) come from the public
test kit, `gotunnel_core.testing.engines`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from gotunnel_core.engine import EngineContext
from gotunnel_core.testing import wait_for  # noqa: F401 - re-exported for the test modules
from gotunnel_core.testing.engines import (LOCAL, EchoHandler, EchoServer, LoopThread, TestPKI,  # noqa: F401
                                           backend_a, backend_b, echo_json, free_port, http_get, https_get,
                                           make_pki, make_table, pki, ports, raw_exchange)


class EngineThread(LoopThread):
    """A BuiltinEngine on a uvloop event loop in a background thread."""

    def __init__(self, tmp: Path, settings: dict[str, Any] | None = None, hook: Any = None,
                 listeners: Any = None) -> None:
        import uvloop

        from gotunnel_builtin_proxy.engine import BuiltinEngine

        context = EngineContext(work_dir=tmp, settings=settings or {}, hook=hook, listeners=listeners)
        super().__init__(BuiltinEngine(context), uvloop.new_event_loop())


@pytest.fixture
def engine_factory(tmp_path: Path) -> Iterator[Any]:
    made: list[EngineThread] = []

    def make(settings: dict[str, Any] | None = None, hook: Any = None, listeners: Any = None) -> EngineThread:
        eng = EngineThread(tmp_path, settings, hook, listeners)
        made.append(eng)
        return eng

    try:
        yield make
    finally:
        for eng in made:
            eng.close()
