"""Entry point: `python -m benchmarks.run` (or `make bench`).

One run on one machine: an nginx backend pinned with wrk to CPU 0, each engine pinned to CPU 1,
rounds alternating between engines (A B C A B C ...), medians quoted, every engine's ratio to
nginx-ref. Prints a table, writes benchmarks/results/latest.json (and latest.md for the README).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

from .engines import (ENGINE_CPU, ENGINE_NAMES, LOAD_CPU, MEASURED, Backend, Engine, GotunnelEngine, SMALL_BODY,
                      make_certs, make_engine)
from .h2loadrun import H2Load
from .util import cmd_version, http_status, machine_info, raise_nofile, tree_connections, tree_cpu_by_process
from .wrkrun import Wrk, WrkResult

RESULTS = Path(__file__).resolve().parent / "results"
THROUGHPUT = ("http-small", "https-small", "https-handshake", "h2-small", "http-1mib", "1000-tunnels", "workers-2")
SCENARIOS = (*THROUGHPUT, "reload-under-load", "idle-memory")
REFERENCE = "nginx-ref"
MiB = 1 << 20

#: Suffix of the second engine of a pair measured in the same rounds: one tunnel (`1000-tunnels`),
#: two workers (`workers-2`).
ONE_TUNNEL, TWO_WORKERS = "@1", "@2w"

TARGETS = [  # (id, description, scenario, limit) -- issue 20, plus h2 and the earlier peers
    ("http_vs_nginx", "builtin >= 0.8x nginx-ref req/s and per CPU-s, HTTP small", "http-small", 0.8),
    ("http_p99", "builtin p99 <= 1.5x nginx-ref p99, HTTP small", "http-small", 1.5),
    ("https_vs_nginx", "builtin >= 0.75x nginx-ref req/s, HTTPS small (keep-alive)", "https-small", 0.75),
    ("handshake_vs_nginx", "builtin >= 0.7x nginx-ref req/s, HTTPS with a new resumed TLS handshake per request",
     "https-handshake", 0.7),
    ("h2_vs_nginx", "builtin >= 0.5x nginx-ref req/s, HTTP/2 small (h2load -c10 -m10)", "h2-small", 0.5),
    ("vs_envoy", "builtin >= 1.0x envoy-ref req/s, HTTP small", "http-small", 1.0),
    ("vs_caddy", "builtin >= 1.5x caddy-ref req/s, HTTP small", "http-small", 1.5),
    ("tunnels_1000", "builtin with 1,000 tunnels >= 0.97x of one tunnel (median of per-round ratios)", "1000-tunnels",
     0.97),
    ("workers_2", "builtin workers = 2: a second worker adds >= 0.8x of one worker (from req per CPU-s)", "workers-2",
     0.8),
    ("reload_errors", "builtin: zero failed requests during 100 route changes", "reload-under-load", 0),
    ("idle_rss", "builtin RSS < 60 MiB with 1,000 idle keep-alive connections", "idle-memory", 60),
]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def url_for(scenario: str, engine: Engine) -> str:
    if scenario in ("https-small", "https-handshake", "h2-small"):
        return f"https://{MEASURED}.localhost:{engine.https_port}/"
    path = "/1mib" if scenario == "http-1mib" else "/"
    return f"http://{MEASURED}.localhost:{engine.http_port}{path}"


def median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def summarise(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds for rates and latencies; failures summed over rounds."""
    return {
        "rps": median([s["rps"] for s in samples]),
        "p50_ms": median([s["p50_ms"] for s in samples]),
        "p99_ms": median([s["p99_ms"] for s in samples]),
        "errors": sum(s["errors"] for s in samples),
        "socket_errors": sum(sum(s["socket_errors"].values()) for s in samples),
        "non_2xx_3xx": sum(s["non_2xx_3xx"] for s in samples),
        "requests": sum(s["requests"] for s in samples),
        "backend_requests": sum(s["backend_requests"] or 0 for s in samples) if all(
            s["backend_requests"] is not None for s in samples) else None,
        "engine_cpu_pct": median([s.get("engine_cpu_pct") for s in samples]),
        "req_per_cpu_s": median([s.get("req_per_cpu_s") for s in samples]),
        "cpu_busy_pct": [median([s["cpu_busy_pct"][i] for s in samples]) for i in range(len(samples[0]["cpu_busy_pct"]))],
        "protocol": ",".join(sorted({s["protocol"] for s in samples if s.get("protocol")})) or None,
        "rounds": samples,
    }


def per_round_ratios(a: list[dict[str, Any]], b: list[dict[str, Any]], key: str = "rps") -> list[float]:
    """a[i] / b[i] for rounds measured back to back: neighbours' load shifts both sides of a pair alike."""
    return [round(x[key] / y[key], 3) for x, y in zip(a, b) if x.get(key) and y.get(key)]


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args, self.workdir = args, workdir
        self.python = args.python
        self.certs = make_certs(workdir, self.python)
        self.backend = Backend(workdir, self.certs)
        self.wrk = Wrk(workdir, LOAD_CPU)
        self.h2load = H2Load(LOAD_CPU)
        self.engines = []
        self.skipped: dict[str, str] = {}
        for name in args.engines:
            engine = make_engine(name, workdir, self.certs, self.python)
            why = engine.missing()
            if why:
                log(f"skipping {name}: {why}")
                self.skipped[name] = why
            else:
                self.engines.append(engine)
        self.results: dict[str, dict[str, Any]] = {}

    def measure(self, engine: Engine, scenario: str) -> dict[str, Any]:
        url = url_for(scenario, engine)
        close = scenario == "https-handshake"  # Connection: close, so wrk opens (and resumes) TLS per request
        if scenario == "h2-small":
            start, finish = (lambda u, d: self.h2load.run(u, d)), (lambda p, timeout: p)
        else:
            start, finish = (lambda u, d: self.wrk.start(u, d, close)), self.wrk.finish
        if self.args.warmup > 0:
            finish(start(url, self.args.warmup), timeout=self.args.warmup + 30)
        before = self.backend.requests()
        pid = engine.pid or (self.backend.proc.pid if self.backend.proc else None)
        cpu, cpu0 = CpuMeter(), tree_cpu_by_process(pid) if pid else {}
        proc = start(url, self.args.duration)
        conns: dict[int, int] = {}
        if engine.workers > 1 and pid:
            time.sleep(min(2.0, self.args.duration / 2))
            conns = tree_connections(pid, int(url.rsplit(":", 1)[1].split("/")[0]))
        res = finish(proc, timeout=self.args.duration + 30)
        busy = cpu.busy()
        cpu1 = tree_cpu_by_process(pid) if pid else {}
        per_proc = sorted((round(t - cpu0.get(p, 0.0), 2) for p, t in cpu1.items()), reverse=True)
        used = sum(per_proc)
        after = self.backend.requests()
        got = (after - before - 1) if before is not None and after is not None else None
        # On a shared machine the engine may not get its whole core: its own CPU time tells, and
        # requests per CPU second of the engine is far less sensitive to the neighbours than req/s.
        out = {**res.to_dict(), "backend_requests": got, "cpu_busy_pct": busy,
               "engine_cpu_pct": round(100.0 * used / res.duration_s, 1) if res.duration_s else None,
               "req_per_cpu_s": round(res.requests / used) if used > 0 else None}
        if engine.workers > 1:
            # how the work and wrk's connections spread over the processes (workers and their parent)
            out["cpu_s_by_process"] = [t for t in per_proc if t > 0]
            out["connections_by_process"] = sorted((n for n in conns.values() if n), reverse=True)
        return out

    def throughput(self, scenario: str) -> None:
        """Alternate rounds over the engines; for 1000-tunnels each engine runs twice side by side,
        with 1,000 tunnels and with one (`NAME@1`), so the routing-cost ratio comes from one round-robin
        and not from two scenarios minutes apart on a noisy machine."""
        runs: list[tuple[str, Engine, int]] = []
        if scenario == "1000-tunnels":
            for e in self.engines:
                if e.proxy:
                    runs += [(e.name, e, 1000),
                             (e.name + ONE_TUNNEL, make_engine(e.name, self.workdir, self.certs, self.python), 1)]
        elif scenario == "workers-2":
            # one and two workers side by side, all on the engine CPU: on this 2-CPU machine the second
            # worker cannot get a core of its own, so what is compared is requests per CPU second
            for e in self.engines:
                if e.name in ("builtin", REFERENCE):
                    runs += [(e.name, e, 1),
                             (e.name + TWO_WORKERS, make_engine(e.name, self.workdir, self.certs, self.python, workers=2), 1)]
        else:
            runs = [(e.name, e, 1) for e in self.engines]
        samples: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in runs}
        started: list[Engine] = []
        try:
            for label, e, tunnels in runs:
                t0 = time.monotonic()
                e.start(self.backend, tunnels)
                started.append(e)
                log(f"{scenario}: {label} up on :{e.http_port}/:{e.https_port} pid {e.pid} with {tunnels} tunnel(s) "
                    f"({time.monotonic() - t0:.1f} s)")
            for r in range(self.args.rounds):
                for label, e, _ in runs:  # alternate: A B C A B C ...
                    s = self.measure(e, scenario)
                    samples[label].append(s)
                    log(f"{scenario} round {r + 1}/{self.args.rounds} {label}: {s['rps']:.0f} req/s, "
                        f"p99 {s['p99_ms']} ms, errors {s['errors']}, backend saw {s['backend_requests']}, cpu busy {s['cpu_busy_pct']}, "
                        f"engine cpu {s['engine_cpu_pct']}%, {s['req_per_cpu_s']} req/cpu-s")
        finally:
            for e in started:
                e.stop()
        engines = {n: summarise(v) for n, v in samples.items() if v}
        self.results[scenario] = {"tunnels": 1000 if scenario == "1000-tunnels" else 1, "engines": engines}
        for label, summary in engines.items():
            suffix = next((x for x in (ONE_TUNNEL, TWO_WORKERS) if label.endswith(x)), "")
            ref_label = REFERENCE + suffix
            ref = engines.get(ref_label, {}).get("rps")
            summary["x_nginx"] = round(summary["rps"] / ref, 3) if ref and summary["rps"] else None
            ref_eff = engines.get(ref_label, {}).get("req_per_cpu_s")
            summary["x_nginx_per_cpu"] = round(summary["req_per_cpu_s"] / ref_eff, 3) if ref_eff and summary["req_per_cpu_s"] else None
            if ref_label in samples and ref_label != label:
                summary["x_nginx_rounds"] = per_round_ratios(samples[label], samples[ref_label])
                summary["x_nginx_per_cpu_rounds"] = per_round_ratios(samples[label], samples[ref_label], "req_per_cpu_s")
            one = engines.get(label + ONE_TUNNEL, {}).get("rps")
            if one and summary["rps"]:
                summary["x_one_tunnel"] = round(summary["rps"] / one, 3)
                summary["x_one_tunnel_rounds"] = per_round_ratios(samples[label], samples[label + ONE_TUNNEL])
                summary["x_one_tunnel_median_of_rounds"] = median(summary["x_one_tunnel_rounds"])
            two = label + TWO_WORKERS
            if two in samples:
                # per CPU second, two workers against one; with a core per worker the second worker
                # adds this ratio x 2 - 1 of one worker's throughput (when both stay busy)
                ratios = per_round_ratios(samples[two], samples[label], "req_per_cpu_s")
                summary["two_workers_per_cpu_rounds"] = ratios
                eff = median(ratios)
                summary["two_workers_per_cpu"] = eff
                summary["second_worker_adds"] = round(2 * eff - 1, 3) if eff else None

    def reload_under_load(self) -> None:
        out: dict[str, Any] = {}
        dur, changes = self.args.reload_duration, self.args.changes
        for e in [e for e in self.engines if e.proxy]:
            e.start(self.backend, 1)
            try:
                url = url_for("http-small", e)
                proc = self.wrk.start(url, dur)
                time.sleep(1.5)
                spread = max(0.0, dur - 4.0)
                failures: list[str] = []
                t0 = time.monotonic()
                for i in range(changes):
                    try:
                        e.apply_route_change(i)
                    except Exception as exc:  # noqa: BLE001 - a failed change is a result, not a crash
                        failures.append(f"{i}: {exc}")
                    pause = t0 + spread * (i + 1) / changes - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                applied_in = time.monotonic() - t0
                res: WrkResult = self.wrk.finish(proc, timeout=dur + 60)
                # the last route must serve once applied (Envoy/Caddy apply asynchronously: allow a moment)
                deadline, last_ok = time.monotonic() + 10, False
                while time.monotonic() < deadline and not last_ok:
                    last_ok = http_status(e.http_port, f"r{changes - 1:03d}.localhost") == 200
                    time.sleep(0.1)
                out[e.name] = {**res.to_dict(), "changes": changes, "change_failures": failures[:5],
                               "change_failures_count": len(failures), "changes_seconds": round(applied_in, 2),
                               "last_route_serves": last_ok}
                log(f"reload-under-load {e.name}: {res.rps:.0f} req/s, errors {res.errors} ({res.socket_errors}, "
                    f"non-2xx {res.non_2xx_3xx}), {changes} changes in {applied_in:.1f} s, last route serves: {last_ok}")
            finally:
                e.stop()
        self.results["reload-under-load"] = {"duration_s": dur, "engines": out}

    def idle_memory(self) -> None:
        out: dict[str, Any] = {}
        n = self.args.idle_connections
        for e in [e for e in self.engines if e.proxy]:
            e.start(self.backend, 1)
            conns: list[socket.socket] = []
            try:
                time.sleep(0.5)
                rss_before = e.rss()
                failed = 0
                for _ in range(n):
                    try:
                        conns.append(_one_request_keepalive(e.http_port))
                    except OSError:
                        failed += 1
                time.sleep(2.0)
                rss_with = e.rss()
                still_open = sum(1 for c in conns if _alive(c))
                out[e.name] = {"rss_idle_mib": round(rss_before / MiB, 1), "rss_with_connections_mib": round(rss_with / MiB, 1),
                               "connections": n, "failed": failed, "still_open": still_open}
                log(f"idle-memory {e.name}: {rss_before / MiB:.1f} MiB idle, {rss_with / MiB:.1f} MiB with {n} "
                    f"connections ({still_open} still open, {failed} failed)")
            finally:
                for c in conns:
                    c.close()
                e.stop()
        self.results["idle-memory"] = {"engines": out}

    def profile_builtin(self) -> dict[str, Any] | None:
        """py-spy on the builtin daemon while wrk drives http-small (a separate, unmeasured run)."""
        pyspy = shutil.which("py-spy") or str(Path(self.python).parent / "py-spy")
        if not Path(pyspy).exists() and not shutil.which(pyspy):
            log("py-spy not found: no profile")
            return None
        e = GotunnelEngine(self.workdir, self.certs, "builtin", self.python)
        e.start(self.backend, 1)
        RESULTS.mkdir(exist_ok=True)
        raw = RESULTS / "profile-builtin.txt"
        try:
            dur = self.args.profile_duration
            proc = self.wrk.start(url_for("http-small", e), dur + 2)
            time.sleep(1)
            spy = subprocess.run(["taskset", "-c", str(LOAD_CPU), pyspy, "record", "-p", str(e.pid), "-d", str(dur), "-r", "200",
                                  "--nonblocking", "--format", "raw", "-o", str(raw)], capture_output=True, text=True)
            res = self.wrk.finish(proc, timeout=dur + 60)
            if spy.returncode != 0:
                log(f"py-spy failed: {spy.stderr.strip()[-300:]}")
                return None
        finally:
            e.stop()
        text = raw.read_text()
        summary = summarise_profile(text)
        summary["top_self_lines"] = summarise_profile(text, lines=True)["top_self"]
        summary["rps_while_profiling"] = res.rps
        summary["raw_file"] = str(raw.relative_to(RESULTS.parent.parent))
        return summary


class CpuMeter:
    """Busy share of each CPU over a measurement: shows whether the engine's CPU was saturated or
    the load side (wrk + backend) was the limit."""

    def __init__(self) -> None:
        self.start = psutil.cpu_times(percpu=True)

    def busy(self) -> list[float]:
        out = []
        for a, b in zip(self.start, psutil.cpu_times(percpu=True)):
            total = sum(b) - sum(a)
            idle = (b.idle + b.iowait) - (a.idle + a.iowait)
            out.append(round(100.0 * (total - idle) / total, 1) if total > 0 else 0.0)
        return out


def summarise_profile(collapsed: str, top: int = 15, lines: bool = False) -> dict[str, Any]:
    """Top frames by self and inclusive samples from py-spy's collapsed ('raw') output."""
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f.strip() for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        total += n
        self_c[_short(frames[-1], lines)] += n
        for f in {_short(f, lines) for f in frames}:
            incl[f] += n
    pct = (lambda c: round(100.0 * c / total, 1)) if total else (lambda c: 0.0)
    # frames on every stack (runpy, click, asyncio.run, ...) say nothing: leave them out
    return {"samples": total,
            "top_self": [[f, pct(c)] for f, c in self_c.most_common(top)],
            "top_inclusive": [[f, pct(c)] for f, c in incl.most_common() if c < total][:top]}


def _short(frame: str, lines: bool = False) -> str:
    """'handle (/long/path/gotunnel_builtin_proxy/protocol.py:123)' -> 'handle (protocol.py)' (':123' with lines)."""
    if "(" in frame and frame.endswith(")"):
        name, _, where = frame.partition(" (")
        where = os.path.basename(where[:-1])
        return f"{name} ({where if lines else where.rsplit(':', 1)[0]})"
    return frame


def _one_request_keepalive(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {MEASURED}.localhost:{port}\r\n\r\n".encode())
        data = b""
        while not data.endswith(SMALL_BODY):
            chunk = sock.recv(4096)
            if not chunk:
                raise OSError("closed before the response ended")
            data += chunk
        return sock
    except BaseException:
        sock.close()
        raise


def _alive(sock: socket.socket) -> bool:
    try:
        sock.setblocking(False)
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


# ----- report ---------------------------------------------------------------------------------


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    def rps(scn: str, eng: str, key: str = "rps") -> float | None:
        return results.get(scn, {}).get("engines", {}).get(eng, {}).get(key)

    def ratio(scn: str, a: str, b: str, key: str = "rps") -> float | None:
        x, y = rps(scn, a, key), rps(scn, b, key)
        return round(x / y, 3) if x and y else None

    out = []
    for tid, desc, scn, limit in TARGETS:
        value: float | None = None
        per_cpu: float | None = None
        ok: bool | None = None
        if tid in ("http_vs_nginx", "https_vs_nginx", "handshake_vs_nginx", "h2_vs_nginx", "vs_envoy", "vs_caddy"):
            other = {"vs_envoy": "envoy-ref", "vs_caddy": "caddy-ref"}.get(tid, REFERENCE)
            value, per_cpu = ratio(scn, "builtin", other), ratio(scn, "builtin", other, "req_per_cpu_s")
            if value is not None:
                ok = value >= limit and (tid != "http_vs_nginx" or (per_cpu is not None and per_cpu >= limit))
        elif tid == "http_p99":
            value = ratio(scn, "builtin", REFERENCE, "p99_ms")
            if value is not None:
                ok = value <= limit
        elif tid == "tunnels_1000":
            value = rps(scn, "builtin", "x_one_tunnel_median_of_rounds")
            per_cpu = ratio(scn, "builtin", "builtin" + ONE_TUNNEL, "req_per_cpu_s")
            if value is not None:
                ok = value >= limit
        elif tid == "workers_2":
            value = rps(scn, "builtin", "second_worker_adds")
            per_cpu = rps(scn, "builtin", "two_workers_per_cpu")
            if value is not None:
                ok = value >= limit
        elif tid == "reload_errors":
            r = results.get(scn, {}).get("engines", {}).get("builtin")
            if r:
                value = r["errors"] + r["change_failures_count"]
                ok = value == 0 and r["last_route_serves"]
        elif tid == "idle_rss":
            r = results.get(scn, {}).get("engines", {}).get("builtin")
            if r:
                value = r["rss_with_connections_mib"]
                ok = value < limit and r["still_open"] == r["connections"]
        out.append({"id": tid, "target": desc, "value": value, "per_engine_cpu_second": per_cpu, "limit": limit,
                    "status": "n/a" if ok is None else ("pass" if ok else "MISS")})
    return out


def _f(v: Any, nd: int = 0) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return str(v)


def render_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [f"Run {report['started_at']} on {m['cpu_model']}, {m['cpus']} CPUs, {m['memory_gib']} GiB, Linux {m['kernel']}; "
             f"load average at start {', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}. "
             f"{report['config']['rounds']} alternating rounds x {report['config']['duration']} s "
             f"(+{report['config']['warmup']} s warm-up), wrk -t1 -c50, medians. "
             f"Engine on CPU {ENGINE_CPU}, wrk + backend on CPU {LOAD_CPU}, one worker each.", ""]
    res = report["results"]
    thr = [s for s in THROUGHPUT if s in res]
    if thr:
        lines += ["| scenario | engine | req/s | x nginx-ref | p50 ms | p99 ms | errors (socket / non-2xx) | backend saw / wrk sent "
                  "| engine CPU % | req per engine CPU-s | x nginx-ref per CPU-s | CPU0 / CPU1 busy % |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for s in thr:
            for name, r in res[s]["engines"].items():
                shown = f"{name} ({r['protocol']})" if r.get("protocol") else name
                lines.append(f"| {s} | {shown} | {_f(r['rps'])} | {_f(r['x_nginx'], 2)} | {_f(r['p50_ms'], 2)} | {_f(r['p99_ms'], 2)} | "
                             f"{r['socket_errors']} / {r['non_2xx_3xx']} | {_f(r['backend_requests'])} / {r['requests']} | "
                             f"{_f(r['engine_cpu_pct'])} | {_f(r['req_per_cpu_s'])} | {_f(r.get('x_nginx_per_cpu'), 2)} | "
                             f"{' / '.join(f'{x:.0f}' for x in r['cpu_busy_pct'])} |")
        if "1000-tunnels" in res:
            rounds = {n: r for n, r in res["1000-tunnels"]["engines"].items() if r.get("x_one_tunnel")}
            lines += ["", "1,000 tunnels vs one tunnel, median of per-round ratios (rounds): " + ", ".join(
                f"{n} {r['x_one_tunnel_median_of_rounds']:.2f}x ({', '.join(f'{x:.2f}' for x in r['x_one_tunnel_rounds'])})"
                for n, r in rounds.items())]
        if "workers-2" in res:
            w2 = {n: r for n, r in res["workers-2"]["engines"].items() if r.get("two_workers_per_cpu")}
            lines += ["", "Two workers vs one, both on the engine CPU, req per CPU-s (rounds); with a core per worker the "
                      "second adds 2 x ratio - 1: " + ", ".join(
                          f"{n} {r['two_workers_per_cpu']:.2f}x ({', '.join(f'{x:.2f}' for x in r['two_workers_per_cpu_rounds'])}) "
                          f"-> adds {r['second_worker_adds']:.2f}x" for n, r in w2.items())]
            for n, r in res["workers-2"]["engines"].items():
                split = [s.get("connections_by_process") for s in r["rounds"] if s.get("connections_by_process")]
                if split:
                    lines.append(f"- {n}: wrk's 50 connections per worker process, by round: {split}")
        lines.append("")
    if "reload-under-load" in res:
        lines += [f"Reload under load ({res['reload-under-load']['duration_s']} s of wrk while routes are added one by one):", "",
                  "| engine | changes (failed) | applied in s | req/s | p99 ms | socket errors | non-2xx | last route serves |",
                  "|---|---:|---:|---:|---:|---:|---:|---|"]
        for name, r in res["reload-under-load"]["engines"].items():
            lines.append(f"| {name} | {r['changes']} ({r['change_failures_count']}) | {r['changes_seconds']} | "
                         f"{_f(r['rps'])} | {_f(r['p99_ms'], 1)} | "
                         f"{sum(r['socket_errors'].values())} {_errs(r['socket_errors'])} | {r['non_2xx_3xx']} | "
                         f"{r['last_route_serves']} |")
        lines.append("")
    if "idle-memory" in res:
        lines += ["Memory (RSS of the proxy process tree):", "",
                  "| engine | idle MiB | with 1,000 idle keep-alive connections MiB | still open |", "|---|---:|---:|---:|"]
        for name, r in res["idle-memory"]["engines"].items():
            lines.append(f"| {name} | {r['rss_idle_mib']} | {r['rss_with_connections_mib']} | {r['still_open']}/{r['connections']} |")
        lines.append("")
    lines += ["Targets (builtin; status from req/s; the per-CPU-second ratio is shown for context):", "",
              "| target | measured | per engine CPU-second | status |", "|---|---:|---:|---|"]
    for t in report["targets"]:
        v = _f(t['value'], 2) if isinstance(t['value'], float) else _f(t['value'])
        lines.append(f"| {t['target']} | {v} | {_f(t.get('per_engine_cpu_second'), 2)} | {t['status']} |")
    lines += ["", "Versions: " + "; ".join(f"{k}: {v}" for k, v in report["versions"].items())]
    return "\n".join(lines) + "\n"


def _errs(d: dict[str, int]) -> str:
    nz = {k: v for k, v in d.items() if v}
    return f"({', '.join(f'{k} {v}' for k, v in nz.items())})" if nz else ""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measurement (default 10)")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before each measurement (default 2)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per scenario (default 3)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated subset of {','.join(SCENARIOS)}")
    p.add_argument("--engines", default="direct,builtin,gotunnel-nginx,gotunnel-caddy,gotunnel-envoy,gotunnel-haproxy,"
                                         "nginx-ref,caddy-ref,envoy-ref,haproxy-ref",
                   help=f"comma-separated subset of {','.join(ENGINE_NAMES)} (or gotunnel-<engine>)")
    p.add_argument("--reload-duration", type=float, default=20.0, help="wrk seconds in reload-under-load (default 20)")
    p.add_argument("--changes", type=int, default=100, help="route changes in reload-under-load (default 100)")
    p.add_argument("--idle-connections", type=int, default=1000)
    p.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True,
                   help="py-spy the builtin engine during http-small after the measurements (default on)")
    p.add_argument("--profile-duration", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="test the harness itself: 3 s, 1 s warm-up, 1 round, short reload")
    p.add_argument("--python", default=sys.executable, help="interpreter with gotunnel installed (default: this one)")
    p.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory (configs, logs)")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.rounds = 3.0, 1.0, 1
        args.reload_duration, args.profile_duration = min(args.reload_duration, 8.0), min(args.profile_duration, 3)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    args.engines = [s.strip() for s in args.engines.split(",") if s.strip()]
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    return args


def preflight() -> None:
    if (os.cpu_count() or 1) < 2 or not {LOAD_CPU, ENGINE_CPU} <= os.sched_getaffinity(0):
        raise SystemExit(f"bench needs CPUs {LOAD_CPU} and {ENGINE_CPU} (pinning); this process may use {sorted(os.sched_getaffinity(0))}")
    for tool in ("wrk", "h2load", "taskset", "/usr/sbin/nginx"):
        if not shutil.which(tool):
            raise SystemExit(f"bench needs {tool} (apt-get install wrk nghttp2-client nginx-light util-linux)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    preflight()
    nofile = raise_nofile()
    os.sched_setaffinity(0, {LOAD_CPU})  # the harness itself (and the idle-connection client) stays off the engine CPU
    workdir = Path(tempfile.mkdtemp(prefix="gtbench-", dir="/tmp"))
    started_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    report: dict[str, Any] = {"started_at": started_at, "machine": machine_info(), "config": {
        "duration": args.duration, "warmup": args.warmup, "rounds": args.rounds, "reload_duration": args.reload_duration,
        "changes": args.changes, "idle_connections": args.idle_connections, "wrk": "-t1 -c50 --latency (keep-alive)",
        "h2load": "-t1 -c10 -m10 (h2-small)",
        "engine_cpu": ENGINE_CPU, "load_cpu": LOAD_CPU, "nofile": nofile, "quick": args.quick,
        "scenarios": args.scenarios, "engines": args.engines}}
    bench: Bench | None = None
    try:
        bench = Bench(args, workdir)
        report["versions"] = {"wrk": cmd_version(["wrk", "--version"]).split(" [")[0],
                              **{e.name: e.version() for e in bench.engines}}
        bench.backend.start()
        log(f"backend nginx on :{bench.backend.port} (tls :{bench.backend.tls_port}); workdir {workdir}")
        for scenario in args.scenarios:
            log(f"--- {scenario}")
            if scenario in THROUGHPUT:
                bench.throughput(scenario)
            elif scenario == "reload-under-load":
                bench.reload_under_load()
            elif scenario == "idle-memory":
                bench.idle_memory()
        if args.profile and any(e.name == "builtin" for e in bench.engines):
            log("--- profile (py-spy on builtin, http-small)")
            report["profile_builtin"] = bench.profile_builtin()
    finally:
        if bench is not None:
            for e in bench.engines:
                try:
                    e.stop()
                except Exception as exc:  # noqa: BLE001
                    log(f"stopping {e.name}: {exc}")
            bench.backend.stop()
            report["results"] = bench.results
            report["skipped_engines"] = bench.skipped
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    report["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    report["machine"]["loadavg_at_end"] = list(os.getloadavg())
    report["targets"] = evaluate_targets(report["results"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    md = render_markdown(report)
    args.out.with_suffix(".md").write_text(md)
    print(md)
    prof = report.get("profile_builtin")
    if prof:
        print(f"py-spy, builtin engine, http-small ({prof['samples']} samples, {prof['rps_while_profiling']:.0f} req/s while sampled):")
        print("  top self:      " + "; ".join(f"{f} {p}%" for f, p in prof["top_self"][:8]))
        print("  top inclusive: " + "; ".join(f"{f} {p}%" for f, p in prof["top_inclusive"][:12]))
    print(f"JSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
