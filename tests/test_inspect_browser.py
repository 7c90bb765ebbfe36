"""The dashboard in a real browser: headless Chromium (Debian `chromium`) driven over the DevTools
protocol shows a new request live, its headers (masked, unmasked by a click), replays it to the
backend, and exports HAR that parses and holds it."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from gotunnel_core.testing import Gotunnel, wait_for
from gotunnel_core.testing.browser import nss_trusting_only

from inspect_helpers import dash_json, through

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)


class Page:
    """One page of a headless Chromium, evaluated in over the DevTools protocol (websockets)."""

    def __init__(self, ws_url: str) -> None:
        from websockets.sync.client import connect

        self._connection = connect(ws_url, max_size=None)
        self.ws = self._connection.__enter__()
        self.ids = itertools.count(1)

    def eval(self, expression: str) -> Any:
        call_id = next(self.ids)
        self.ws.send(json.dumps({"id": call_id, "method": "Runtime.evaluate",
                                 "params": {"expression": expression, "returnByValue": True, "awaitPromise": True}}))
        while True:
            message = json.loads(self.ws.recv(timeout=30))
            if message.get("id") == call_id:
                result = message["result"]
                if "exceptionDetails" in result:
                    raise AssertionError(f"{expression}: {result['exceptionDetails']}")
                return result["result"].get("value")

    def close(self) -> None:
        self._connection.__exit__(None, None, None)


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Any]:
    """Start headless Chromium on a URL; yields `open(url) -> Page`; its process group is killed by pid."""
    if CHROMIUM is None:
        pytest.skip("chromium not installed (apt-get install chromium)")
    procs: list[subprocess.Popen[bytes]] = []
    pages: list[Page] = []

    def open_page(url: str, ca: str | None = None) -> Page:
        """The page at `url`; with `ca`, Chromium's NSS database (under its HOME) trusts that CA only."""
        profile = tmp_path / "profile"
        argv = [CHROMIUM, "--headless", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--remote-debugging-port=0",
                "--remote-allow-origins=*", f"--user-data-dir={profile}", url]
        if os.geteuid() == 0:
            argv.insert(1, "--no-sandbox")
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        if ca is not None and not (home / ".pki").exists():
            nss_trusting_only(home, ca)
        procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      env={**os.environ, "HOME": str(home)}, start_new_session=True))
        port_file = profile / "DevToolsActivePort"
        wait_for(lambda: port_file.is_file() and port_file.read_text().strip(), timeout=60, what="Chromium's DevTools port")
        port = int(port_file.read_text().split()[0])

        def page_target() -> str | None:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
                targets = json.load(answer)
            return next((t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page" and t["url"].startswith(url)), None)

        page = Page(wait_for(page_target, timeout=30, what="the dashboard page target"))
        pages.append(page)
        return page

    try:
        yield open_page
    finally:
        for page in pages:
            page.close()
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)


def test_dashboard_in_chromium_lists_shows_unmasks_replays_and_exports(gotunnel: Gotunnel, echo_backend: Any,
                                                                        chromium: Any) -> None:
    backend = echo_backend("browser-backend")
    gotunnel("start", "-d", "shop", "-p", str(backend.port), "--inspect", check=True)
    # The URL it prints is the engine's, over HTTPS with the local CA (trusted in Chromium's NSS database).
    url = gotunnel("dashboard", "--no-open", check=True).out.strip()
    assert url == f"https://gotunnel.localhost:{gotunnel.https_port}/"
    page = chromium(url, ca=gotunnel("cert", "ca", "--path", check=True).out.strip())
    wait_for(lambda: page.eval("document.querySelector('#live')?.textContent") == "live", timeout=30,
             what="the page's live event stream")
    # The tunnel list is fetched on its own, independently of the event stream: poll for it too.
    wait_for(lambda: "shop" in (page.eval("document.querySelector('#tunnels').textContent") or ""), timeout=30,
             what="the tunnel list to show `shop`")

    # A request through the tunnel appears in the open page's list (pushed over SSE, no reload).
    status, _ = through(gotunnel, "shop", "/checkout?cart=7", "POST", b'{"total": 42}',
                        {"Authorization": "Bearer browser-secret", "X-Test-Marker": "chromium-e2e",
                         "Content-Type": "application/json"})
    assert status == 200
    rows = "[...document.querySelectorAll('#requests tbody tr')].map(r => r.textContent)"
    wait_for(lambda: any("/checkout?cart=7" in r and "200" in r for r in page.eval(rows)), timeout=3,
             what="the request in the list")
    # Within a second of the request's arrival, by the page's own clock (the push's arrival time,
    # which the page keeps per row) against the record's start: the test's polling lag is not counted.
    record = next(r for r in dash_json(gotunnel, "/api/requests")["requests"] if r["path"] == "/checkout?cart=7")
    shown_at = float(page.eval(f"document.querySelector('#requests tbody tr[data-id=\"{record['id']}\"]').dataset.shownAt"))
    assert shown_at / 1000 - record["started_at"] < 1.0, f"shown {shown_at / 1000 - record['started_at']:.3f} s after the request"

    # Opening it shows its headers (Authorization masked) and its pretty-printed JSON body.
    page.eval("document.querySelector('#requests tbody tr').click()")
    headers_text = "document.querySelector('#request-headers').textContent"
    wait_for(lambda: "chromium-e2e" in page.eval(headers_text), timeout=10, what="the request's headers")
    assert "browser-secret" not in page.eval(headers_text) and "••••••" in page.eval(headers_text)
    assert '"total": 42' in page.eval("document.querySelector('#request-body').textContent")
    page.eval("document.querySelector('#request-headers button.masked').click()")
    wait_for(lambda: "Bearer browser-secret" in page.eval(headers_text), timeout=10, what="the unmasked value")

    # Replay reaches the backend a second time.
    assert backend.hits.count("/checkout?cart=7") == 1
    page.eval("document.querySelector('#replay').click()")
    wait_for(lambda: backend.hits.count("/checkout?cart=7") == 2, timeout=10, what="the replay at the backend")
    wait_for(lambda: "replayed as" in page.eval("document.querySelector('#replay-result').textContent"), timeout=10,
             what="the replay's result on the page")

    # The HAR export the page links to parses and holds the request.
    har = page.eval("fetch(document.querySelector('#har').href).then(r => r.json())")
    urls = [e["request"]["url"] for e in har["log"]["entries"]]
    assert har["log"]["version"] == "1.2" and urls.count(f"http://shop.localhost:{gotunnel.http_port}/checkout?cart=7") == 2
