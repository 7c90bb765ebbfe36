"""A real browser for tests: headless Chromium (Debian's `chromium`) driven over the DevTools protocol
(a websocket on a loopback port Chromium picks), with HOME in a temporary directory whose NSS
database trusts only the CA it is given.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from ..hostcheck import USER_AGENT as HOSTCHECK_USER_AGENT
from .backends import WsEchoServer

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
CERTUTIL = shutil.which("certutil")


def nss_trusting_only(home: Path, ca_pem: str) -> Path:
    """A new NSS database at HOME/.pki/nssdb (where Chromium on Linux looks) trusting `ca_pem` for TLS servers."""
    assert CERTUTIL is not None, "certutil is not installed (apt-get install libnss3-tools)"
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True)
    subprocess.run([CERTUTIL, "-N", "-d", f"sql:{db}", "--empty-password"], check=True, capture_output=True)
    subprocess.run([CERTUTIL, "-A", "-d", f"sql:{db}", "-n", "gotunnel test CA", "-t", "C,,", "-i", ca_pem],
                   check=True, capture_output=True)
    return db


class Chromium:
    """One headless Chromium; `call` sends a DevTools command and returns its result, `events`
    collects every event. The DevTools endpoint is a loopback port Chromium picks (port 0).
    `close` ends the browser's whole process group by its pid."""

    def __init__(self, home: Path, profile: Path, extra_args: tuple[str, ...] = ()) -> None:
        from websockets.sync.client import connect

        assert CHROMIUM is not None
        argv = [CHROMIUM, "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0", *extra_args, "about:blank"]
        if os.geteuid() == 0:
            argv.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        self.proc = subprocess.Popen(argv, env={**os.environ, "HOME": str(home)}, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        self.stderr: list[str] = []
        endpoint: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._drain_stderr, args=(endpoint,), daemon=True).start()
        try:
            url = endpoint.get(timeout=60)
        except queue.Empty:
            self.close()
            raise AssertionError("chromium did not open its DevTools endpoint: " + "".join(self.stderr)[-2000:]) from None
        self.ws = connect(url, max_size=None, open_timeout=30).__enter__()
        self._next_id = 0
        self._replies: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self.events: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _drain_stderr(self, endpoint: "queue.Queue[str]") -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace")
            self.stderr.append(line)
            if line.startswith("DevTools listening on "):
                endpoint.put(line.split(" on ", 1)[1].strip())

    def _read(self) -> None:
        try:
            for raw in self.ws:
                message = json.loads(raw)
                if "id" in message:
                    with self._lock:
                        waiter = self._replies.get(message["id"])
                    if waiter is not None:
                        waiter.put(message)
                else:
                    self.events.append(message)
        except Exception:  # noqa: BLE001 (the browser went away: callers time out with a message)
            return

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict[str, Any]:
        with self._lock:
            self._next_id += 1
            ident = self._next_id
            waiter: queue.Queue[dict[str, Any]] = queue.Queue()
            self._replies[ident] = waiter
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        try:
            reply = waiter.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"chromium did not answer {method} within {timeout} s") from None
        if "error" in reply:
            raise AssertionError(f"chromium refused {method}: {reply['error']}")
        return reply["result"]

    def wait_event(self, method: str, session: str | None = None, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in list(self.events):
                if event["method"] == method and (session is None or event.get("sessionId") == session):
                    return event
            time.sleep(0.02)
        raise AssertionError(f"no {method} from chromium within {timeout} s")

    def open(self, url: str, timeout: float = 30.0) -> str:
        """A new tab showing `url` once its load event fired; returns its session id."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable", session=session)
        self.call("Network.enable", session=session)
        self.call("Page.navigate", {"url": url}, session=session)
        self.wait_event("Page.loadEventFired", session, timeout)
        return session

    def evaluate(self, session: str, expression: str, timeout: float = 30.0) -> Any:
        """The value of a JavaScript expression in the page (awaited when it is a promise)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True, "timeout": int(timeout * 1000)},
                           session=session, timeout=timeout + 5)
        if "exceptionDetails" in result:
            raise AssertionError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> str:
        """Stop the browser (and its helpers, by process group); returns what it wrote to stderr."""
        if getattr(self, "ws", None) is not None:
            try:
                self.call("Browser.close", timeout=5)
            except (AssertionError, OSError):
                pass
            self.ws.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # zygote and utility processes left behind
        except ProcessLookupError:
            pass
        self.proc.wait()
        return "".join(self.stderr)


#: The page the browser loads through a tunnel: it reports how it was fetched (the navigation's
#: `nextHopProtocol`) and whether a websocket to the same origin echoes, as a promise the test
#: awaits (`window.gotunnelResult`) and as text in the DOM (#result).
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>gotunnel browser check</title></head>
<body><pre id="result">pending</pre>
<script>
window.gotunnelResult = new Promise((resolve) => {
  const out = {protocol: performance.getEntriesByType("navigation")[0].nextHopProtocol};
  const done = () => { document.getElementById("result").textContent = JSON.stringify(out); resolve(out); };
  const ws = new WebSocket(`wss://${location.host}/ws`);
  ws.onopen = () => ws.send("ping from chromium");
  ws.onmessage = (event) => { out.echo = event.data; ws.close(); done(); };
  ws.onerror = () => { out.error = "websocket error"; done(); };
  setTimeout(() => { out.error = out.error || "timeout"; done(); }, 20000);
});
</script></body></html>
"""


class PageAndWebsocketServer(WsEchoServer):
    """A backend for the browser: `/` is `PAGE`, `/ws` a websocket echo; `handshakes` keeps the
    headers of every websocket handshake that arrived."""

    def __init__(self) -> None:
        from websockets.datastructures import Headers
        from websockets.http11 import Response

        self.handshakes: list[dict[str, str]] = []
        self.pages = 0

        def process_request(connection: Any, request: Any) -> Any:
            if request.path == "/ws":
                self.handshakes.append({k.lower(): v for k, v in request.headers.raw_items()})
                return None  # the websocket handshake proceeds
            if request.path != "/":
                return Response(404, "Not Found", Headers([("Content-Length", "0")]), b"")
            if request.headers.get("User-Agent") != HOSTCHECK_USER_AGENT:  # not the Host check `start` makes
                self.pages += 1
            body = PAGE.encode()
            return Response(200, "OK", Headers([("Content-Type", "text/html; charset=utf-8"),
                                                ("Content-Length", str(len(body)))]), body)

        super().__init__(process_request=process_request)
