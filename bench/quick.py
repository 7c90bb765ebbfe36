"""Quick perf sanity check (not a test): wrk against an nginx `return 200` backend, nginx as proxy and
the builtin engine, over HTTP and HTTPS, in alternating rounds; reports req/s, latency and the proxy's
CPU time per request (robust on a shared, noisy machine where absolute req/s drift).

usage (from the repository root):
  PYTHONPATH=.:plugins/builtin_proxy /work/main/.venv/bin/python bench/quick.py [--rounds 3] [--duration 10] [--pin]
Every process started here is stopped by pid at the end, also on failure.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def render(template: str, out: Path, **values: object) -> Path:
    text = (HERE / template).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    out.write_text(text)
    return out


def wrk(url: str, duration: int, pin: list[str], proxy: psutil.Process | None) -> dict[str, float]:
    cmd = pin + ["wrk", "-t1", "-c50", f"-d{duration}s", "-H", "Host: bench.localhost", url]
    before = sum(proxy.cpu_times()[:2]) if proxy else 0.0
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30).stdout
    cpu = (sum(proxy.cpu_times()[:2]) - before) if proxy else 0.0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    lat = re.search(r"Latency\s+(\S+)", out).group(1)
    errors = re.search(r"Socket errors:.*|Non-2xx or 3xx responses: \d+", out)
    return {"rps": rps, "lat": lat, "cpu_us": 1e6 * cpu / total if proxy else 0.0,
            "errors": errors.group(0) if errors else ""}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--pin", action="store_true", help="wrk+backend on CPU 0, proxies on CPU 1")
    ap.add_argument("--tunnels", type=int, default=0, help="extra tunnels configured in the builtin engine")
    args = ap.parse_args()
    pin0 = ["taskset", "-c", "0"] if args.pin else []
    pin1 = ["taskset", "-c", "1"] if args.pin else []
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        bp, np_, nsp, hp, sp = (free_port() for _ in range(5))
        try:
            env = dict(os.environ)
            engine = subprocess.Popen(pin1 + [sys.executable, str(HERE / "run_engine.py"), f"http://127.0.0.1:{bp}",
                                              str(hp), str(sp), str(d / "pki"), str(args.tunnels)],
                                      stdout=subprocess.PIPE, text=True, env=env)
            procs.append(engine)
            assert engine.stdout is not None and engine.stdout.readline().strip() == "ready"
            render("nginx_backend.conf.tmpl", d / "backend.conf", DIR=d, PORT=bp)
            render("nginx_proxy.conf.tmpl", d / "proxy.conf", DIR=d, PORT=np_, SPORT=nsp, BPORT=bp,
                   CERT=d / "pki" / "bench.crt", KEY=d / "pki" / "bench.key")
            procs.append(subprocess.Popen(pin0 + ["nginx", "-c", str(d / "backend.conf"), "-p", str(d)]))
            nginx_proxy = subprocess.Popen(pin1 + ["nginx", "-c", str(d / "proxy.conf"), "-p", str(d)])
            procs.append(nginx_proxy)
            time.sleep(0.5)  # nginx has no readiness signal; the curl checks below fail loudly if it is not up
            for url in (f"http://127.0.0.1:{bp}/", f"http://127.0.0.1:{np_}/", f"http://127.0.0.1:{hp}/"):
                subprocess.run(["curl", "-sf", "-o", "/dev/null", "-H", "Host: bench.localhost", url], check=True)
            nginx_ps = psutil.Process(nginx_proxy.pid)
            nginx_group = [nginx_ps] + nginx_ps.children()
            worker = nginx_group[-1]
            engine_ps = psutil.Process(engine.pid)
            cases = [
                ("backend", f"http://127.0.0.1:{bp}/", None),
                ("nginx-proxy http", f"http://127.0.0.1:{np_}/", worker),
                ("builtin http", f"http://127.0.0.1:{hp}/", engine_ps),
                ("nginx-proxy https", f"https://127.0.0.1:{nsp}/", worker),
                ("builtin https", f"https://127.0.0.1:{sp}/", engine_ps),
            ]
            results: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in cases}
            for r in range(args.rounds):
                for name, url, proc in cases:
                    res = wrk(url, args.duration, pin0, proc)
                    results[name].append(res)
                    print(f"round {r + 1} {name:18s} {res['rps']:>10.0f} req/s  lat {res['lat']:>8s}  "
                          f"proxy cpu {res['cpu_us']:5.1f} us/req {res['errors']}", flush=True)
            print("\nmedians:")
            med = {n: statistics.median(x["rps"] for x in v) for n, v in results.items()}
            cpu = {n: statistics.median(x["cpu_us"] for x in v) for n, v in results.items()}
            for name in results:
                print(f"  {name:18s} {med[name]:>10.0f} req/s  proxy cpu {cpu[name]:5.1f} us/req")
            print(f"  builtin/nginx http  : {med['builtin http'] / med['nginx-proxy http']:.2f}x req/s, "
                  f"{cpu['nginx-proxy http'] / cpu['builtin http']:.2f}x cpu efficiency")
            print(f"  builtin/nginx https : {med['builtin https'] / med['nginx-proxy https']:.2f}x req/s, "
                  f"{cpu['nginx-proxy https'] / cpu['builtin https']:.2f}x cpu efficiency")
        finally:
            for p in reversed(procs):
                p.terminate()
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()


if __name__ == "__main__":
    main()
