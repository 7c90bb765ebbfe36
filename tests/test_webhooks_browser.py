"""The dashboard's "Verify webhook" control in headless Chromium: a GitHub-signed request through a
real daemon verifies with the right secret and says why not with a wrong one."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from gotunnel_core.testing import Gotunnel, wait_for

from inspect_helpers import dash_json, through
from test_inspect_browser import chromium  # noqa: F401 - the DevTools-driven browser fixture

SECRET = "browser-webhook-secret-71c2"


def test_verify_webhook_control_in_chromium(gotunnel: Gotunnel, echo_backend: Any, chromium: Any) -> None:  # noqa: F811
    backend = echo_backend()
    gotunnel("start", "-d", "hooks", "-p", str(backend.port), "--inspect", check=True)
    body = json.dumps({"action": "opened", "number": 7}).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert through(gotunnel, "hooks", "/gh", "POST", body, {"X-Hub-Signature-256": signature,
                                                           "Content-Type": "application/json"})[0] == 200
    wait_for(lambda: [r for r in dash_json(gotunnel, "/api/requests")["requests"] if r["done"]], what="the record")
    # The URL printed is https://gotunnel.localhost:<https_port>/ (through the engine): Chromium trusts the local CA.
    page = chromium(gotunnel("dashboard", "--no-open", check=True).out.strip(),
                    ca=gotunnel("cert", "ca", "--path", check=True).out.strip())
    wait_for(lambda: page.eval("document.querySelectorAll('#requests tbody tr').length") == 1, timeout=30,
             what="the request in the list")
    page.eval("document.querySelector('#requests tbody tr').click()")
    wait_for(lambda: page.eval("!document.querySelector('#detail').hidden"), timeout=10, what="the detail view")
    assert page.eval("document.querySelector('#v-secret').type") == "password"

    result = "document.querySelector('#verify-result')"

    def submit(secret: str) -> None:
        page.eval(f"document.querySelector('#v-secret').value = {json.dumps(secret)}; "
                  f"document.querySelector('#verify').click()")

    submit(SECRET)
    wait_for(lambda: page.eval(f"{result}.dataset.reason") == "ok", timeout=10, what="the verified result")
    assert "verified (github)" in page.eval(f"{result}.textContent") and "ok" in page.eval(f"{result}.className")
    submit("wrong-" + SECRET)
    wait_for(lambda: page.eval(f"{result}.dataset.reason") == "wrong_secret_or_body_changed", timeout=10,
             what="the failed result")
    text = page.eval(f"{result}.textContent")
    assert "HMAC cannot tell" in text and SECRET not in text and "bad" in page.eval(f"{result}.className")
