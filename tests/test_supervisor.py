"""`SupervisedEngine` on its own, with a tiny fake engine program (no nginx needed): readiness,
validation before publishing, reload, crash restart with exponential backoff, give-up, and
SIGKILL after the stop deadline for a program that ignores its stop signal.

The fake program listens on the table's two ports, reports the generation it serves in
`run/served`, reloads on SIGHUP, and validates with `--check DIR` (refusing a tunnel named
`reject`); with `IGNORE_TERM` in its config it ignores SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from gotunnel_core.testing import free_port, pid_gone
from gotunnel_core.engine import EngineContext, EngineValidationError
from gotunnel_core.errors import RuntimeFailure
from gotunnel_core.models import Listen, RouteTable, Tunnel
from gotunnel_core.supervisor import SupervisedEngine, WorkDir

FAKE = textwrap.dedent('''
    import json, os, signal, socket, sys, time
    if sys.argv[1] == "--check":
        conf = json.load(open(os.path.join(sys.argv[2], "conf.json")))
        if "reject" in conf["tunnels"]:
            print("fake: tunnel 'reject' is not allowed at conf.json:1", file=sys.stderr)
            sys.exit(1)
        sys.exit(0)
    root = sys.argv[1]
    conf = json.load(open(os.path.join(root, "current", "conf.json")))
    listeners = []
    for port in conf["ports"]:
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port)); s.listen(16); listeners.append(s)
    def serve_generation(*_):
        gen = open(os.path.join(root, "current", "generation")).read()
        with open(os.path.join(root, "run", "served.tmp"), "w") as fh:
            fh.write(gen)
        os.replace(os.path.join(root, "run", "served.tmp"), os.path.join(root, "run", "served"))
        print("fake: serving generation " + gen, file=sys.stderr, flush=True)
    signal.signal(signal.SIGHUP, serve_generation)
    if conf.get("ignore_term"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    serve_generation()
    while True:
        time.sleep(0.05)
''')


class FakeEngine(SupervisedEngine):
    name = "fake"
    binary_candidates = ("no-such-fake-engine",)
    install_hint = "Install the fake engine."

    def render(self, table: RouteTable) -> dict[str, str]:
        conf = {"ports": [table.listen.http_port, table.listen.https_port], "tunnels": [t.name for t in table.tunnels],
                "ignore_term": any(t.name == "ignore-term" for t in table.tunnels)}
        return {"conf.json": json.dumps(conf)}

    def generation_files(self, generation: int) -> dict[str, str]:
        return {"generation": str(generation)}

    def command(self, binary: str, work: WorkDir) -> list[str]:
        return [binary, str(work.root / "fake.py"), str(work.root)]

    def validate_command(self, binary: str, work: WorkDir, config_dir: Path) -> list[str]:
        return [binary, str(work.root / "fake.py"), "--check", str(config_dir)]

    def served(self) -> int | None:
        try:
            return int((self.work.run / "served").read_text())
        except (OSError, ValueError):
            return None

    async def ready(self, proc: Any, generation: int) -> bool:
        return self.served() == generation

    async def reload(self, proc: Any, generation: int) -> None:
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.served() == generation:
                return
            await asyncio.sleep(0.02)
        raise RuntimeFailure("fake did not reload")


def make(tmp_path: Path, **options: Any) -> FakeEngine:
    work = tmp_path / "work"
    work.mkdir(parents=True)
    (work / "fake.py").write_text(FAKE)
    opts = {"bin": sys.executable, "backoff": 0.05, "max_crashes": 3, "crash_window": 30, "stop_deadline": 0.5, **options}
    return FakeEngine(EngineContext(work, {"engine": "fake", "engines": {"fake": opts}}))


def table(*names: str) -> RouteTable:
    return RouteTable(Listen("127.0.0.1", free_port(), free_port()),
                      tuple(Tunnel.from_raw({"name": n, "backends": ["http://127.0.0.1:1"]}) for n in names))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def until(predicate: Any, timeout: float = 10, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
    return value


def test_start_validate_apply_and_stop(tmp_path: Path) -> None:
    engine = make(tmp_path)

    async def scenario() -> None:
        first = table("one")
        await engine.start(first)
        assert engine.health().running and engine.served() == 1
        record = engine.work.read_record()
        assert record and record["pid"] == engine.health().extra["pid"]
        same_ports = RouteTable(first.listen, table("one", "two").tunnels)
        await engine.apply(same_ports)
        assert engine.served() == 2 and engine.work.current_generation() == 2
        with pytest.raises(EngineValidationError, match="fake refused the configuration: fake: tunnel 'reject'"):
            await engine.apply(RouteTable(first.listen, table("reject").tunnels))
        assert engine.served() == 2 and engine.work.current_generation() == 2  # nothing published
        assert json.loads((engine.work.current / "conf.json").read_text())["tunnels"] == ["one", "two"]
        pid = record["pid"]
        await engine.stop()
        assert pid_gone(pid)
        assert engine.work.read_record() is None

    run(scenario())


def test_crash_restart_backs_off_and_gives_up(tmp_path: Path) -> None:
    engine = make(tmp_path, max_crashes=3, backoff=0.2)

    async def scenario() -> None:
        await engine.start(table("one"))
        pids = [engine.health().extra["pid"]]
        restarted_at = []
        for _ in range(2):
            killed = time.monotonic()
            os.kill(pids[-1], signal.SIGKILL)
            await until(lambda: engine.health().running and engine.health().extra["pid"] != pids[-1], what="restart")
            restarted_at.append(time.monotonic() - killed)
            pids.append(engine.health().extra["pid"])
            assert engine.served() is not None
        assert engine.health().extra["restarts"] == 2
        # Backoff restarts after each crash: the first crash waits 0.2 s, the second (a new crash,
        # not a failed restart) waits 0.2 s again; both restarted.
        assert all(delay >= 0.2 for delay in restarted_at)
        os.kill(pids[-1], signal.SIGKILL)
        await until(lambda: engine.health().extra["gave_up"], what="give-up")
        health = engine.health()
        assert not health.running and health.detail.startswith("gave up: 3 crashes within 30 s")
        with pytest.raises(RuntimeFailure, match="engine is down"):
            await engine.apply(table("two"))
        await engine.stop()

    run(scenario())


def test_failed_restarts_back_off_exponentially(tmp_path: Path) -> None:
    engine = make(tmp_path, max_crashes=4, backoff=0.1)

    async def scenario() -> None:
        await engine.start(table("one"))
        # every restart now fails (validation passes, the program exits at once)
        (engine.work.root / "fake.py").write_text("import sys\nsys.exit(0 if '--check' in sys.argv else 3)\n")
        started = time.monotonic()
        os.kill(engine.health().extra["pid"], signal.SIGKILL)
        await until(lambda: engine.health().extra["gave_up"], timeout=20, what="give-up")
        # 1 crash + 3 failed restarts after 0.1, 0.2, 0.4 s
        assert time.monotonic() - started >= 0.7
        assert "4 crashes" in engine.health().detail
        await engine.stop()

    run(scenario())


def test_stop_kills_a_program_that_ignores_its_stop_signal(tmp_path: Path) -> None:
    engine = make(tmp_path, stop_deadline=0.5)

    async def scenario() -> None:
        await engine.start(table("ignore-term"))
        pid = engine.health().extra["pid"]
        started = time.monotonic()
        await engine.stop()
        assert 0.4 <= time.monotonic() - started < 5
        assert pid_gone(pid)

    run(scenario())


def test_missing_program_and_failed_start_are_reported(tmp_path: Path) -> None:
    engine = make(tmp_path, bin="/nonexistent/fake")
    with pytest.raises(RuntimeFailure, match="needs the fake program") as info:
        run(engine.start(table("one")))
    assert "Install the fake engine." in (info.value.hint or "")
    probe = FakeEngine.probe({"engine": "fake"})
    assert not probe.found and "no-such-fake-engine was not found on PATH" in (probe.hint or "")

    broken = make(tmp_path / "b")
    (broken.work.root / "fake.py").write_text(
        "import sys\nif '--check' in sys.argv: sys.exit(0)\nprint('fake: cannot bind', file=sys.stderr); sys.exit(2)\n")
    with pytest.raises(RuntimeFailure, match="fake exited with status 2 while starting: fake: cannot bind"):
        run(broken.start(table("one")))


def test_each_route_change_runs_the_validator_once(tmp_path: Path) -> None:
    """`apply` validates (the contract in gotunnel_core/engine.py) and nobody validates before it:
    the engine's validator runs exactly once per start and per route change."""
    engine = make(tmp_path)
    checks = engine.work.root / "checks"
    source = (engine.work.root / "fake.py").read_text()
    (engine.work.root / "fake.py").write_text(source.replace(
        'if sys.argv[1] == "--check":\n', f'if sys.argv[1] == "--check":\n    open({str(checks)!r}, "a").write("x")\n', 1))

    async def scenario() -> None:
        first = table("one")
        await engine.start(first)
        assert checks.read_text() == "x"
        await engine.apply(RouteTable(first.listen, table("one", "two").tunnels))
        assert checks.read_text() == "xx"
        await engine.stop()

    run(scenario())


class EnvironmentEngine(FakeEngine):
    """The fake engine with variables of its own (the `environment()` extension point)."""

    def environment(self) -> dict[str, str]:
        return {"FAKE_MARK": "from-environment()"}


def test_environment_reaches_the_program_and_its_validator_over_the_daemons(tmp_path: Path, monkeypatch: Any) -> None:
    """A process gets the engine's `environment()` on top of the daemon's own variables, in the
    program and in its validator (the docker runtime gives a container only the engine's own:
    tests/test_docker_runtime.py)."""
    monkeypatch.setenv("DAEMON_ONLY", "kept")
    work = tmp_path / "work"
    work.mkdir()
    seen = work / "seen"
    probe = (f'open({str(seen)!r}, "a").write(sys.argv[1][:7] + " " + os.environ.get("FAKE_MARK", "-") + " "'
             ' + os.environ.get("DAEMON_ONLY", "-") + "\\n")\n')
    (work / "fake.py").write_text(FAKE.replace('if sys.argv[1] == "--check":\n', probe + 'if sys.argv[1] == "--check":\n', 1))
    opts = {"bin": sys.executable, "stop_deadline": 0.5}
    engine = EnvironmentEngine(EngineContext(work, {"engine": "fake", "engines": {"fake": opts}}))

    async def scenario() -> None:
        await engine.start(table("one"))
        await engine.stop()

    run(scenario())
    check, program = seen.read_text().splitlines()
    assert check == "--check from-environment() kept"
    assert program.split(" ", 1)[1] == "from-environment() kept"


def test_an_engine_words_its_validators_refusal_itself(tmp_path: Path) -> None:
    """`validator_message` turns the validator's output into the refusal's one-line reason: the
    default cleans it (minus the config directory); an engine may override it."""

    class Terse(FakeEngine):
        def validator_message(self, output: str, config_dir: Path) -> str:
            return "terse: " + output.split(" at ")[0].removeprefix("fake: ")

    for engine, expected in ((make(tmp_path / "default"), "fake: tunnel 'reject' is not allowed at conf.json:1"),
                             (Terse(make(tmp_path / "terse").context), "terse: tunnel 'reject' is not allowed")):
        with pytest.raises(EngineValidationError) as refused:
            run(engine.validate(table("reject")))
        assert refused.value.message == f"fake refused the configuration: {expected}"
