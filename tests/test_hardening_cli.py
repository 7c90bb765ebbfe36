"""Issue 19, through the real CLI and daemon: what a hostile review found outside the request path.

Restore after a crash keeps the daemon's settings (and cleans up the saved engine's orphan),
start-up failures say why, a project's config file runs no program until allowed, bad input is
refused in one line with exit 2, names are not stolen, and the smaller defects and missing
conveniences of the review. Engine-shared request behaviours are in test_conformance_hardening.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest

from gotunnel_core.testing.daemon import http_get, serves, supervisor_record, use_engine
from gotunnel_core.testing.runner import Gotunnel, free_port, pid_gone, stop_pid, wait_for


def engine_program(engine: str) -> str | None:
    """The program of an installed external engine, found as the engine finds it (None: not here)."""
    from gotunnel_core.engine import collect_engines
    from gotunnel_core.plugins import make_plugin_manager

    spec = collect_engines(make_plugin_manager().pm).get(engine)
    if spec is None:
        return None
    probe = spec.engine_class.probe({"engine": engine})
    return probe.path if probe.found else None


NGINX = engine_program("nginx")


def kill_daemon(g: Gotunnel) -> int:
    pid = g.daemon_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: pid_gone(pid),
             what="the daemon to die")
    return pid


def listening(port: int, address: str) -> bool:
    try:
        socket.create_connection((address, port), timeout=1).close()
        return True
    except OSError:
        return False


# ----- item 1: restore after a crash keeps the daemon's settings -------------------------------------

def test_restore_after_sigkill_keeps_ports_and_bind(gotunnel: Gotunnel, echo_backend: Any) -> None:
    backend = echo_backend()
    http_port, https_port = free_port(), free_port()
    flags = ["--http-port", str(http_port), "--https-port", str(https_port), "--bind", "127.0.0.1"]
    gotunnel(*flags, "start", "-d", "a", "-p", str(backend.port), check=True)
    saved = json.loads((gotunnel.state_dir / "tunnels.json").read_text())["daemon"]
    assert (saved["http_port"], saved["https_port"], saved["bind"]) == (http_port, https_port, "127.0.0.1")
    kill_daemon(gotunnel)
    # a plain `list` (its environment names other ports and 0.0.0.0) restores what was saved
    result = gotunnel("list", "--json", extra_env={"GOTUNNEL_BIND": "0.0.0.0"}, check=True)
    assert [t["name"] for t in json.loads(result.out)["tunnels"]] == ["a"]
    listen = gotunnel.json("status")["listen"]
    assert listen == {"bind": "127.0.0.1", "http_port": http_port, "https_port": https_port}
    assert http_get(http_port, "a.localhost")[0] == 200
    assert not listening(gotunnel.http_port, "127.0.0.1")  # nothing came up on the environment's ports
    for conns in psutil.Process(gotunnel.daemon_pid()).net_connections("tcp"):
        if conns.status == psutil.CONN_LISTEN and conns.laddr.port in (http_port, https_port):
            assert conns.laddr.ip == "127.0.0.1"  # never widened to 0.0.0.0
    # a command whose settings contradict the saved ones says so, naming both
    kill_daemon(gotunnel)
    conflict = gotunnel("start", "-d", "b", "-p", str(backend.port))
    assert conflict.code == 2
    assert f"http_port {http_port}" in conflict.err and str(gotunnel.http_port) in conflict.err
    assert "GOTUNNEL_HTTP_PORT" in conflict.err and "stop --all" in conflict.err
    gotunnel(*flags, "start", "-d", "b", "-p", str(backend.port), check=True)  # matching flags: restored and added
    assert sorted(t["name"] for t in gotunnel.json("list")["tunnels"]) == ["a", "b"]


EXTERNAL = [pytest.param(engine, engine_program(engine),
                         marks=pytest.mark.skipif(not engine_program(engine), reason=f"{engine} is not installed"))
            for engine in ("nginx", "caddy", "envoy")]


@pytest.mark.slow
@pytest.mark.parametrize("engine, binary", EXTERNAL)
def test_plain_list_after_sigkill_restores_the_saved_engine_and_reaps_its_orphan(
        gotunnel: Gotunnel, echo_backend: Any, engine: str, binary: str | None) -> None:
    backend = echo_backend()
    use_engine(gotunnel, engine, binary)
    gotunnel("start", "-d", "one", "-p", str(backend.port), check=True)
    orphan = supervisor_record(gotunnel, engine)["pid"]
    kill_daemon(gotunnel)
    gotunnel.seen_pids.append(orphan)  # type: ignore[attr-defined]
    assert serves(gotunnel, "one")  # the engine outlived its daemon and still serves
    del gotunnel.env["GOTUNNEL_ENGINE"]  # a plain command: the default engine is builtin
    result = gotunnel("list", "--json")
    assert result.code == 0, result.err  # not "another program uses the port"
    assert [t["name"] for t in json.loads(result.out)["tunnels"]] == ["one"]
    assert gotunnel.json("status")["engine"]["name"] == engine
    wait_for(lambda: not _alive(orphan), timeout=20, what="the orphaned engine to be stopped")
    assert supervisor_record(gotunnel, engine)["pid"] != orphan and serves(gotunnel, "one")


@pytest.mark.slow
def test_stop_all_after_sigkill_stops_the_orphaned_engine(gotunnel: Gotunnel, echo_backend: Any) -> None:
    if not NGINX:
        pytest.skip("nginx is not installed")
    use_engine(gotunnel, "nginx", NGINX)
    gotunnel("start", "-d", "one", "-p", str(echo_backend().port), check=True)
    orphan = supervisor_record(gotunnel, "nginx")["pid"]
    kill_daemon(gotunnel)
    gotunnel.seen_pids.append(orphan)  # type: ignore[attr-defined]
    del gotunnel.env["GOTUNNEL_ENGINE"]
    gotunnel("stop", "--all", check=True)
    wait_for(lambda: not _alive(orphan), timeout=20, what="the orphaned nginx to be stopped")
    assert not serves(gotunnel, "one") and gotunnel.json("status")["running"] is False
    assert json.loads((gotunnel.state_dir / "tunnels.json").read_text())["tunnels"] == []


def _alive(pid: int) -> bool:
    return not pid_gone(pid)


def test_running_daemon_conflicts_exit_2_naming_both_values(gotunnel: Gotunnel, echo_backend: Any) -> None:
    backend = echo_backend()
    gotunnel("start", "-d", "a", "-p", str(backend.port), check=True)
    other = free_port()
    result = gotunnel("--http-port", str(other), "start", "-d", "b", "-p", str(backend.port))
    assert result.code == 2 and f"uses http_port {gotunnel.http_port}" in result.err and str(other) in result.err
    result = gotunnel("--engine", "nginx", "start", "-d", "b", "-p", str(backend.port))
    if NGINX:
        assert result.code == 2 and "engine 'builtin'" in result.err and "'nginx'" in result.err


def test_stop_all_racing_parallel_starts(gotunnel: Gotunnel, echo_backend: Any) -> None:
    backend = echo_backend()
    gotunnel("start", "-d", "first", "-p", str(backend.port), check=True)
    names = [f"r{i}" for i in range(6)]
    with ThreadPoolExecutor(8) as pool:
        starts = [pool.submit(gotunnel, "start", "-d", n, "-p", str(backend.port)) for n in names[:3]]
        stop = pool.submit(gotunnel, "stop", "--all")
        starts += [pool.submit(gotunnel, "start", "-d", n, "-p", str(backend.port)) for n in names[3:]]
        results = [f.result() for f in starts] + [stop.result()]
    for result in results:
        assert result.code == 0, result.err
        assert "None" not in result.err
    listed = {t["name"] for t in gotunnel.json("list")["tunnels"]}
    saved = {t["name"] for t in json.loads((gotunnel.state_dir / "tunnels.json").read_text())["tunnels"]}
    assert listed == saved and listed <= set(names)
    for name in listed:
        assert serves(gotunnel, name)


# ----- item 3: start-up failures say why ---------------------------------------------------------------

def test_startup_failure_prints_the_cause_and_the_hint(gotunnel: Gotunnel, echo_backend: Any) -> None:
    backend = echo_backend()
    with socket.create_server(("127.0.0.1", gotunnel.http_port)):
        result = gotunnel("start", "-d", "a", "-p", str(backend.port))
    lines = result.err.strip().splitlines()
    assert result.code == 1 and lines[0].startswith("error: the daemon failed to start: builtin engine cannot listen")
    assert "already in use" in lines[0].lower() and lines[1].startswith("hint: another program uses the port")
    first_run = (gotunnel.state_dir / "daemon.out").read_text()
    gotunnel("start", "-d", "a", "-p", str(backend.port), check=True)  # each run's output starts fresh
    assert (gotunnel.state_dir / "daemon.out").read_text() != first_run
    assert "cannot listen" not in (gotunnel.state_dir / "daemon.out").read_text()
    gotunnel.stop_daemon()
    (gotunnel.state_dir / "tunnels.json").write_text("{not json")
    result = gotunnel("start", "-d", "a", "-p", str(backend.port))
    assert result.code == 1 and "state file" in result.err and "unreadable" in result.err
    assert "hint: move it away" in result.err


def test_wrong_engine_program_is_reported_with_its_cause(gotunnel: Gotunnel, echo_backend: Any, tmp_path: Path) -> None:
    fake = tmp_path / "nginx"
    fake.write_text("#!/bin/sh\necho 'nginx version: nginx/1.0'\necho 'this is not nginx' >&2\nexit 3\n")
    fake.chmod(0o755)
    use_engine(gotunnel, "nginx", str(fake))
    result = gotunnel("start", "-d", "a", "-p", str(echo_backend().port))
    assert result.code in (1, 2) and "this is not nginx" in result.err.splitlines()[0], result.err


# ----- item 5: a project's config file runs no program until allowed ------------------------------------

def _evil_project(tmp_path: Path, key: str) -> tuple[Path, Path]:
    project = tmp_path / "cloned-repo"
    project.mkdir()
    marker = tmp_path / "evil-ran"
    evil = project / "evil.sh"
    evil.write_text(f"#!/bin/sh\ntouch {marker}\necho 'nginx version: nginx/6.6.6' >&2\nexit 0\n")
    evil.chmod(0o755)
    body = {"engine_bin": 'engine = "nginx"\nengine_bin = "./evil.sh"\n',
            "engines.nginx.bin": 'engine = "nginx"\n[engines.nginx]\nbin = "./evil.sh"\n',
            "template_dir": 'engine = "nginx"\ntemplate_dir = "./templates"\n'}[key]
    (project / "gotunnel.toml").write_text(body)
    return project, marker


@pytest.mark.parametrize("key", ["engine_bin", "engines.nginx.bin"])
def test_project_config_never_runs_its_program_until_allowed(gotunnel: Gotunnel, tmp_path: Path, key: str) -> None:
    project, marker = _evil_project(tmp_path, key)
    gotunnel.env.pop("GOTUNNEL_ENGINE", None)
    for command in (["engines"], ["doctor"], ["config", "show"], ["list"], ["status"], ["engines", "--json"]):
        result = gotunnel(*command, cwd=project)
        assert result.code == 0, (command, result.err)
        assert not marker.exists(), f"`gotunnel {' '.join(command)}` ran ./evil.sh"
    assert key in gotunnel("engines", cwd=project).err  # says what it left out
    refused = gotunnel("start", "-d", "a", "-p", "3000", cwd=project)
    assert refused.code == 2 and key in refused.err and "config allow" in refused.err
    assert not marker.exists()
    allowed = gotunnel("config", "allow", cwd=project)
    assert allowed.code == 0 and "allowed" in allowed.out
    gotunnel("--engine", "nginx", "start", "-d", "a", "-p", "3000", cwd=project)  # honoured now (and fails: not nginx)
    assert marker.exists()
    marker.unlink()
    (project / "gotunnel.toml").write_text((project / "gotunnel.toml").read_text() + "# edited\n")
    again = gotunnel("start", "-d", "a", "-p", "3000", cwd=project)  # any edit needs a new allow
    assert again.code == 2 and "config allow" in again.err and not marker.exists()
    assert not gotunnel("engines", cwd=project).code and not marker.exists()
    record = json.loads((Path(gotunnel.env["XDG_CONFIG_HOME"]) / "gotunnel" / "allowed-configs.json").read_text())
    assert str((project / "gotunnel.toml").resolve()) in record["allowed"]


def test_template_dir_from_a_project_needs_allowing_for_render(gotunnel: Gotunnel, tmp_path: Path) -> None:
    project, _ = _evil_project(tmp_path, "template_dir")
    (project / "gotunnel.toml").write_text((project / "gotunnel.toml").read_text().replace('engine = "nginx"\n', "")
                                           + '[[tunnels]]\nname = "web"\nbackends = ["http://127.0.0.1:3000"]\n')
    result = gotunnel("render", "--engine", "nginx", cwd=project)
    assert result.code == 2 and "template_dir" in result.err and "config allow" in result.err


# ----- item 6: accepted garbage gets one line and exit 2 -----------------------------------------------

BAD_CONFIGS = [
    ("redirect without https", '[[tunnels]]\nname = "a"\nbackends = ["http://127.0.0.1:3000"]\nhttps = false\n'
                               'redirect_https = true\n', "redirect_https"),
    ("same port", 'http_port = 9000\nhttps_port = 9000\n' + '[[tunnels]]\nname = "a"\nbackends = ["3000"]\n', "both 9000"),
    ("content-length rule", '[[tunnels]]\nname = "a"\nbackends = ["3000"]\nheaders.request.add = { "Content-Length" = "20" }\n',
     "Content-Length"),
    ("host rule", '[[tunnels]]\nname = "a"\nbackends = ["3000"]\nheaders.request.remove = ["Host"]\n', "Host"),
    ("transfer-encoding rule", '[[tunnels]]\nname = "a"\nbackends = ["3000"]\n'
                               'headers.response.add = { "Transfer-Encoding" = "chunked" }\n', "Transfer-Encoding"),
    ("bad punycode", '[[tunnels]]\nname = "xn--zz"\nbackends = ["3000"]\n', "xn--zz"),
    ("string for a list", '[[tunnels]]\nname = "a"\nbackends = "http://127.0.0.1:3000"\n', "must be a list"),
    ("string for interfaces", 'mdns_interface = "eth0"\n[[tunnels]]\nname = "a"\nbackends = ["3000"]\n', "mdns_interface"),
    ("log level", 'log_level = "shout"\n[[tunnels]]\nname = "a"\nbackends = ["3000"]\n', "shout"),
    ("renew lead", 'cert_renew_days = 200\n[[tunnels]]\nname = "a"\nbackends = ["3000"]\n',
     "cert_renew_days = 200 is not less than cert_validity_days = 90"),
]


@pytest.mark.parametrize("command", ["start", "render", "validate"])
@pytest.mark.parametrize("label, text, named", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_values_exit_2_in_one_line(gotunnel: Gotunnel, tmp_path: Path, command: str, label: str,
                                               text: str, named: str) -> None:
    config = tmp_path / "gotunnel.toml"
    config.write_text(text)
    if "http_port" in text:  # the file's ports, not the fixture's environment
        for key in ("GOTUNNEL_HTTP_PORT", "GOTUNNEL_HTTPS_PORT"):
            gotunnel.env.pop(key)
    result = gotunnel("--config", str(config), command)
    lines = result.err.strip().splitlines()
    assert result.code == 2, (label, result)
    assert lines[0].startswith("error: ") and named in lines[0], (label, result.err)
    assert len(lines) <= 2 and "Traceback" not in result.err and "internal error" not in result.err
    assert not (gotunnel.state_dir / "tunnels.json").exists()


def test_unusable_config_files_exit_2_in_one_line(gotunnel: Gotunnel, tmp_path: Path) -> None:
    latin = tmp_path / "latin1.toml"
    latin.write_bytes(b'# caf\xe9\nhttp_port = 8080\n')
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    a_dir = tmp_path / "a-dir"
    a_dir.mkdir()
    cases = [(latin, "not UTF-8"), (deep, "nests"), (a_dir, "is a directory"), (Path("/dev/null"), "not a regular file")]
    for path, named in cases:
        for command in (["start", "-d", "a", "-p", "3000"], ["render"], ["validate"]):
            result = gotunnel("--config", str(path), *command)
            assert result.code == 2, (path, command, result)
            assert result.err.startswith("error: ") and named in result.err.splitlines()[0], (path, result.err)
            assert "internal error" not in result.err and "does not exist" not in result.err
    (tmp_path / "gotunnel.toml").mkdir()  # ./gotunnel.toml that is a directory
    result = gotunnel("start", "-d", "a", "-p", "3000", cwd=tmp_path)
    assert result.code == 2 and "is a directory" in result.err


def test_bad_flags_exit_2(gotunnel: Gotunnel) -> None:
    for args, named in ((["--http-port", "9100", "--https-port", "9100", "start", "-d", "a", "-p", "1"], "both 9100"),
                        (["start", "-d", "a", "-p", "3000", "--redirect-https", "--no-https"], "redirect_https"),
                        (["start", "-d", "a", "-p", "3000", "--redirect-code", "308"], "redirect_code"),
                        (["start", "-d", "a", "-p", "3000", "--upstream-timeout", "soon"], "soon"),
                        (["--log-level", "shout", "start", "-d", "a", "-p", "3000"], "shout")):
        result = gotunnel(*args)
        assert result.code == 2 and named in result.err.splitlines()[0], (args, result.err)
        assert not gotunnel.state_dir.exists()


# ----- item 11: the smaller ones ------------------------------------------------------------------------

def test_foreground_prints_the_urls(gotunnel: Gotunnel, echo_backend: Any) -> None:
    backend = echo_backend()
    proc = subprocess.Popen([sys.executable, "-m", "gotunnel_core", "start", "--foreground", "-d", "fg", "-p",
                             str(backend.port)], env={**os.environ, **gotunnel.env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("fg -> http://127.0.0.1:")
        urls = [proc.stdout.readline().strip() for _ in range(2)]  # type: ignore[union-attr]
        assert urls == [f"http://fg.localhost:{gotunnel.http_port}", f"https://fg.localhost:{gotunnel.https_port}"]
        assert http_get(gotunnel.http_port, "fg.localhost")[0] == 200  # printed once it serves
    finally:
        stop_pid(proc.pid)
        proc.wait(10)


def test_certificates_of_removed_tunnels_are_deleted_after_the_grace_period(gotunnel: Gotunnel,
                                                                            echo_backend: Any) -> None:
    backend = echo_backend()
    certs = gotunnel.state_dir / "certs"
    gotunnel("start", "-d", "kept", "-p", str(backend.port), check=True)
    gotunnel("stop", "kept", check=True)
    assert (certs / "kept.pem").exists() and (certs / "kept_key.pem").exists()  # within the grace period (7 days)
    gotunnel("stop", "--all", check=True)
    gotunnel.env["GOTUNNEL_CERT_KEEP_DAYS"] = "0"
    gotunnel("start", "-d", "gone", "-p", str(backend.port), check=True)
    assert not (certs / "kept.pem").exists()  # pruned when the daemon started
    gotunnel("stop", "gone", check=True)
    assert not (certs / "gone.pem").exists() and not (certs / "gone_key.pem").exists()
    assert (certs / "localhost.pem").exists() or any(certs.glob("*.pem"))  # the default certificate stays


def test_cert_renew_of_an_unknown_name_fails(gotunnel: Gotunnel, echo_backend: Any) -> None:
    result = gotunnel("cert", "renew", "nosuch")
    assert result.code == 2 and "nosuch" in result.err
    gotunnel("start", "-d", "real", "-p", str(echo_backend().port), check=True)
    result = gotunnel("cert", "renew", "nosuch")
    assert result.code == 2 and "nosuch" in result.err and "real" in result.err
    assert gotunnel("cert", "renew", "real", check=True).out.strip() == "renewed real"


def test_broken_project_config_does_not_block_list_and_stop(gotunnel: Gotunnel, echo_backend: Any,
                                                            tmp_path: Path) -> None:
    gotunnel("start", "-d", "a", "-p", str(echo_backend().port), check=True)
    project = tmp_path / "proj"
    project.mkdir()
    (project / "gotunnel.toml").write_text("this is = = not toml\n")
    listed = gotunnel("list", cwd=project)
    assert listed.code == 0 and listed.out.startswith("a ") and "warning: ignoring the config file" in listed.err
    assert gotunnel("status", cwd=project).code == 0
    stopped = gotunnel("stop", "a", cwd=project)
    assert stopped.code == 0 and "stopped a" in stopped.out
    assert gotunnel("stop", "--all", cwd=project).code == 0
    assert gotunnel("start", "-d", "b", "-p", "3000", cwd=project).code == 2  # acting on it still refuses it


def test_local_urls_are_printed_with_the_hosts_file_when_mdns_is_off(gotunnel: Gotunnel, echo_backend: Any,
                                                                     tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    gotunnel.env.update({"GOTUNNEL_HOSTS": "1", "GOTUNNEL_HOSTS_FILE": str(hosts)})
    out = gotunnel("start", "-d", "h", "-p", str(echo_backend().port), check=True).out
    assert f"http://h.local:{gotunnel.http_port}" in out
    status, _, body = http_get(gotunnel.http_port, "nobody.localhost")
    assert status == 404 and b"h.local:" in body  # the 404 page links it too


# ----- item 12 and the conveniences users expect ------------------------------------------------------------

def test_a_name_that_runs_with_another_backend_is_not_taken(gotunnel: Gotunnel, echo_backend: Any) -> None:
    mine, theirs = echo_backend("mine"), echo_backend("theirs")
    gotunnel("start", "-d", "app", "-p", str(mine.port), check=True)
    stolen = gotunnel("start", "-d", "app", "-p", str(theirs.port))
    assert stolen.code == 2 and f"http://127.0.0.1:{mine.port}" in stolen.err and "--force" in stolen.err
    assert json.loads(http_get(gotunnel.http_port, "app.localhost")[2])["backend"] == "mine"
    gotunnel("start", "-d", "app", "-p", str(mine.port), "--redirect-https", check=True)  # same backend: an update
    gotunnel("start", "-d", "app", "-p", str(theirs.port), "--force", check=True)
    assert json.loads(http_get(gotunnel.https_port, "app.localhost", https_ca=gotunnel("cert", "ca", "--path",
                                                                                      check=True).out.strip())[2])["backend"] == "theirs"


def test_start_warns_when_nothing_listens_yet_and_serves_once_it_does(gotunnel: Gotunnel) -> None:
    port = free_port()
    result = gotunnel("start", "-d", "later", "-p", str(port), check=True)
    assert f"warning: nothing listens on http://127.0.0.1:{port} yet" in result.err
    assert http_get(gotunnel.http_port, "later.localhost")[0] == 502
    from http.server import ThreadingHTTPServer

    from gotunnel_core.testing.backends import JsonEchoHandler

    server = ThreadingHTTPServer(("127.0.0.1", port), JsonEchoHandler)
    server.name, server.hits = "late", []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        wait_for(lambda: http_get(gotunnel.http_port, "later.localhost")[0] == 200, timeout=20,
                 what="the tunnel to reach the backend once it is up")
        assert "warning" not in gotunnel("start", "-d", "later", "-p", str(port), check=True).err
    finally:
        server.shutdown()
        server.server_close()


def test_plain_list_and_status_show_backends_that_do_not_answer(gotunnel: Gotunnel, echo_backend: Any) -> None:
    up, down = echo_backend(), free_port()
    gotunnel("start", "-d", "up", "-p", str(up.port), check=True)
    gotunnel("start", "-d", "down", "-p", str(down), check=True)
    listed = {line.split()[0]: line for line in gotunnel("list", check=True).out.splitlines()}
    assert f"127.0.0.1:{down} (down: Connection refused)" in listed["down"]
    assert "(down" not in listed["up"]
    status = gotunnel("status", check=True).out
    assert f"127.0.0.1:{down} (down: Connection refused)" in status
    backends = {t["name"]: t["backends"][0] for t in gotunnel.json("list")["tunnels"]}
    assert backends["up"]["problem"] is None and backends["down"]["problem"].startswith("down")


def test_shorthand_backends(gotunnel: Gotunnel, echo_backend: Any) -> None:
    backend = echo_backend()
    gotunnel("start", "-d", "port", "--backend", str(backend.port), check=True)
    gotunnel("start", "-d", "hostport", "--backend", f"localhost:{backend.port}", check=True)
    urls = {t["name"]: t["backends"][0]["url"] for t in gotunnel.json("list")["tunnels"]}
    assert urls == {"port": f"http://127.0.0.1:{backend.port}", "hostport": f"http://localhost:{backend.port}"}
    assert serves(gotunnel, "port") and serves(gotunnel, "hostport")
