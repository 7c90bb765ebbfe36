"""Per-request cost of the builtin engine: `python -m benchmarks.cost` (steers hot-path work).

req/s on a shared machine drifts by 20 %; what one request costs the engine does not. This runs
the real daemon (`gotunnel ... daemon`, pinned to the engine CPU) behind the bench backend and,
for each scenario, drives it with wrk while measuring a window:

- `--tool perf` (default): `perf stat` on the daemon: CPU microseconds (task-clock) and system
  calls per request. Needs perf's software events only (no hardware counters).
- `--tool callgrind`: the daemon under valgrind's callgrind with instrumentation switched on for
  the window only: user-space instructions per request. Independent of the neighbours' work, but
  not of how many requests one loop iteration handles (seen to move it by 15 % between a quiet and
  a loaded hour): compare builds in the same hour, or use `benchmarks.hotpath --callgrind`. Kernel
  work (the system calls) is not counted; `perf` shows it. `http-1000` is impractical here: the
  daemon issues 1,000 certificates under valgrind first.

Requests are counted by the backend (stub_status) around the window. Scenarios: http, https
(keep-alive), https-handshake (a new TLS connection per request, resumed as browsers do), and
http-1000 (1,000 tunnels, the measured one declared last).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .engines import ENGINE_CPU, LOAD_CPU, MEASURED, Backend, extra_names, make_certs
from .util import free_port, raise_nofile, stop_pid, wait_status
from .wrkrun import Wrk

SCENARIOS = ("http", "https", "https-handshake", "http-1000")


def log(msg: str) -> None:
    print(f"[cost {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Daemon:
    """The gotunnel daemon with the builtin engine, optionally under callgrind (instrumentation off)."""

    def __init__(self, workdir: Path, python: str, tunnels: int, tool: str, settings: dict[str, Any]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"daemon-{tunnels}-", dir=workdir))
        self.python, self.tunnels, self.tool, self.settings = python, tunnels, tool, settings
        self.http_port, self.https_port = free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {**os.environ, "GOTUNNEL_MDNS": "0", "XDG_CONFIG_HOME": str(self.dir / "xdg"),
                    **{f"GOTUNNEL_{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v)
                       for k, v in settings.items()}}

    def _base(self) -> list[str]:
        return [self.python, "-m", "gotunnel_core", "--engine", "builtin", "--state-dir", str(self.dir / "state"),
                "--no-mdns", "--bind", "127.0.0.1", "--http-port", str(self.http_port),
                "--https-port", str(self.https_port), "--log-level", "warning"]

    def start(self, backend: Backend) -> None:
        cfg = self.dir / "gotunnel.toml"
        url = f"http://127.0.0.1:{backend.port}"
        cfg.write_text("\n".join(f'[[tunnels]]\nname = "{n}"\nbackends = ["{url}"]\n'
                                 for n in [*extra_names(self.tunnels - 1), MEASURED]))
        wrap: list[str] = []
        if self.tool == "callgrind":
            wrap = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={self.dir}/cg.out.%p"]
        self.proc = subprocess.Popen(["taskset", "-c", str(ENGINE_CPU), *wrap, *self._base(), "daemon"],
                                     env=self.env, cwd=self.dir, stdout=subprocess.DEVNULL,
                                     stderr=open(self.dir / "daemon.stderr", "wb"))
        deadline = time.monotonic() + 600
        while not (self.dir / "state" / "daemon.sock").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"daemon did not start: {(self.dir / 'daemon.stderr').read_text()[-2000:]}")
            time.sleep(0.2)
        subprocess.run([*self._base(), "--config", str(cfg), "start"], check=True, capture_output=True,
                       env=self.env, cwd=self.dir, timeout=1200)
        wait_status(self.http_port, f"{MEASURED}.localhost", what="daemon", timeout=120)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None:
            try:
                subprocess.run([*self._base(), "stop", "--all"], capture_output=True, env=self.env, cwd=self.dir,
                               timeout=300)
            except subprocess.TimeoutExpired:
                pass  # stop_pid below ends it by its pid (SIGTERM, then SIGKILL)
            stop_pid(self.proc.pid, timeout=120)
            self.proc.wait()
            self.proc = None


def url_for(scenario: str, d: Daemon) -> str:
    if scenario.startswith("https"):
        return f"https://{MEASURED}.localhost:{d.https_port}/"
    return f"http://{MEASURED}.localhost:{d.http_port}/"


def perf_window(pid: int, seconds: float) -> dict[str, float]:
    out = subprocess.run(["perf", "stat", "-x", ",", "-e", "task-clock,raw_syscalls:sys_enter,context-switches",
                          "-p", str(pid), "--", "sleep", str(seconds)], capture_output=True, text=True)
    values: dict[str, float] = {}
    for line in out.stderr.splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[0].replace(".", "", 1).isdigit():
            values[parts[2]] = float(parts[0])
    if "task-clock" not in values:
        raise RuntimeError(f"perf stat failed: {out.stderr[-500:]}")
    return values


def callgrind_window(d: Daemon, seconds: float) -> tuple[float, Path]:
    """Instructions the daemon executed during `seconds` (instrumentation on for that window only)."""
    ctl = ["callgrind_control"]
    subprocess.run([*ctl, "-z", str(d.pid)], check=True, capture_output=True)
    subprocess.run([*ctl, "-i", "on", str(d.pid)], check=True, capture_output=True)
    time.sleep(seconds)
    subprocess.run([*ctl, "-i", "off", str(d.pid)], check=True, capture_output=True)
    before = set(d.dir.glob("cg.out.*"))
    subprocess.run([*ctl, "-d", str(d.pid)], check=True, capture_output=True)
    deadline = time.monotonic() + 60
    best: tuple[float, Path] | None = None
    while time.monotonic() < deadline and best is None:
        time.sleep(1.0)
        for path in set(d.dir.glob("cg.out.*")) - before:
            text = path.read_text(errors="replace")
            totals = [float(x) for x in re.findall(r"^(?:summary|totals):\s+(\d+)", text, re.M)]
            if totals and (best is None or max(totals) > best[0]):
                best = (max(totals), path)
    if best is not None:
        return best
    raise RuntimeError("callgrind dump not found")


def top_functions(dump: Path, inclusive: bool, n: int = 40) -> list[str]:
    """callgrind_annotate's top rows (self or inclusive), paths shortened to the file name."""
    out = subprocess.run(["callgrind_annotate", f"--inclusive={'yes' if inclusive else 'no'}", str(dump)],
                         capture_output=True, text=True).stdout
    rows = [re.sub(r"(?:/[^ :\[\]]+/)+", "", line) for line in out.splitlines() if re.match(r"^\s*[\d,]+ \(", line)]
    return rows[: n + 1]


def measure(args: argparse.Namespace, backend: Backend, wrk: Wrk, scenario: str) -> dict[str, Any]:
    d = Daemon(args.workdir, args.python, 1000 if scenario == "http-1000" else 1, args.tool,
               {"workers": args.workers} if args.workers > 1 else {})
    t0 = time.monotonic()
    try:
        d.start(backend)
        log(f"{scenario}: daemon pid {d.pid} up in {time.monotonic() - t0:.1f} s")
        close = scenario == "https-handshake"
        url = url_for(scenario, d)
        warm = args.warmup * (8 if args.tool == "callgrind" else 1)
        idle_ir = 0.0
        if args.tool == "callgrind":
            # what the daemon does with no traffic (timers, stats) over the same window, subtracted below
            idle_ir, _ = callgrind_window(d, args.duration)
        wrk.run(url, warm, close)
        proc = wrk.start(url, args.duration + 4, close)
        time.sleep(1.5)
        before = backend.requests()
        if args.tool == "callgrind":
            ir, dump = callgrind_window(d, args.duration)
            values: dict[str, Any] = {"Ir": ir - idle_ir, "idle_Ir": idle_ir, "dump": str(dump)}
        else:
            values = perf_window(d.pid, args.duration)
        after = backend.requests()
        res = wrk.finish(proc, timeout=args.duration + 120)
        n = (after - before - 1) if before is not None and after is not None else 0
        row: dict[str, Any] = {"scenario": scenario, "requests": n, "wrk_errors": res.errors}
        if args.tool == "callgrind":
            row["instructions_per_request"] = round(values["Ir"] / n) if n else None
            row["idle_instructions_per_s"] = round(values["idle_Ir"] / args.duration)
            row["top_self"] = top_functions(Path(values["dump"]), inclusive=False)
            row["top_inclusive"] = top_functions(Path(values["dump"]), inclusive=True)
        else:
            row["cpu_us_per_request"] = round(1000.0 * values["task-clock"] / n, 2) if n else None
            row["syscalls_per_request"] = round(values["raw_syscalls:sys_enter"] / n, 2) if n else None
            row["context_switches_per_request"] = round(values["context-switches"] / n, 3) if n else None
            row["engine_cpu_utilisation"] = round(values["task-clock"] / (1000.0 * args.duration), 2)
        log(f"{scenario}: {json.dumps({k: v for k, v in row.items() if not k.startswith('top_')})}")
        return row
    finally:
        d.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tool", choices=("perf", "callgrind"), default="perf")
    p.add_argument("--scenarios", default="http,https,https-handshake,http-1000")
    p.add_argument("--duration", type=float, default=10.0, help="seconds in the measured window")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--connections", type=int, default=None, help="wrk connections (default 50; 10 with callgrind)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = p.parse_args(argv)
    if args.connections is None:
        args.connections = 10 if args.tool == "callgrind" else 50
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    bad = [s for s in scenarios if s not in SCENARIOS]
    if bad:
        p.error(f"unknown scenario(s) {bad}; known: {', '.join(SCENARIOS)}")
    tool = "valgrind" if args.tool == "callgrind" else "perf"
    if not shutil.which(tool):
        raise SystemExit(f"{tool} not found")
    raise_nofile()
    os.sched_setaffinity(0, {LOAD_CPU})
    args.workdir = Path(tempfile.mkdtemp(prefix="gtcost-", dir="/tmp"))
    certs = make_certs(args.workdir, args.python)
    backend = Backend(args.workdir, certs)
    backend.start()
    rows = []
    load = os.getloadavg()
    try:
        # under valgrind the daemon is ~50x slower: wrk must not time requests out (retries add handshakes)
        wrk = Wrk(args.workdir, LOAD_CPU, connections=args.connections, timeout_s=60 if args.tool == "callgrind" else 2)
        for s in scenarios:
            rows.append(measure(args, backend, wrk, s))
    finally:
        backend.stop()
        shutil.rmtree(args.workdir, ignore_errors=True)
    report = {"tool": args.tool, "loadavg_at_start": load, "loadavg_at_end": os.getloadavg(), "rows": rows}
    for row in rows:
        print(json.dumps({k: v for k, v in row.items() if not k.startswith("top_")}))
        for key in ("top_self", "top_inclusive"):
            for line in row.get(key, []):
                print(f"    {key[4:]:9s} {line}")
    print(f"load average {load[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
