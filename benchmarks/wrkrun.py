"""Running wrk and parsing its output.

wrk takes the TLS SNI and the Host header from the URL's host, so the URL names `bench.localhost`;
a tiny Lua script overrides `wrk.resolve` to connect to 127.0.0.1 instead, so neither /etc/hosts nor
DNS is involved. The script defines no request/response hook, so wrk's hot path stays native.

With `close=True` the script also sends `Connection: close`: the server closes after each response
and wrk reconnects, so every request pays a new TCP connection and, over HTTPS, a new TLS handshake.
wrk keeps the session its OpenSSL client got and offers it again, so handshakes are resumed (TLS 1.3
session tickets), as browsers do.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESOLVE_LUA = """-- written by benchmarks/wrkrun.py: connect to 127.0.0.1 whatever the URL host is
wrk.resolve = function(host, service)
  wrk.addrs = wrk.lookup("127.0.0.1", service)
end
"""
CLOSE_LUA = 'wrk.headers["Connection"] = "close"\n'

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}
_SIZE = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}


@dataclass
class WrkResult:
    requests: int = 0
    duration_s: float = 0.0
    rps: float = 0.0
    p50_ms: float | None = None
    p75_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    socket_errors: dict[str, int] = field(default_factory=lambda: {"connect": 0, "read": 0, "write": 0, "timeout": 0})
    non_2xx_3xx: int = 0
    transfer_per_s: str = ""

    @property
    def errors(self) -> int:
        """Every failed request wrk saw: socket errors of any kind plus non-2xx/3xx responses."""
        return sum(self.socket_errors.values()) + self.non_2xx_3xx

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "errors": self.errors}


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]


def _count(value: str) -> int:
    """wrk prints large counts as `1.23M` in some places; plain integers elsewhere."""
    m = re.fullmatch(r"([\d.]+)([kKmMgG]?)", value)
    if not m:
        raise ValueError(f"not a wrk count: {value!r}")
    return int(round(float(m.group(1)) * _SIZE[m.group(2).lower()]))


def parse_wrk_output(text: str) -> WrkResult:
    """Parse wrk 4.x text output (run with --latency) into a WrkResult; raises ValueError if it isn't one."""
    res = WrkResult()
    m = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),", text, re.M)
    if not m:
        raise ValueError("wrk output has no 'N requests in T' line:\n" + text[-2000:])
    res.requests = int(m.group(1))
    res.duration_s = _ms(m.group(2), m.group(3)) / 1000.0
    m = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    if not m:
        raise ValueError("wrk output has no Requests/sec line")
    res.rps = float(m.group(1))
    for pct, attr in (("50", "p50_ms"), ("75", "p75_ms"), ("90", "p90_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s*{pct}(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M)
        if m:
            setattr(res, attr, _ms(m.group(1), m.group(2)))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        res.socket_errors = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups())))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        res.non_2xx_3xx = int(m.group(1))
    m = re.search(r"^Transfer/sec:\s+(\S+)", text, re.M)
    if m:
        res.transfer_per_s = m.group(1)
    return res


class Wrk:
    """wrk pinned to the load-generator CPU, always -t1 -c50 --latency unless told otherwise."""

    def __init__(self, workdir: Path, cpu: int, threads: int = 1, connections: int = 50, wrk_bin: str = "wrk",
                 timeout_s: int = 2) -> None:
        self.script = workdir / "resolve.lua"
        self.script.write_text(RESOLVE_LUA)
        self.close_script = workdir / "resolve-close.lua"
        self.close_script.write_text(RESOLVE_LUA + CLOSE_LUA)
        self.cpu, self.threads, self.connections, self.bin = cpu, threads, connections, wrk_bin
        self.timeout_s = timeout_s  # wrk's per-request timeout (its default, 2 s, unless under valgrind)

    def argv(self, url: str, duration: float, close: bool = False) -> list[str]:
        return ["taskset", "-c", str(self.cpu), self.bin, f"-t{self.threads}", f"-c{self.connections}",
                f"-d{max(1, int(round(duration)))}s", f"--timeout={self.timeout_s}s", "--latency",
                "-s", str(self.close_script if close else self.script), url]

    def start(self, url: str, duration: float, close: bool = False) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(url, duration, close), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def finish(self, proc: subprocess.Popen[str], timeout: float) -> WrkResult:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise RuntimeError(f"wrk did not finish within {timeout} s") from None
        if proc.returncode != 0:
            raise RuntimeError(f"wrk failed ({proc.returncode}): {err.strip()} {out.strip()}")
        return parse_wrk_output(out)

    def run(self, url: str, duration: float, close: bool = False) -> WrkResult:
        return self.finish(self.start(url, duration, close), timeout=duration + 30)
