"""`gotunnel sync` against a real "system" nginx the test starts from its own nginx.conf (an
unrelated server block + `include conf.d/*.conf`), as an ops user's nginx: the fragment routes
real names over HTTP and HTTPS with the user's certificate, a config nginx refuses is rolled back
while nginx keeps serving, and `--watch` applies an edit of the config file within 2 seconds."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from gotunnel_core.testing import Gotunnel, free_port, stop_pid, wait_for
from gotunnel_core.testing.daemon import http_get

from test_existing_names import make_pem_pair

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (CI installs it)")


class SystemNginx:
    """An nginx run from its own nginx.conf, as a host's nginx is: gotunnel does not start it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.conf = root / "nginx.conf"
        self.conf_d = root / "conf.d"
        self.conf_d.mkdir(parents=True)
        (root / "tmp").mkdir()
        self.conf.write_text(f"""
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    server_names_hash_bucket_size 128;
    server {{
        listen 127.0.0.1:{self.port};
        server_name unrelated.example.test;
        location / {{ return 200 "unrelated\\n"; }}
    }}
    include conf.d/*.conf;
}}
""")
        self.proc = subprocess.Popen([str(NGINX), "-p", f"{root}/", "-e", "stderr", "-c", str(self.conf),
                                      "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for(self.unrelated_answers, timeout=10, what="the system nginx to serve")

    def unrelated_answers(self) -> bool:
        try:
            return http_get(self.port, "unrelated.example.test")[2] == b"unrelated\n"
        except OSError:
            return False

    def stop(self) -> None:
        stop_pid(self.proc.pid)
        self.proc.wait(timeout=10)


@pytest.fixture
def system_nginx(tmp_path: Path) -> Iterator[SystemNginx]:
    nginx = SystemNginx(tmp_path / "etc-nginx")
    try:
        yield nginx
    finally:
        nginx.stop()


def config(cert: Path, key: str | Path, backend: str, extra: str = "") -> str:
    return f"""
[[tunnels]]
name = "api"
hosts = ["api.example.test"]
backends = ["{backend}"]
tls = {{ cert = "{cert}", key = "{key}" }}
headers = {{ response = {{ add = {{ X-Price = "5$ \\"each\\"" }} }} }}
{extra}"""


def get_echo(port: int, host: str, ca: Path | None = None) -> tuple[int, dict[str, str], Any]:
    status, headers, body = http_get(port, host, "/hello", https_ca=str(ca) if ca else None)
    return status, headers, (json.loads(body) if status == 200 else body)


def answers_from(port: int, host: str, backend: str, ca: Path | None = None) -> bool:
    try:
        status, _, echo = get_echo(port, host, ca)
    except (OSError, ValueError):  # not listening yet, or another site's answer (not the echo's JSON)
        return False
    return status == 200 and echo["backend"] == backend


def test_sync_routes_real_names_and_rolls_back_a_refused_change(gotunnel: Gotunnel, system_nginx: SystemNginx,
                                                                 echo_backend: Any, tmp_path: Path) -> None:
    backend = echo_backend("api")
    cert, key = make_pem_pair(tmp_path, "api.example.test")
    config_file = gotunnel.state_dir.parent / "gotunnel.toml"
    config_file.write_text(config(cert, key, backend.url))
    out = system_nginx.conf_d / "gotunnel.conf"
    sync = ("sync", "--engine", "nginx", "--out", str(out), "--main-config", str(system_nginx.conf))

    result = gotunnel(*sync, check=True)
    assert "synced" in result.out
    fragment = out.read_text()
    # Only upstream, map and server blocks (and the `$` geo, as a value holds one), all gotunnel_.
    top_level = re.findall(r"^    (\w+)(.*?) ?\{$", fragment, re.M)
    assert {kind for kind, _ in top_level} == {"upstream", "map", "server", "geo"}
    defined = [args.split()[-1] for kind, args in top_level if kind != "server"]  # the name each block defines
    assert len(defined) == 4 and all(name.startswith(("gotunnel_", "$gotunnel_")) for name in defined), defined
    assert "user " not in fragment and "daemon" not in fragment and "pid " not in fragment

    wait_for(lambda: answers_from(gotunnel.http_port, "api.example.test", "api"), timeout=10, what="HTTP route")
    status, headers, echo = get_echo(gotunnel.https_port, "api.example.test", ca=cert)
    assert status == 200 and echo["backend"] == "api" and echo["path"] == "/hello"
    assert headers["x-price"] == '5$ "each"'  # `$` and quotes arrive verbatim
    assert [v for k, v in echo["headers"] if k.lower() == "host"] == ["api.example.test"]
    assert system_nginx.unrelated_answers()
    assert gotunnel(*sync, check=True).out.startswith("unchanged")

    # A change nginx refuses (a backend host that does not resolve): previous file back, nginx serving.
    master = system_nginx.proc.pid
    config_file.write_text(config(cert, key, backend.url,
                                  '[[tunnels]]\nname = "bad"\nhosts = ["bad.example.test"]\n'
                                  'backends = ["http://no-such-host.invalid:80"]\ntls = "off"\n'))
    refused = gotunnel(*sync)
    assert refused.code == 2 and "nginx -t refused" in refused.err and "no-such-host.invalid" in refused.err
    assert out.read_text() == fragment
    assert [p.name for p in system_nginx.conf_d.iterdir()] == ["gotunnel.conf"]  # no temp file left behind
    assert system_nginx.proc.poll() is None and system_nginx.proc.pid == master
    assert answers_from(gotunnel.https_port, "api.example.test", "api", cert) and system_nginx.unrelated_answers()

    # A missing certificate file: refused before anything is written.
    config_file.write_text(config(cert, tmp_path / "gone.key", backend.url))
    missing = gotunnel(*sync)
    assert missing.code == 2 and "gone.key" in missing.err and out.read_text() == fragment


def test_sync_reload_cmd_runs_instead_of_nginx_reload(gotunnel: Gotunnel, system_nginx: SystemNginx,
                                                       echo_backend: Any, tmp_path: Path) -> None:
    backend = echo_backend("api")
    cert, key = make_pem_pair(tmp_path, "api.example.test")
    (gotunnel.state_dir.parent / "gotunnel.toml").write_text(config(cert, key, backend.url))
    out = system_nginx.conf_d / "gotunnel.conf"
    marker = tmp_path / "reloaded"
    reload_cmd = f"{NGINX} -s reload -c {system_nginx.conf}"
    gotunnel("sync", "--engine", "nginx", "--out", str(out), "--main-config", str(system_nginx.conf),
             "--reload-cmd", f"sh -c 'touch {marker} && {reload_cmd}'", check=True)
    assert marker.exists()
    wait_for(lambda: answers_from(gotunnel.http_port, "api.example.test", "api"), timeout=10, what="HTTP route")
    failing = gotunnel("sync", "--engine", "nginx", "--out", str(out), "--main-config", str(system_nginx.conf),
                       "--reload-cmd", "false", "--format", "fragment")
    assert failing.code == 0  # unchanged output: no reload at all


def test_sync_watch_applies_an_edit_within_two_seconds(gotunnel: Gotunnel, system_nginx: SystemNginx,
                                                        echo_backend: Any, tmp_path: Path) -> None:
    one, two = echo_backend("one"), echo_backend("two")
    cert, key = make_pem_pair(tmp_path, "api.example.test")
    config_file = gotunnel.state_dir.parent / "gotunnel.toml"
    config_file.write_text(config(cert, key, one.url))
    out = system_nginx.conf_d / "gotunnel.conf"
    log = tmp_path / "watch.log"
    with log.open("w") as sink:
        watcher = subprocess.Popen(
            [sys.executable, "-m", "gotunnel_core", "sync", "--engine", "nginx", "--out", str(out),
             "--main-config", str(system_nginx.conf), "--watch", "--interval", "0.1"],
            env={**os.environ, **gotunnel.env}, cwd=gotunnel.state_dir.parent, stdout=sink, stderr=subprocess.STDOUT)
    gotunnel.seen_pids.append(watcher.pid)
    try:
        wait_for(lambda: answers_from(gotunnel.http_port, "api.example.test", "one"), timeout=15, what="first sync")
        # An edit nginx refuses is reported; the watcher goes on and nginx keeps the last good config.
        config_file.write_text(config(cert, key, "http://no-such-host.invalid:80"))
        wait_for(lambda: "nginx -t refused" in log.read_text(), timeout=10, what="the refusal to be reported")
        assert answers_from(gotunnel.http_port, "api.example.test", "one")
        config_file.write_text(config(cert, key, two.url))
        edited = time.monotonic()
        # Old workers finish their connections after a reload, so a request may still meet one: poll.
        wait_for(lambda: answers_from(gotunnel.http_port, "api.example.test", "two")
                 and answers_from(gotunnel.https_port, "api.example.test", "two", cert),
                 timeout=2, what="the edit to be served over HTTP and HTTPS")
        assert time.monotonic() - edited < 2
        assert system_nginx.unrelated_answers()
        assert watcher.poll() is None
    finally:
        stop_pid(watcher.pid)
        watcher.wait(timeout=10)
