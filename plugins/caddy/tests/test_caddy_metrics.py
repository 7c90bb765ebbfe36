"""Caddy's metrics (issue 15): its JSON access-log entry parsed into a request (a 502 Caddy renders
marked as an upstream error), and the option `metrics` (on by default) that streams the access log
to the daemon, through the real CLI, daemon and Caddy. The exactness of the counters is the
conformance row `metrics_counters`."""

from __future__ import annotations

import json
import stat
from typing import Any

import pytest

from caddy_helpers import needs_caddy
from gotunnel_caddy.metrics import UPSTREAM_ERROR_FIELD, parse_access_record
from gotunnel_core.metrics.collector import parse_text
from gotunnel_core.testing import Gotunnel, wait_for
from gotunnel_core.testing.daemon import http_get, use_engine


def test_record_parser() -> None:
    entry = {"request": {"host": "mix.localhost:8443"}, "status": 502, "duration": 0.25, "bytes_read": 3,
             "size": 900, UPSTREAM_ERROR_FIELD: "1"}
    record = parse_access_record(json.dumps(entry).encode())
    assert record is not None and (record.host, record.status, record.seconds, record.bytes_in, record.bytes_out,
                                   record.upstream_errors) == ("mix.localhost:8443", 502, 0.25, 3, 900, 1)
    assert parse_access_record(b'{"msg": "not a request"}') is None


def _requests(g: Gotunnel, tunnel: str) -> float:
    samples = parse_text(g("metrics", check=True).out)
    return sum(v for (name, labels), v in samples.items()
               if name == "gotunnel_requests_total" and dict(labels)["tunnel"] == tunnel)


@needs_caddy
@pytest.mark.parametrize("metrics", ["on", "off"])
def test_the_metrics_option_streams_the_access_log_or_nothing(gotunnel: Gotunnel, echo_backend: Any,
                                                              metrics: str) -> None:
    g = use_engine(gotunnel, "caddy")
    if metrics == "off":
        g.env["GOTUNNEL_CADDY_METRICS"] = "false"
    shown = g.json("config", "show")["engines"]["caddy"]["metrics"]
    assert shown["value"] is (metrics == "on") and shown["env"] == "GOTUNNEL_CADDY_METRICS"
    g("start", "-d", "app", "-p", str(echo_backend().port), check=True)
    assert http_get(g.http_port, "app.localhost")[0] == 200
    run = g.state_dir / "engines" / "caddy" / "run"
    config = (g.state_dir / "engines" / "caddy" / "current" / "caddy.json").read_text()
    if metrics == "on":
        assert stat.S_IMODE((run / "metrics.sock").stat().st_mode) == 0o600  # only the daemon's user writes
        assert f"unixgram/{run / 'metrics.sock'}" in config
        wait_for(lambda: _requests(g, "app") == 1, what="the request to be counted")
    else:
        assert not (run / "metrics.sock").exists() and "unixgram/" not in config
        assert _requests(g, "app") == 0  # the tunnel's series exist, and count nothing
