"""`gotunnel top` (issue 15): figures from two scrapes, and the live view in a pseudo-terminal."""

from __future__ import annotations

import math
import os
import pty
import re
import select
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from gotunnel_core.testing import Gotunnel, stop_pid
from gotunnel_core.testing.daemon import http_get
from gotunnel_core.top import Sample, quantile, rows

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_quantile_interpolates_within_a_bucket() -> None:
    assert quantile(0.99, {}) is None
    assert quantile(0.99, {0.1: 0.0, math.inf: 0.0}) is None
    assert quantile(0.5, {0.1: 50.0, 0.2: 100.0, math.inf: 100.0}) == 0.1
    assert abs(quantile(0.75, {0.1: 50.0, 0.2: 100.0, math.inf: 100.0}) - 0.15) < 1e-9  # type: ignore[operator]
    assert quantile(0.99, {0.1: 1.0, math.inf: 100.0}) == math.inf


def _text(requests: dict[str, float], fast: float, slow: float, up: int) -> str:
    lines = [f'gotunnel_requests_total{{code="{c}",tunnel="web"}} {n}' for c, n in requests.items()]
    lines += [f'gotunnel_request_duration_seconds_bucket{{le="0.01",tunnel="web"}} {fast}',
              f'gotunnel_request_duration_seconds_bucket{{le="1.0",tunnel="web"}} {fast + slow}',
              f'gotunnel_request_duration_seconds_bucket{{le="+Inf",tunnel="web"}} {fast + slow}',
              f'gotunnel_backend_up{{backend="http://127.0.0.1:1",tunnel="web"}} {up}',
              'gotunnel_certificate_expiry_timestamp_seconds{name="web"} 1000864000',
              'gotunnel_engine_info{engine="caddy"} 1']
    return "\n".join(lines) + "\n"


def test_rows_are_rates_over_the_interval() -> None:
    before = Sample.parse(_text({"2xx": 10, "5xx": 0}, 10, 0, 1), at=1_000_000_000)
    after = Sample.parse(_text({"2xx": 100, "5xx": 10}, 100, 10, 0), at=1_000_000_010)
    (row,) = rows(before, after)
    assert row.tunnel == "web" and row.rps == 10.0 and row.error_rate == 0.1
    assert row.p99 is not None and 0.01 < row.p99 <= 1.0  # the slow tenth sets p99
    assert (row.backends_up, row.backends) == (0, 1) and round(row.cert_days or 0) == 10
    assert after.engine == "caddy"


def test_top_renders_live_in_a_pseudo_terminal(gotunnel: Gotunnel, echo_backend: Any) -> None:
    backend = echo_backend()
    gotunnel("start", "-d", "app", "-p", str(backend.port), check=True)
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            http_get(gotunnel.http_port, "app.localhost")
            time.sleep(0.02)

    load = threading.Thread(target=traffic, daemon=True)
    load.start()
    controller, terminal = pty.openpty()
    env = {**os.environ, **gotunnel.env, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "30"}
    proc = subprocess.Popen([sys.executable, "-m", "gotunnel_core", "top", "--interval", "0.5"],
                            stdin=terminal, stdout=terminal, stderr=terminal, env=env,
                            cwd=gotunnel.state_dir.parent, start_new_session=True)
    os.close(terminal)
    screen = ""
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.5)
            if ready:
                try:
                    screen += os.read(controller, 65536).decode("utf-8", "replace")
                except OSError:
                    break
            plain = ANSI.sub("", screen)
            # A row for the tunnel with traffic flowing, its backend up and its certificate's days.
            if re.search(r"app\s*│\s*[1-9][0-9.]*\s*│\s*0\.0%\s*│\s*[0-9.]+ ms\s*│.*1/1 up\s*│\s*\d+ d", plain):
                break
        else:
            raise AssertionError(f"no live row for the tunnel in:\n{ANSI.sub('', screen)[-2000:]}")
        assert "\x1b[" in screen  # drawn for a terminal (cursor movement, colours)
        assert "gotunnel top: engine builtin" in ANSI.sub("", screen)
        os.kill(proc.pid, signal.SIGINT)  # Ctrl-C: a clean exit
        # Keep reading the terminal as a real one does: a full pty buffer would block top's last
        # redraw (and its exit) on a write nobody reads.
        deadline = time.monotonic() + 15
        while proc.poll() is None and time.monotonic() < deadline:
            if select.select([controller], [], [], 0.2)[0]:
                try:
                    os.read(controller, 65536)
                except OSError:
                    break
        assert proc.wait(timeout=5) == 0
    finally:
        stop.set()
        load.join(10)
        if proc.poll() is None:
            stop_pid(proc.pid)
        os.close(controller)


def test_top_once_without_a_daemon_fails_cleanly(gotunnel: Gotunnel) -> None:
    result = gotunnel("top", "--once")
    assert result.code == 1 and result.err.startswith("error: no gotunnel daemon is running")
