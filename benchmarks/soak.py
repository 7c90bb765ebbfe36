"""Soak: does an engine's daemon keep growing under sustained load and route churn?

For each engine, the real daemon (through the CLI, as `make bench` runs it) serves one measured
tunnel to a backend nginx while wrk alternates HTTP and HTTPS runs (100 connections, 20 s each)
and tunnels come and go every 0.5 s (a start; every third change also a stop; names cycle
through 50). The RSS of the daemon's process tree (the daemon and the engine it supervises) is
sampled every few seconds. After the warm-up the samples must not keep rising: the verdict is
the least-squares slope in MiB per minute, which fails above `--max-slope` (issue 19: the
builtin daemon rose ~0.6 MiB/min for 25 minutes).

    python -m benchmarks.soak --engines builtin,nginx,caddy,envoy --minutes 12 --warmup 4

Writes benchmarks/results/soak-<time>.json and prints a table; exits 1 when an engine grows.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .engines import LOAD_CPU, MEASURED, Backend, GotunnelEngine, make_certs
from .util import machine_info, raise_nofile, tree_rss
from .wrkrun import Wrk

RESULTS = Path(__file__).resolve().parent / "results"
NAMES = 50


def rss_verdict(samples: list[tuple[float, int]], warmup_s: float, max_slope: float) -> dict[str, Any]:
    """Judge RSS samples (seconds since start, bytes): the slope after warm-up in MiB/min, and
    whether it stays at or below `max_slope`. Too few samples after warm-up is a failure too."""
    after = [(t, rss / 2**20) for t, rss in samples if t >= warmup_s]
    if len(after) < 5:
        return {"ok": False, "reason": f"only {len(after)} samples after the warm-up", "slope_mib_per_min": None}
    ts = [t / 60 for t, _ in after]
    ms = [m for _, m in after]
    mean_t, mean_m = statistics.fmean(ts), statistics.fmean(ms)
    var = sum((t - mean_t) ** 2 for t in ts)
    slope = sum((t - mean_t) * (m - mean_m) for t, m in zip(ts, ms)) / var if var else 0.0
    first = [m for t, m in zip(ts, ms) if t <= ts[0] + 0.5]
    last = [m for t, m in zip(ts, ms) if t >= ts[-1] - 0.5]
    return {
        "ok": slope <= max_slope,
        "reason": "" if slope <= max_slope else f"RSS keeps growing: {slope:.2f} MiB/min after the warm-up "
                                                 f"(limit {max_slope:g})",
        "slope_mib_per_min": round(slope, 3),
        "rss_start_mib": round(samples[0][1] / 2**20, 1),
        "rss_after_warmup_mib": round(statistics.median(first), 1),
        "rss_end_mib": round(statistics.median(last), 1),
        "rss_peak_mib": round(max(rss for _, rss in samples) / 2**20, 1),
    }


class Churn(threading.Thread):
    """Adds a tunnel every `every` seconds and removes the oldest on every third change."""

    def __init__(self, engine: GotunnelEngine, backend_url: str, every: float) -> None:
        super().__init__(daemon=True)
        self.engine, self.url, self.every = engine, backend_url, every
        self.stop = threading.Event()
        self.changes = 0
        self.errors: list[str] = []

    def run(self) -> None:
        live: list[str] = []
        while not self.stop.wait(self.every):
            name = f"soak{self.changes % NAMES}"
            try:
                self.engine._request("start", tunnels=[{"name": name, "backends": [self.url]}], force=True)
                if name not in live:
                    live.append(name)
                if self.changes % 3 == 2 and live:
                    self.engine._request("stop", names=[live.pop(0)])
            except Exception as exc:  # noqa: BLE001 - counted and reported, the soak goes on
                self.errors.append(str(exc))
            self.changes += 1


class Sampler(threading.Thread):
    """RSS of a process tree every `every` seconds."""

    def __init__(self, pid: int, every: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.stop = threading.Event()
        self.started = time.monotonic()
        self.samples: list[tuple[float, int]] = []

    def run(self) -> None:
        while True:
            self.samples.append((time.monotonic() - self.started, tree_rss(self.pid)))
            if self.stop.wait(self.every):
                return


def soak_engine(name: str, workdir: Path, backend: Backend, args: argparse.Namespace) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    certs = make_certs(workdir, sys.executable)
    engine = GotunnelEngine(workdir, certs, name)
    wrk = Wrk(workdir, LOAD_CPU, connections=args.connections)
    engine.start(backend)
    assert engine.pid is not None
    sampler, churn = Sampler(engine.pid, args.sample), Churn(engine, f"http://127.0.0.1:{backend.port}", args.change_every)
    sampler.start()
    churn.start()
    runs: list[dict[str, Any]] = []
    try:
        end = time.monotonic() + args.minutes * 60
        while time.monotonic() < end:
            https = len(runs) % 2 == 1
            url = (f"https://{MEASURED}.localhost:{engine.https_port}/" if https
                   else f"http://{MEASURED}.localhost:{engine.http_port}/")
            result = wrk.run(url, min(args.run, max(1.0, end - time.monotonic())))
            runs.append({"scheme": "https" if https else "http", "requests": result.requests, "errors": result.errors})
    finally:
        churn.stop.set()
        sampler.stop.set()
        churn.join(10)
        sampler.join(10)
        engine.stop()
    verdict = rss_verdict(sampler.samples, args.warmup * 60, args.max_slope)
    return {
        "engine": name,
        **verdict,
        "requests": sum(r["requests"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "route_changes": churn.changes,
        "route_change_errors": churn.errors[:5],
        "samples": [(round(t, 1), rss) for t, rss in sampler.samples],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default="builtin,nginx,caddy,envoy")
    parser.add_argument("--minutes", type=float, default=12.0, help="soak length per engine")
    parser.add_argument("--warmup", type=float, default=4.0, help="minutes before the slope is measured")
    parser.add_argument("--run", type=float, default=20.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--change-every", type=float, default=0.5, help="seconds between route changes")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument("--max-slope", type=float, default=0.5, help="MiB per minute allowed after the warm-up")
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gt-soak-") as tmp:
        work = Path(tmp)
        backend = Backend(work, make_certs(work, sys.executable))
        backend.start()
        try:
            for name in [e.strip() for e in args.engines.split(",") if e.strip()]:
                print(f"soak {name}: {args.minutes:g} min ({args.warmup:g} warm-up)", flush=True)
                results.append(soak_engine(name, work / name, backend, args))
                r = results[-1]
                print(f"  {'ok' if r['ok'] else 'GROWS'}: slope {r['slope_mib_per_min']} MiB/min, RSS "
                      f"{r.get('rss_start_mib')} -> {r.get('rss_after_warmup_mib')} -> {r.get('rss_end_mib')} MiB, "
                      f"{r['requests']} requests, {r['errors']} errors, {r['route_changes']} route changes "
                      f"{r['reason']}", flush=True)
        finally:
            backend.stop()
    report = {"machine": machine_info(), "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "results": results}
    out = args.out or RESULTS / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {out}")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
