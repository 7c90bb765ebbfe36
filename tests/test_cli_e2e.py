"""End to end through the real CLI, daemon and builtin engine: real sockets, real backends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from gotunnel_core.testing.daemon import http_get
from gotunnel_core.testing import Gotunnel, pid_gone, wait_for


def header(echo: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in echo["headers"] if k.lower() == name.lower()]


def test_two_tunnels_over_http_and_https(gotunnel: Gotunnel, echo_backend: Any) -> None:
    one, two = echo_backend("one"), echo_backend("two")
    started = gotunnel("start", "-d", "one", "-p", str(one.port), check=True)
    assert f"http://one.localhost:{gotunnel.http_port}" in started.out
    assert f"https://one.localhost:{gotunnel.https_port}" in started.out
    assert ".local:" not in started.out  # mDNS is off
    gotunnel("start", "-d", "two", "--backend", two.url, check=True)
    ca = gotunnel("cert", "ca", "--path", check=True).out.strip()
    assert Path(ca).is_file()

    for name, backend in (("one", one), ("two", two)):
        status, _, body = http_get(gotunnel.http_port, f"{name}.localhost:{gotunnel.http_port}", "/hello?x=1")
        echo = json.loads(body)
        assert status == 200 and echo["backend"] == backend.name and echo["path"] == "/hello?x=1"
        assert header(echo, "Host") == [f"{name}.localhost:{gotunnel.http_port}"]
        assert header(echo, "X-Forwarded-For") == ["127.0.0.1"]
        assert header(echo, "X-Forwarded-Proto") == ["http"]
        assert header(echo, "X-Forwarded-Host") == [f"{name}.localhost:{gotunnel.http_port}"]

        status, _, body = http_get(gotunnel.https_port, f"{name}.local", "/secure", https_ca=ca)
        echo = json.loads(body)
        assert status == 200 and echo["backend"] == backend.name
        assert header(echo, "X-Forwarded-Proto") == ["https"]
        assert header(echo, "Host") == [f"{name}.local"]

    status, _, body = http_get(gotunnel.http_port, "nobody.localhost")
    assert status == 404 and b"one.localhost" in body and b"two.localhost" in body

    curl = subprocess.run(
        ["curl", "-sS", "--cacert", ca, "--resolve", f"one.localhost:{gotunnel.https_port}:127.0.0.1",
         f"https://one.localhost:{gotunnel.https_port}/via-curl"],
        capture_output=True, text=True, timeout=30,
    )
    assert curl.returncode == 0, curl.stderr
    assert json.loads(curl.stdout)["path"] == "/via-curl"


def test_unreachable_backend_gets_502_naming_it(gotunnel: Gotunnel) -> None:
    from gotunnel_core.testing import free_port

    dead = free_port()
    gotunnel("start", "-d", "dead", "-p", str(dead), check=True)
    status, _, body = http_get(gotunnel.http_port, "dead.localhost")
    assert status == 502
    assert f"127.0.0.1:{dead}".encode() in body and b"dead" in body


INVALID = [
    (["start", "-d", "a;b", "-p", "3000"], "a;b"),
    (["start", "-d", "../x", "-p", "3000"], "../x"),
    (["start", "-d", "a\nb", "-p", "3000"], "a\\nb"),
    (["start", "-d", "a b", "-p", "3000"], "a b"),
    (["start", "-d", "a..b", "-p", "3000"], "a..b"),
    (["start", "-d", "a" * 64, "-p", "3000"], "a" * 20),
    (["start", "-d", "ok", "-p", "0"], "0"),
    (["start", "-d", "ok", "-p", "65536"], "65536"),
    (["start", "-d", "ok", "--backend", "ftp://127.0.0.1:21"], "ftp://127.0.0.1:21"),
    (["start", "-d", "ok", "--backend", "http://127.0.0.1:3000,weight=0"], "0"),
    (["start", "-d", "ok", "--backend", "http://127.0.0.1:3000/a b"], "/a b"),
    (["start", "-d", "ok", "-p", "3000", "--health-path", "no-slash"], "no-slash"),
    (["--http-port", "http", "start", "-d", "ok", "-p", "3000"], "http"),
    (["--bind", "not-an-ip", "start", "-d", "ok", "-p", "3000"], "not-an-ip"),
    (["--engine", "x", "start", "-d", "ok", "-p", "3000"], "unknown engine 'x'; installed: builtin"),
]


@pytest.mark.parametrize("args, named", INVALID, ids=[" ".join(a)[:40] for a, _ in INVALID])
def test_invalid_input_exits_2_and_writes_nothing(gotunnel: Gotunnel, args: list[str], named: str) -> None:
    result = gotunnel(*args)
    assert result.code == 2, result
    lines = result.err.strip().splitlines()
    assert lines[0].startswith("error: ") and named in lines[0], result.err
    assert len(lines) <= 2 and "Traceback" not in result.err
    assert not gotunnel.state_dir.exists()


def test_unknown_engine_message_suggests_the_package(gotunnel: Gotunnel) -> None:
    result = gotunnel("--engine", "x", "start", "-d", "ok", "-p", "3000")
    assert "(is gotunnel-x installed?)" in result.err


def test_parallel_starts_all_land(gotunnel: Gotunnel, echo_backend: Any) -> None:
    backend = echo_backend()
    names = [f"app{i}" for i in range(10)]
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda n: gotunnel("start", "-d", n, "-p", str(backend.port)), names))
    assert all(r.code == 0 for r in results), [r.err for r in results if r.code]
    listed = gotunnel.json("list")["tunnels"]
    assert sorted(t["name"] for t in listed) == names
    saved = json.loads((gotunnel.state_dir / "tunnels.json").read_text())
    assert sorted(t["name"] for t in saved["tunnels"]) == names
    daemons = {gotunnel.json("status")["pid"]}
    assert len(daemons) == 1
    for name in names:
        assert http_get(gotunnel.http_port, f"{name}.localhost")[0] == 200


def test_daemon_sigkill_recovery(gotunnel: Gotunnel, echo_backend: Any) -> None:
    backend = echo_backend()
    gotunnel("start", "-d", "survivor", "-p", str(backend.port), check=True)
    first = gotunnel.json("status")["pid"]
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: pid_gone(first),
             what="killed daemon to vanish")
    assert (gotunnel.state_dir / "daemon.sock").exists()  # stale socket left behind

    listed = gotunnel.json("list")["tunnels"]
    assert [t["name"] for t in listed] == ["survivor"]
    second = gotunnel.json("status")["pid"]
    assert second != first
    assert http_get(gotunnel.http_port, "survivor.localhost")[0] == 200


def test_stop_list_status_round_trip(gotunnel: Gotunnel, echo_backend: Any) -> None:
    backend = echo_backend()
    assert gotunnel.json("status")["running"] is False
    gotunnel("start", "-d", "a", "-p", str(backend.port), check=True)
    gotunnel("start", "-d", "b", "-p", str(backend.port), "--no-https", check=True)
    status = gotunnel.json("status")
    assert status["running"] and status["engine"]["name"] == "builtin" and status["engine"]["running"]
    assert status["listen"]["http_port"] == gotunnel.http_port
    assert {c["name"] for c in status["certificates"]} >= {"a"}
    assert all(c["not_after"] for c in status["certificates"])
    listed = {t["name"]: t for t in gotunnel.json("list")["tunnels"]}
    assert set(listed) == {"a", "b"}
    assert not any(u.startswith("https") for u in listed["b"]["urls"])
    ca = gotunnel("cert", "ca", "--path", check=True).out.strip()
    assert http_get(gotunnel.https_port, "a.localhost", https_ca=ca)[0] == 200
    assert http_get(gotunnel.https_port, "b.localhost", https_ca=ca)[0] == 404
    assert http_get(gotunnel.http_port, "b.localhost")[0] == 200

    result = gotunnel("stop", "a", check=True)
    assert "stopped a" in result.out
    assert [t["name"] for t in gotunnel.json("list")["tunnels"]] == ["b"]
    assert http_get(gotunnel.http_port, "a.localhost")[0] == 404

    missing = gotunnel("stop", "zzz")
    assert missing.code == 1 and "zzz" in missing.err

    pid = gotunnel.json("status")["pid"]
    result = gotunnel("stop", "--all", check=True)
    assert f"pid {pid}" in result.out
    assert pid_gone(pid)
    assert gotunnel.json("status")["running"] is False
    assert json.loads((gotunnel.state_dir / "tunnels.json").read_text())["tunnels"] == []


def test_state_files_are_private(gotunnel: Gotunnel, echo_backend: Any) -> None:
    backend = echo_backend()
    gotunnel("start", "-d", "priv", "-p", str(backend.port), check=True)
    mode = lambda p: (gotunnel.state_dir / p).stat().st_mode & 0o777  # noqa: E731
    assert mode(".") == 0o700
    assert mode("daemon.sock") == 0o600
    assert mode("tunnels.json") == 0o600
    keys = list(gotunnel.state_dir.rglob("*key*.pem"))
    assert keys and all(k.stat().st_mode & 0o777 == 0o600 for k in keys)


def test_config_file_tunnels_start_and_render(gotunnel: Gotunnel, echo_backend: Any, tmp_path: Path) -> None:
    backend = echo_backend()
    config = tmp_path / "gotunnel.toml"
    config.write_text(
        f'[[tunnels]]\nname = "web"\nbackends = ["{backend.url}"]\n'
        f'[[tunnels]]\nname = "api"\nbackends = [{{url = "{backend.url}", weight = 2}}]\nredirect_https = true\n'
    )
    rendered = gotunnel("--config", str(config), "render")
    assert rendered.code == 0, rendered.err
    table = json.loads(rendered.out)
    assert [t["name"] for t in table["tunnels"]] == ["api", "web"]
    assert gotunnel("--config", str(config), "validate", check=True).out.startswith("ok")
    gotunnel("--config", str(config), "start", check=True)
    assert sorted(t["name"] for t in gotunnel.json("list")["tunnels"]) == ["api", "web"]
    status, headers, _ = http_get(gotunnel.http_port, "api.localhost", "/x")
    assert status in (301, 302, 307, 308) and headers["location"].startswith("https://api.localhost")


def test_config_show_reports_sources(gotunnel: Gotunnel) -> None:
    shown = gotunnel.json("--https-port", "9443", "config", "show")
    settings = shown["settings"]
    assert settings["https_port"] == {"value": 9443, "source": "flag", "env": "GOTUNNEL_HTTPS_PORT"}
    assert settings["http_port"]["source"] == "env"
    assert settings["engine"]["source"] == "default"


def test_http2_flag_is_a_setting_and_a_running_daemon_must_match_it(gotunnel: Gotunnel, echo_backend: Any) -> None:
    shown = gotunnel.json("--no-http2", "config", "show")["settings"]["http2"]
    assert shown == {"value": False, "source": "flag", "env": "GOTUNNEL_HTTP2"}
    gotunnel("start", "-d", "a", "-p", str(echo_backend().port), check=True)  # a daemon with HTTP/2 (the default)
    result = gotunnel("--no-http2", "start", "-d", "b", "-p", "3000")
    assert result.code == 2 and "http2" in result.err  # not silently served with HTTP/2 on
    assert [t["name"] for t in gotunnel.json("list")["tunnels"]] == ["a"]


def test_help_and_list_stay_light(gotunnel: Gotunnel) -> None:
    probe = (
        "import sys\n"
        "from gotunnel_core.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('jinja2', 'cryptography', 'zeroconf', 'uvloop', 'gotunnel_builtin_proxy') if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    env = {**os.environ, **gotunnel.env}
    for args in (["--help"], ["list"]):
        out = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, env=env, timeout=30).stdout
        assert "HEAVY=\n" in out, (args, out)


def test_errors_have_no_traceback_unless_debug(gotunnel: Gotunnel) -> None:
    plain = gotunnel("start", "-d", "a;b", "-p", "1")
    assert "Traceback" not in plain.err
    debug = gotunnel("--debug", "start", "-d", "a;b", "-p", "1")
    assert debug.code == 2 and "Traceback" in debug.err


def test_hosts_block_follows_tunnels(gotunnel: Gotunnel, echo_backend: Any, tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    original = b"127.0.0.1\tlocalhost\r\n# mine\n10.0.0.1 app.local"
    hosts.write_bytes(original)
    gotunnel.env.update({"GOTUNNEL_HOSTS": "1", "GOTUNNEL_HOSTS_FILE": str(hosts)})
    backend = echo_backend()
    gotunnel("start", "-d", "app", "-p", str(backend.port), check=True)
    gotunnel("start", "-d", "myapp", "-p", str(backend.port), check=True)
    assert gotunnel.json("hosts", "list")["names"] == ["app.local", "myapp.local"]
    assert b"127.0.0.1\tmyapp.local" in hosts.read_bytes() and b"::1\tapp.local" in hosts.read_bytes()
    gotunnel("stop", "app", check=True)
    assert gotunnel.json("hosts", "list")["names"] == ["myapp.local"]
    gotunnel("stop", "--all", check=True)
    assert hosts.read_bytes() == original


def test_doctor_reports_resolution_interfaces_and_engine(gotunnel: Gotunnel) -> None:
    report = gotunnel.json("doctor")
    assert report["local_resolution"]["verdict"] in ("ok", "broken", "missing")
    assert report["engine"] == {"name": "builtin", "found": True, "path": None, "version": None, "hint": None}
    assert report["mdns"]["enabled"] is False


def test_logs_show_the_daemon_log(gotunnel: Gotunnel, echo_backend: Any) -> None:
    backend = echo_backend()
    gotunnel("start", "-d", "logged", "-p", str(backend.port), check=True)
    out = gotunnel("logs", check=True).out
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert any(e.get("event") == "daemon ready" for e in events)


def test_foreground_runs_until_ctrl_c_and_cleans_up(gotunnel: Gotunnel, echo_backend: Any) -> None:
    backend = echo_backend()
    proc = subprocess.Popen([sys.executable, "-m", "gotunnel_core", "start", "--foreground", "-d", "fg", "-p",
                             str(backend.port)], env={**os.environ, **gotunnel.env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        def serving() -> bool:
            try:
                return http_get(gotunnel.http_port, "fg.localhost")[0] == 200
            except OSError:
                return False

        wait_for(serving, timeout=30, what="the foreground tunnel to serve")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    with pytest.raises(OSError):
        http_get(gotunnel.http_port, "fg.localhost")
    assert json.loads((gotunnel.state_dir / "tunnels.json").read_text())["tunnels"] == []


def test_bad_config_tunnel_names_file_and_table(gotunnel: Gotunnel, tmp_path: Path) -> None:
    config = tmp_path / "gotunnel.toml"
    config.write_text('[[tunnels]]\nname = "ok"\nbackends = ["http://127.0.0.1:1"]\n'
                      '[[tunnels]]\nname = "bad name"\nbackends = ["http://127.0.0.1:1"]\n')
    result = gotunnel("--config", str(config), "start")
    assert result.code == 2
    assert str(config) in result.err and "#2" in result.err and "'bad name'" in result.err
    assert not gotunnel.state_dir.exists()
