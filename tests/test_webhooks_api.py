"""Webhook verification end to end: Stripe-, GitHub- and Slack-signed POSTs through an inspected
tunnel of a real daemon (builtin engine), checked by `POST /api/requests/ID/verify` and by
`gotunnel inspect verify` (exit 0/1/2); the secret is never echoed, logged nor stored."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

from gotunnel_core.testing import Gotunnel, wait_for

from inspect_helpers import dash, dash_json, through

STRIPE_SECRET = "whsec_e2e_6c1f0a9d3b7e4c22"
GITHUB_SECRET = "gh-e2e-secret-8d2e71"
SLACK_SECRET = "slack-e2e-secret-4a9f0b"
WRONG_SECRET = "not-the-secret-5e8c31"
EVENT = json.dumps({"id": "evt_e2e", "type": "invoice.paid", "data": {"amount": 4200}}).encode()


def _hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _send_signed(g: Gotunnel) -> dict[str, int]:
    """One signed POST per provider through the tunnel (plus one a proxy re-serialised); their record ids."""
    now = int(time.time())
    compact = json.dumps(json.loads(EVENT), separators=(",", ":")).encode()
    posts = {
        "stripe": ("/stripe", EVENT, {"Stripe-Signature": f"t={now},v1={_hex(STRIPE_SECRET, f'{now}.'.encode() + EVENT)}"}),
        "github": ("/github", EVENT, {"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + _hex(GITHUB_SECRET, EVENT)}),
        "slack": ("/slack", b"token=x&text=hi+there", {
            "X-Slack-Request-Timestamp": str(now),
            "X-Slack-Signature": "v0=" + _hex(SLACK_SECRET, f"v0:{now}:".encode() + b"token=x&text=hi+there"),
            "Content-Type": "application/x-www-form-urlencoded"}),
        # Signed over EVENT (with spaces), delivered compact: what a re-serialising proxy does.
        "rewritten": ("/rewritten", compact, {"Stripe-Signature": f"t={now},v1={_hex(STRIPE_SECRET, f'{now}.'.encode() + EVENT)}"}),
    }
    for path, body, headers in posts.values():
        status, _ = through(g, "hooks", path, "POST", body, {"Content-Type": "application/json", **headers})
        assert status == 200

    def recorded() -> dict[str, int] | None:
        rows = dash_json(g, "/api/requests?tunnel=hooks")["requests"]
        if len(rows) < len(posts) or not all(r["done"] for r in rows):
            return None
        return {r["path"].lstrip("/"): r["id"] for r in rows}

    return wait_for(recorded, what="the signed requests recorded")


def _verify(g: Gotunnel, rid: int, body: Any, expect: int = 200, headers: dict[str, str] | None = None) -> Any:
    status, _, data = dash(g, f"/api/requests/{rid}/verify", "POST", json.dumps(body).encode(), headers)
    assert status == expect, (status, data[:300])
    for secret in (STRIPE_SECRET, GITHUB_SECRET, SLACK_SECRET, WRONG_SECRET):
        assert secret.encode() not in data
    return json.loads(data)


def test_verify_api_and_cli_on_real_signed_requests(gotunnel: Gotunnel, echo_backend: Any) -> None:
    backend = echo_backend()
    gotunnel("start", "-d", "hooks", "-p", str(backend.port), "--inspect", check=True)
    ids = _send_signed(gotunnel)
    secrets = {"stripe": STRIPE_SECRET, "github": GITHUB_SECRET, "slack": SLACK_SECRET}

    # The API: right secret verifies (provider auto-detected and given), a wrong one says why not.
    for provider, secret in secrets.items():
        for asked in ("auto", provider):
            result = _verify(gotunnel, ids[provider], {"provider": asked, "secret": secret})
            assert (result["ok"], result["provider"], result["reason"], result["id"]) == (True, provider, "ok", ids[provider])
        wrong = _verify(gotunnel, ids[provider], {"provider": "auto", "secret": WRONG_SECRET})
        assert (wrong["ok"], wrong["reason"]) == (False, "wrong_secret_or_body_changed")
    # Skew is measured against the recording time (the request was signed just before it was sent).
    assert abs(_verify(gotunnel, ids["stripe"], {"secret": STRIPE_SECRET})["skew_seconds"]) <= 5
    # The body a proxy re-serialised: the right secret is recognised and the rewrite named.
    rewritten = _verify(gotunnel, ids["rewritten"], {"provider": "stripe", "secret": STRIPE_SECRET})
    assert (rewritten["ok"], rewritten["reason"]) == (False, "body_changed_by_proxy")
    assert "JSON was re-serialised" in rewritten["rewrite"]
    # A Stripe API key instead of the signing secret is named as such.
    api_key = _verify(gotunnel, ids["stripe"], {"provider": "stripe", "secret": "sk_test_" + "k" * 24})
    assert api_key["reason"] == "wrong_kind_of_secret" and "sk_test_" not in json.dumps(api_key)
    # Asked for GitHub on Stripe's request: no such header, and which one there is.
    other = _verify(gotunnel, ids["stripe"], {"provider": "github", "secret": GITHUB_SECRET})
    assert other["reason"] == "no_signature_header" and "try provider stripe" in other["detail"]

    # Bad input: 400 naming the value (never the secret), 404 unknown record, 405 wrong method.
    assert "'paypal'" in _verify(gotunnel, ids["stripe"], {"provider": "paypal", "secret": WRONG_SECRET}, 400)["error"]
    assert "secret" in _verify(gotunnel, ids["stripe"], {"provider": "stripe"}, 400)["error"]
    assert "empty" in _verify(gotunnel, ids["stripe"], {"secret": ""}, 400)["error"]
    assert "'extra'" in _verify(gotunnel, ids["stripe"], {"secret": WRONG_SECRET, "extra": 1}, 400)["error"]
    assert "tolerance" in _verify(gotunnel, ids["stripe"], {"secret": WRONG_SECRET, "tolerance": "x"}, 400)["error"]
    assert _verify(gotunnel, ids["stripe"], [WRONG_SECRET], 400)
    assert _verify(gotunnel, 999999, {"secret": WRONG_SECRET}, 404)
    assert dash(gotunnel, f"/api/requests/{ids['stripe']}/verify")[0] == 405
    # The same guards as replay: a cross-site page cannot use the dashboard as a signing oracle.
    port = gotunnel.dashboard_port
    _verify(gotunnel, ids["stripe"], {"secret": STRIPE_SECRET}, 403, {"Origin": "http://evil.example"})
    _verify(gotunnel, ids["stripe"], {"secret": STRIPE_SECRET}, 421, {"Host": f"evil.example:{port}"})
    assert _verify(gotunnel, ids["stripe"], {"secret": STRIPE_SECRET}, 200,
                   {"Origin": f"http://gotunnel.localhost:{port}"})["ok"]

    # The CLI: secret from an environment variable or stdin; 0 verified, 1 not, 2 bad input.
    stripe_id = str(ids["stripe"])
    ok = gotunnel("inspect", "verify", stripe_id, "--secret-env", "HOOK_SECRET", extra_env={"HOOK_SECRET": STRIPE_SECRET})
    assert ok.code == 0 and ok.out.startswith("verified:"), ok
    ok = gotunnel("inspect", "verify", str(ids["github"]), "--provider", "github", stdin=GITHUB_SECRET + "\n")
    assert ok.code == 0, ok
    as_json = gotunnel("inspect", "verify", str(ids["slack"]), "--json", stdin=SLACK_SECRET)
    assert as_json.code == 0 and json.loads(as_json.out)["provider"] == "slack"
    wrong = gotunnel("inspect", "verify", stripe_id, stdin=WRONG_SECRET)
    assert wrong.code == 1 and "not verified (wrong_secret_or_body_changed)" in wrong.out, wrong
    proxy = gotunnel("inspect", "verify", str(ids["rewritten"]), stdin=STRIPE_SECRET)
    assert proxy.code == 1 and "body_changed_by_proxy" in proxy.out
    for args, stdin, named in (
        (["--provider", "paypal"], STRIPE_SECRET, "'paypal'"),
        (["--secret-env", "NO_SUCH_VAR_E2E"], None, "'NO_SUCH_VAR_E2E'"),
        ([], "", "no secret on stdin"),
    ):
        bad = gotunnel("inspect", "verify", stripe_id, *args, stdin=stdin if stdin is not None else "")
        assert bad.code == 2 and named in bad.err and len(bad.err.strip().splitlines()) <= 2, bad
    missing = gotunnel("inspect", "verify", "999999", stdin=STRIPE_SECRET)
    assert missing.code == 2 and "999999" in missing.err, missing
    bad_id = gotunnel("inspect", "verify", "abc", stdin=STRIPE_SECRET)
    assert bad_id.code == 2 and "'abc'" in bad_id.err

    # Nothing the daemon wrote down holds a secret: its log, the audit log, any state file.
    files = [p for p in Path(gotunnel.state_dir).rglob("*") if p.is_file()]
    assert {"daemon.log", "audit.jsonl"} <= {p.name for p in files}
    for path in files:
        data = path.read_bytes()
        assert all(s.encode() not in data for s in (*secrets.values(), WRONG_SECRET)), path
