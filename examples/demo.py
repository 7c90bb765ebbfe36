"""The README's first command: a demo backend exposed through a gotunnel tunnel on the builtin engine.

Starts a tiny HTTP backend, runs `gotunnel start -d demo`, fetches the page through the tunnel
over HTTP and HTTPS (trusting gotunnel's CA), prints the URLs, then stops everything unless
DEMO_HOLD=1 keeps it running until Ctrl-C. mDNS stays off: the demo never announces on the LAN.
"""

from __future__ import annotations

import http.server
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading


def free_port(preferred: int) -> int:
    """`preferred` if it is free on this machine, else any free port."""
    for candidate in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", candidate))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise RuntimeError("no free port")


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = f"hello from the demo backend; you asked for {self.path} on {self.headers['Host']}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def gotunnel(*args: str, env: dict[str, str]) -> str:
    proc = subprocess.run([sys.executable, "-m", "gotunnel_core", *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"gotunnel {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout


def fetch(host: str, port: int, ca: str | None) -> str:
    """GET / through the tunnel as a browser would: connect to 127.0.0.1, send the tunnel's name
    as Host and (over HTTPS) as SNI, and verify the certificate against gotunnel's CA only."""
    sock: socket.socket = socket.create_connection(("127.0.0.1", port), timeout=10)
    if ca:
        sock = ssl.create_default_context(cafile=ca).wrap_socket(sock, server_hostname=host)
    with sock:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode()
    return f"{status}: {body.decode()}"


def main() -> None:
    state = os.environ.get("DEMO_STATE_DIR") or tempfile.mkdtemp(prefix="gotunnel-demo-")
    http_port, https_port = free_port(8080), free_port(8443)
    env = {**os.environ, "GOTUNNEL_STATE_DIR": state, "GOTUNNEL_MDNS": "0",
           "GOTUNNEL_HTTP_PORT": str(http_port), "GOTUNNEL_HTTPS_PORT": str(https_port)}
    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    backend_port = backend.server_address[1]
    print(f"demo backend: http://127.0.0.1:{backend_port}")
    try:
        print(gotunnel("start", "-d", "demo", "-p", str(backend_port), env=env), end="")
        ca = gotunnel("cert", "ca", "--path", env=env).strip()
        print(f"CA certificate: {ca}  (trust it with: curl --cacert {ca} ...)")
        print("through the tunnel over HTTP :", fetch("demo.localhost", http_port, None), end="")
        print("through the tunnel over HTTPS:", fetch("demo.localhost", https_port, ca), end="")
        if os.environ.get("DEMO_HOLD") == "1":
            print("open the URLs above; Ctrl-C stops the demo")
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        subprocess.run([sys.executable, "-m", "gotunnel_core", "stop", "--all"], env=env, capture_output=True)
        backend.shutdown()
    print("demo stopped")


if __name__ == "__main__":
    main()
