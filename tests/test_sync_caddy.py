"""`gotunnel sync --engine caddy` against a Caddy the test starts from its own JSON config (admin
API on a free port, an unrelated site on the port gotunnel's HTTP routes join): routes merged in
by `@id`, loaded through the admin API's `/load`, a config `caddy validate` refuses rolled back
while Caddy keeps serving, and `--watch` applies an edit within 2 seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.request import urlopen

import pytest
from test_existing_names import make_pem_pair
from test_sync_nginx import answers_from, config, get_echo

from gotunnel_core.testing import Gotunnel, free_port, stop_pid, wait_for
from gotunnel_core.testing.daemon import http_get


def caddy_binary() -> str | None:
    from gotunnel_caddy.engine import CaddyEngine

    status = CaddyEngine.probe({"engine": "caddy"})
    return status.path if status.found else None


CADDY = caddy_binary()
pytestmark = pytest.mark.skipif(CADDY is None, reason="caddy is not installed (gotunnel-caddy[bin] brings it)")


class SystemCaddy:
    """A Caddy run from its own config with its admin API on TCP, as a host's Caddy is."""

    def __init__(self, root: Path, http_port: int, https_port: int | None = None) -> None:
        """`https_port`: Caddy's own HTTP and HTTPS ports (`apps.http.http_port`/`https_port`, 80
        and 443 by default), where it answers ACME challenges: a host's Caddy listens there."""
        root.mkdir(parents=True)
        self.root, self.http_port, self.admin = root, http_port, free_port()
        self.conf = root / "caddy.json"
        http_app: dict[str, Any] = {"servers": {"site": {
            "listen": [f"127.0.0.1:{http_port}"],
            "automatic_https": {"disable": True},
            "routes": [{"match": [{"host": ["unrelated.example.test"]}],
                        "handle": [{"handler": "static_response", "body": "unrelated\n"}]}],
        }}}
        if https_port is not None:
            http_app.update(http_port=http_port, https_port=https_port)
        self.conf.write_text(json.dumps({"admin": {"listen": f"127.0.0.1:{self.admin}"}, "apps": {"http": http_app}}))
        env = {**os.environ, "HOME": str(root), "XDG_DATA_HOME": str(root / "data"), "XDG_CONFIG_HOME": str(root / "config")}
        self.log = root / "caddy.log"  # Caddy logs to stderr: kept for a failing test's message
        with self.log.open("wb") as sink:
            self.proc = subprocess.Popen([str(CADDY), "run", "--config", str(self.conf)], env=env,
                                         stdout=subprocess.DEVNULL, stderr=sink)
        wait_for(self.unrelated_answers, timeout=15, what="the system Caddy to serve")

    def unrelated_answers(self) -> bool:
        try:
            return http_get(self.http_port, "unrelated.example.test")[2] == b"unrelated\n"
        except OSError:
            return False

    def route_ids(self) -> list[str]:
        with urlopen(f"http://127.0.0.1:{self.admin}/config/", timeout=5) as answer:
            text = answer.read().decode()
        return sorted(set(part.split('"')[0] for part in text.split('"@id":"')[1:]))

    def stop(self) -> None:
        stop_pid(self.proc.pid)
        self.proc.wait(timeout=10)


@pytest.fixture
def system_caddy(gotunnel: Gotunnel, tmp_path: Path) -> Iterator[SystemCaddy]:
    caddy = SystemCaddy(tmp_path / "etc-caddy", gotunnel.http_port)
    try:
        yield caddy
    finally:
        caddy.stop()


def test_sync_loads_tagged_routes_into_a_running_caddy_and_rolls_back(gotunnel: Gotunnel, system_caddy: SystemCaddy,
                                                                      echo_backend: Any, tmp_path: Path) -> None:
    backend = echo_backend("api")
    cert, key = make_pem_pair(tmp_path, "api.example.test")
    config_file = gotunnel.state_dir.parent / "gotunnel.toml"
    config_file.write_text(config(cert, key, backend.url))
    out = tmp_path / "gotunnel.caddy.json"
    sync = ("sync", "--engine", "caddy", "--out", str(out), "--main-config", str(system_caddy.conf))

    assert "synced" in gotunnel(*sync, check=True).out
    fragment = out.read_text()
    assert system_caddy.route_ids() == ["gotunnel_api_http", "gotunnel_api_https"]
    wait_for(lambda: answers_from(gotunnel.http_port, "api.example.test", "api"), timeout=10, what="HTTP route")
    status, headers, echo = get_echo(gotunnel.https_port, "api.example.test", ca=cert)
    assert status == 200 and echo["backend"] == "api" and headers["x-price"] == '5$ "each"'
    assert system_caddy.unrelated_answers()  # the host's own site, on the same listener, still answers

    # A certificate Caddy cannot load: `caddy validate` refuses, the previous file stays, Caddy serves on.
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    config_file.write_text(config(cert, key, backend.url,
                                  '[[tunnels]]\nname = "bad"\nhosts = ["bad.example.test"]\n'
                                  f'backends = ["{backend.url}"]\ntls = {{ cert = "{garbage}", key = "{garbage}" }}\n'))
    refused = gotunnel(*sync)
    assert refused.code == 2 and "caddy validate refused" in refused.err, refused
    assert out.read_text() == fragment and system_caddy.proc.poll() is None
    assert system_caddy.route_ids() == ["gotunnel_api_http", "gotunnel_api_https"]
    assert answers_from(gotunnel.https_port, "api.example.test", "api", cert) and system_caddy.unrelated_answers()


def test_sync_watch_applies_an_edit_to_caddy_within_two_seconds(gotunnel: Gotunnel, system_caddy: SystemCaddy,
                                                                 echo_backend: Any, tmp_path: Path) -> None:
    one, two = echo_backend("one"), echo_backend("two")
    cert, key = make_pem_pair(tmp_path, "api.example.test")
    config_file = gotunnel.state_dir.parent / "gotunnel.toml"
    config_file.write_text(config(cert, key, one.url))
    log = tmp_path / "watch.log"
    with log.open("w") as sink:
        watcher = subprocess.Popen(
            [sys.executable, "-m", "gotunnel_core", "sync", "--engine", "caddy", "--out", str(tmp_path / "gt.json"),
             "--main-config", str(system_caddy.conf), "--watch", "--interval", "0.1"],
            env={**os.environ, **gotunnel.env}, cwd=gotunnel.state_dir.parent, stdout=sink, stderr=subprocess.STDOUT)
    gotunnel.seen_pids.append(watcher.pid)
    try:
        wait_for(lambda: answers_from(gotunnel.http_port, "api.example.test", "one"), timeout=15, what="first sync")
        config_file.write_text(config(cert, key, two.url))
        edited = time.monotonic()
        wait_for(lambda: answers_from(gotunnel.http_port, "api.example.test", "two")
                 and answers_from(gotunnel.https_port, "api.example.test", "two", cert),
                 timeout=2, what="the edit to be served over HTTP and HTTPS")
        assert time.monotonic() - edited < 2 and system_caddy.unrelated_answers() and watcher.poll() is None
    finally:
        stop_pid(watcher.pid)
        watcher.wait(timeout=10)
