"""Running h2load (Debian nghttp2-client) and parsing its output into the same shape as wrk's.

h2load takes SNI and :authority from the URL; `--connect-to` sends the TCP connection to
127.0.0.1, so neither /etc/hosts nor DNS is involved. The negotiated protocol is recorded:
against a server without h2, h2load falls back to HTTP/1.1 and still prints a rate.
"""

from __future__ import annotations

import re
import subprocess
from urllib.parse import urlsplit

from .wrkrun import WrkResult


class H2LoadResult(WrkResult):
    """A WrkResult plus the application protocol h2load negotiated and the mean request time."""

    protocol: str = ""
    mean_ms: float | None = None

    def to_dict(self) -> dict:  # type: ignore[override]
        return {**super().to_dict(), "protocol": self.protocol, "mean_ms": self.mean_ms}


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_h2load_output(text: str) -> H2LoadResult:
    """Parse h2load 1.5x text output; raises ValueError if it has no result line."""
    res = H2LoadResult()
    m = re.search(r"finished in ([\d.]+)(us|ms|s), ([\d.]+) req/s", text)
    if not m:
        raise ValueError("h2load output has no 'finished in' line:\n" + text[-2000:])
    res.duration_s = float(m.group(1)) * _UNITS_MS[m.group(2)] / 1000.0
    res.rps = float(m.group(3))
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, "
                  r"(\d+) timeout", text)
    if m:
        total, _, done, ok, failed, errored, timeout = map(int, m.groups())
        res.requests = ok
        res.socket_errors = {"connect": 0, "read": errored, "write": failed, "timeout": timeout}
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if m:
        res.non_2xx_3xx = int(m.group(3)) + int(m.group(4))
    m = re.search(r"Application protocol: (\S+)", text)
    res.protocol = m.group(1) if m else "none"
    m = re.search(r"time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)", text)
    if m:
        res.mean_ms = float(m.group(5)) * _UNITS_MS[m.group(6)]
        res.p50_ms = res.mean_ms  # h2load prints no percentiles; the mean stands in for the median column
    return res


class H2Load:
    """h2load pinned to the load-generator CPU: one thread, `clients` connections, `streams` per connection."""

    def __init__(self, cpu: int, clients: int = 10, streams: int = 10, h2load_bin: str = "h2load") -> None:
        self.cpu, self.clients, self.streams, self.bin = cpu, clients, streams, h2load_bin

    def argv(self, url: str, duration: float) -> list[str]:
        port = urlsplit(url).port
        return ["taskset", "-c", str(self.cpu), self.bin, f"-D{max(1, int(round(duration)))}", f"-c{self.clients}",
                f"-m{self.streams}", "-t1", f"--connect-to=127.0.0.1:{port}", url]

    def run(self, url: str, duration: float) -> H2LoadResult:
        out = subprocess.run(self.argv(url, duration), capture_output=True, text=True, timeout=duration + 60)
        if out.returncode != 0 and "finished in" not in out.stdout:
            raise RuntimeError(f"h2load failed ({out.returncode}): {out.stderr.strip()} {out.stdout.strip()[-500:]}")
        return parse_h2load_output(out.stdout)
