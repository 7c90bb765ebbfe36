"""nginx's metrics (issue 15): its syslog access-log record parsed into a request, and the option
`metrics` (on by default) that streams those records to the daemon, tested through the real CLI,
daemon and nginx. The exactness of the counters is the conformance row `metrics_counters`."""

from __future__ import annotations

import os
import shutil
import stat
from typing import Any

import pytest

from gotunnel_core.metrics.collector import parse_text
from gotunnel_core.testing import Gotunnel, wait_for
from gotunnel_core.testing.daemon import http_get, use_engine
from gotunnel_nginx.metrics import parse_access_record

NGINX = shutil.which("nginx") or (os.path.exists("/usr/sbin/nginx") and "/usr/sbin/nginx")
HEAD = b"<190>Jan  1 00:00:00 gotunnel: "


def test_record_parser() -> None:
    ok = parse_access_record(HEAD + b"mix|200|0.004|120|300|127.0.0.1:3000|0.003")
    assert ok is not None and (ok.host, ok.status, ok.seconds, ok.bytes_in, ok.bytes_out, ok.upstream_errors) == \
        ("mix", 200, 0.004, 120, 300, 0)
    # a refused backend, then the error page (an internal redirect): one failed attempt
    bad = parse_access_record(HEAD + b"mix|502|0.001|80|900|127.0.0.1:3000 : -|- : 0.000")
    assert bad is not None and bad.status == 502 and bad.upstream_errors == 1
    retried = parse_access_record(HEAD + b"w|200|0.010|80|900|127.0.0.1:1, 127.0.0.1:2|-, 0.002")
    assert retried is not None and retried.upstream_errors == 1
    redirect = parse_access_record(HEAD + b"mix|308|0.000|80|200|-|-")
    assert redirect is not None and redirect.upstream_errors == 0
    assert parse_access_record(HEAD + b"|404|0.000|80|200|-|-") is None  # no tunnel
    assert parse_access_record(b"garbage") is None


def _requests(g: Gotunnel, tunnel: str) -> float:
    samples = parse_text(g("metrics", check=True).out)
    return sum(v for (name, labels), v in samples.items()
               if name == "gotunnel_requests_total" and dict(labels)["tunnel"] == tunnel)


@pytest.mark.skipif(not NGINX, reason="nginx is not installed (CI installs it)")
@pytest.mark.parametrize("metrics", ["on", "off"])
def test_the_metrics_option_streams_the_access_log_or_nothing(gotunnel: Gotunnel, echo_backend: Any,
                                                              metrics: str) -> None:
    g = use_engine(gotunnel, "nginx", NGINX)
    if metrics == "off":
        g.env["GOTUNNEL_NGINX_METRICS"] = "0"
    shown = g.json("config", "show")["engines"]["nginx"]["metrics"]
    assert shown["value"] is (metrics == "on") and shown["env"] == "GOTUNNEL_NGINX_METRICS"
    g("start", "-d", "app", "-p", str(echo_backend().port), check=True)
    assert http_get(g.http_port, "app.localhost")[0] == 200
    run = g.state_dir / "engines" / "nginx" / "run"
    conf = (g.state_dir / "engines" / "nginx" / "current" / "nginx.conf").read_text()
    if metrics == "on":
        assert stat.S_IMODE((run / "metrics.sock").stat().st_mode) == 0o600  # only the daemon's user writes
        assert f"syslog:server=unix:{run / 'metrics.sock'}" in conf
        wait_for(lambda: _requests(g, "app") == 1, what="the request to be counted")
    else:
        assert not (run / "metrics.sock").exists() and "syslog:" not in conf
        assert _requests(g, "app") == 0  # the tunnel's series exist, and count nothing
