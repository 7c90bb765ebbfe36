"""A dev server for `gotunnel run` tests: serves on $PORT (or $APP_PORT, to play an app that ignores
PORT), answers JSON with what it got, and records the signals it receives.

Environment: PORT / APP_PORT; SIGNAL_LOG (a file: one line per signal, "<role> <SIGNAME>");
GRANDCHILD=1 starts a second process of this script in the same process group that only records
signals (role "grandchild"); a request for /exit/N makes it exit with status N.
"""

import json
import os
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROLE = sys.argv[1] if len(sys.argv) > 1 else "app"


def record(signum: int, _frame: object) -> None:
    with open(os.environ["SIGNAL_LOG"], "a") as log:
        log.write(f"{ROLE} {signal.Signals(signum).name}\n")
    os._exit(10 + signum)


if os.environ.get("SIGNAL_LOG"):
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, record)

if ROLE == "grandchild":
    with open(os.environ["SIGNAL_LOG"], "a") as log:
        log.write(f"grandchild ready {os.getpid()}\n")
    signal.pause()
    sys.exit(0)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = json.dumps({"port": self.server.server_address[1], "env_port": os.environ.get("PORT"),
                           "env_host": os.environ.get("HOST"), "host": self.headers.get("Host"),
                           "pid": os.getpid()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if self.path.startswith("/exit/"):
            self.wfile.flush()
            threading.Timer(0.2, os._exit, [int(self.path.split("/")[2])]).start()

    def log_message(self, *args: object) -> None:
        pass


if os.environ.get("GRANDCHILD"):
    subprocess.Popen([sys.executable, __file__, "grandchild"])
port = int(os.environ.get("APP_PORT") or os.environ["PORT"])
server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
print(f"port_app listening on {port}", flush=True)
server.serve_forever()
