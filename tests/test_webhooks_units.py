"""Webhook signature verification on its own: each provider's scheme, signed here independently
from the published specs, and the diagnosis (wrong secret, proxy rewrites, cut bodies, clock skew)."""

from __future__ import annotations

import hashlib
import hmac
import json
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gotunnel_core.inspect.observe import RequestObserver
from gotunnel_core.inspect.records import RecordStore
from gotunnel_core.inspect.webhooks import VerifyInputError, verify, verify_record

NOW = 1_760_000_000  # when the request was recorded (tests never depend on the wall clock)
STRIPE_SECRET = "whsec_test_5f2b9c0e8a1d4b7f"
GITHUB_SECRET = "It's a Secret to Everybody"
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BODY = b'{"id": "evt_1", "type": "payment_intent.succeeded", "data": {"amount": 4200, "note": "caf\xc3\xa9"}}'


def hex_hmac(secret: str, message: bytes, digest: str = "sha256") -> str:
    return hmac.new(secret.encode(), message, getattr(hashlib, digest)).hexdigest()


def stripe_headers(body: bytes, secret: str = STRIPE_SECRET, t: int = NOW, extra: str = "") -> list[tuple[str, str]]:
    """Stripe: t=TIMESTAMP,v1=HMAC-SHA256(secret, "TIMESTAMP." + raw body)."""
    return [("Content-Type", "application/json"),
            ("Stripe-Signature", f"t={t},v1={hex_hmac(secret, str(t).encode() + b'.' + body)}{extra}")]


def github_headers(body: bytes, secret: str = GITHUB_SECRET) -> list[tuple[str, str]]:
    """GitHub: X-Hub-Signature-256: sha256=HMAC-SHA256(secret, raw body)."""
    return [("X-GitHub-Event", "push"), ("X-Hub-Signature-256", "sha256=" + hex_hmac(secret, body))]


def slack_headers(body: bytes, secret: str = SLACK_SECRET, ts: int = NOW) -> list[tuple[str, str]]:
    """Slack: X-Slack-Signature: v0=HMAC-SHA256(secret, "v0:" + timestamp + ":" + raw body)."""
    return [("X-Slack-Request-Timestamp", str(ts)),
            ("X-Slack-Signature", "v0=" + hex_hmac(secret, f"v0:{ts}:".encode() + body))]


def check(headers: list[tuple[str, str]], body: bytes, secret: str, **options):  # type: ignore[no-untyped-def]
    return verify(headers, body, secret, received_at=options.pop("received_at", NOW), **options)


def test_githubs_published_example_verifies() -> None:
    # The example in GitHub's "Validating webhook deliveries" page.
    headers = [("X-Hub-Signature-256", "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")]
    result = check(headers, b"Hello, World!", GITHUB_SECRET)
    assert (result.ok, result.provider, result.reason) == (True, "github", "ok")
    assert "clock skew does not apply" in " ".join(result.notes)


@pytest.mark.parametrize("provider,headers,secret", [
    ("stripe", stripe_headers(BODY), STRIPE_SECRET),
    ("github", github_headers(BODY), GITHUB_SECRET),
    ("slack", slack_headers(BODY), SLACK_SECRET),
])
def test_each_provider_ok_wrong_secret_and_auto_detection(provider: str, headers: list[tuple[str, str]],
                                                         secret: str) -> None:
    for asked in ("auto", provider):
        result = check(headers, BODY, secret, provider=asked)
        assert (result.ok, result.provider, result.reason) == (True, provider, "ok"), result
    wrong = check(headers, BODY, secret + "x")
    assert (wrong.ok, wrong.reason) == (False, "wrong_secret_or_body_changed")
    assert "HMAC cannot tell" in wrong.detail and secret not in json.dumps(wrong.to_dict())
    # Asked for another provider: says which header the request does carry.
    other = next(p for p in ("stripe", "github", "slack") if p != provider)
    mismatch = check(headers, BODY, secret, provider=other)
    assert mismatch.reason == "no_signature_header" and f"try provider {provider}" in mismatch.detail


def test_no_signature_header_at_all() -> None:
    result = check([("Content-Type", "application/json")], BODY, "s")
    assert (result.ok, result.provider, result.reason) == (False, None, "no_signature_header")


def test_stripe_rotated_secret_second_v1_and_ignored_schemes() -> None:
    old = hex_hmac("whsec_old", f"{NOW}.".encode() + BODY)
    headers = stripe_headers(BODY, extra=",v0=" + "0" * 64)
    headers[1] = ("Stripe-Signature", headers[1][1].replace("v1=", f"v1={old},v1=", 1))
    assert headers[1][1].count("v1=") == 2 and headers[1][1].split(",")[1] == f"v1={old}"
    result = check(headers, BODY, STRIPE_SECRET)
    assert result.ok and any("2 v1 signatures" in n for n in result.notes) and any("v0" in n for n in result.notes)
    assert check(headers, BODY, "whsec_old").ok  # the other secret of the rotation too
    assert check(headers, BODY, "whsec_neither").reason == "wrong_secret_or_body_changed"


@pytest.mark.parametrize("value,fragment", [
    ("v1=" + "a" * 64, "t=UNIX-SECONDS"),
    (f"t={NOW}", "no v1 signature"),
    (f"t={NOW},v0={'a' * 64}", "no v1 signature (only v0)"),
    (f"t={NOW},v1=xyz", "not 64 hex digits"),
    (f"t=soon,v1={'a' * 64}", "t=UNIX-SECONDS"),
    (f"t={NOW},t={NOW},v1={'a' * 64}", "t=UNIX-SECONDS"),
    (f"t={NOW};v1={'a' * 64}", "t=UNIX-SECONDS"),
    ("garbage", "not KEY=VALUE"),
])
def test_stripe_malformed_headers(value: str, fragment: str) -> None:
    result = check([("Stripe-Signature", value)], BODY, STRIPE_SECRET)
    assert (result.ok, result.reason) == (False, "malformed_header") and fragment in result.detail, result.detail


@pytest.mark.parametrize("headers,fragment", [
    ([("X-Hub-Signature-256", "sha1=" + "a" * 64)], "sha256=64-HEX"),
    ([("X-Hub-Signature-256", "a" * 64)], "sha256=64-HEX"),
    ([("X-Hub-Signature", "sha1=zz")], "sha1=40-HEX"),
    ([("X-Slack-Signature", "v1=" + "a" * 64), ("X-Slack-Request-Timestamp", str(NOW))], "v0=64-HEX"),
    ([("X-Slack-Signature", "v0=" + "a" * 64)], "X-Slack-Request-Timestamp: missing"),
    ([("X-Slack-Signature", "v0=" + "a" * 64), ("X-Slack-Request-Timestamp", "-5")], "not Unix seconds"),
])
def test_github_and_slack_malformed_headers(headers: list[tuple[str, str]], fragment: str) -> None:
    result = check(headers, BODY, "secret")
    assert (result.ok, result.reason) == (False, "malformed_header") and fragment in result.detail, result.detail


def test_github_legacy_sha1_only_when_the_sha256_header_is_absent() -> None:
    sha1 = ("X-Hub-Signature", "sha1=" + hex_hmac(GITHUB_SECRET, BODY, "sha1"))
    legacy = check([sha1], BODY, GITHUB_SECRET)
    assert legacy.ok and legacy.header == "X-Hub-Signature" and any("legacy SHA-1" in n for n in legacy.notes)
    # Both present: the SHA-256 one decides; a right SHA-1 does not rescue a wrong SHA-256.
    wrong256 = ("X-Hub-Signature-256", "sha256=" + hex_hmac("other", BODY))
    assert check([sha1, wrong256], BODY, GITHUB_SECRET).reason == "wrong_secret_or_body_changed"
    assert check([sha1, *github_headers(BODY)], BODY, GITHUB_SECRET).header == "X-Hub-Signature-256"


@pytest.mark.parametrize("sign,secret", [(stripe_headers, STRIPE_SECRET), (slack_headers, SLACK_SECRET)])
def test_clock_skew_is_judged_against_the_recording_time_in_both_directions(sign, secret) -> None:  # type: ignore[no-untyped-def]
    ahead = check(sign(BODY, secret, NOW + 400), BODY, secret)
    assert (ahead.ok, ahead.reason, ahead.skew_seconds, ahead.tolerance) == (False, "clock_skew", 400, 300)
    assert "400 s ahead of" in ahead.detail and "wrong" not in ahead.detail
    behind = check(sign(BODY, secret, NOW - 400), BODY, secret)
    assert (behind.reason, behind.skew_seconds) == ("clock_skew", -400) and "400 s behind" in behind.detail
    # Far in the past: an old delivery sent again, not a clock problem.
    stale = check(sign(BODY, secret, NOW - 7200), BODY, secret)
    assert (stale.reason, stale.skew_seconds) == ("timestamp_outside_tolerance", -7200)
    # Within tolerance: ok, and the offset is still reported.
    near = check(sign(BODY, secret, NOW - 299), BODY, secret)
    assert near.ok and near.skew_seconds == -299
    # Recorded long ago, verified now: judged against the record's time, so still ok.
    assert check(sign(BODY, secret, 1_500_000_000), BODY, secret, received_at=1_500_000_010).ok
    # A wider tolerance accepts the skewed one.
    assert check(sign(BODY, secret, NOW + 400), BODY, secret, tolerance=600).ok


def test_a_cut_body_cannot_be_verified() -> None:
    result = check(stripe_headers(BODY), BODY[:20], STRIPE_SECRET, truncated=True)
    assert (result.ok, result.reason) == (False, "body_truncated") and "inspect_body_limit" in result.detail
    skewed = check(stripe_headers(BODY, t=NOW - 1000), BODY[:20], STRIPE_SECRET, truncated=True)
    assert skewed.reason == "body_truncated" and "1000 s behind" in skewed.detail


SIGNED_JSON = json.dumps({"b": 1, "a": [1, 2], "note": "café"}, ensure_ascii=False).encode()


@pytest.mark.parametrize("signed,recorded,rewrite", [
    # The sender signed `signed`; a proxy delivered (and gotunnel recorded) `recorded`.
    (SIGNED_JSON, json.dumps(json.loads(SIGNED_JSON), separators=(",", ":"), ensure_ascii=False).encode(),
     "had spaces after , and :"),
    (json.dumps({"b": 1, "a": 2}, separators=(",", ":")).encode(), b'{"b": 1, "a": 2}', "the sender's was compact"),
    (json.dumps({"b": 1, "a": [1]}, indent=2).encode(), b'{"b":1,"a":[1]}', "indented by 2"),
    (json.dumps({"n": "é"}).encode(), '{"n": "é"}'.encode(), "non-ASCII as \\u escapes"),
    (b"line one\r\nline two\r\n", b"line one\nline two\n", "CRLF line ends were turned into LF"),
    (b"line one\nline two\n", b"line one\r\nline two\r\n", "LF line ends were turned into CRLF"),
    (b'{"a": 1}', b'{"a": 1}\n', "a trailing newline was added"),
    (b'{"a": 1}\n', b'{"a": 1}', "a trailing newline was removed"),
    (b"token=abc&text=hello+world&x=%2F", b"token=abc&text=hello%20world&x=%2F", "spaces were +"),
    (b"text=hello%20world&x=1", b"text=hello+world&x=1", "spaces were %20"),
    ("caf\xe9 ok".encode("latin-1"), "caf\xe9 ok".encode(), "from ISO-8859-1 to UTF-8"),
    (b'{"a": 1}', b'\xef\xbb\xbf{"a": 1}', "byte order mark was added"),
])
def test_a_body_rewritten_by_a_proxy_is_named(signed: bytes, recorded: bytes, rewrite: str) -> None:
    assert signed != recorded
    for headers, secret in ((stripe_headers(signed), STRIPE_SECRET), (github_headers(signed), GITHUB_SECRET),
                            (slack_headers(signed), SLACK_SECRET)):
        result = check(headers, recorded, secret)
        assert (result.ok, result.reason) == (False, "body_changed_by_proxy"), (result, quote(recorded))
        assert result.rewrite and rewrite in result.rewrite and rewrite in result.detail
        # The same bytes with a wrong secret: no variant matches, so HMAC cannot tell.
        assert check(headers, recorded, secret + "!").reason == "wrong_secret_or_body_changed"


@pytest.mark.parametrize("provider,secret,kind", [
    ("stripe", "sk_test_51H" + "x" * 20, "Stripe secret API key"),
    ("stripe", "rk_live_51H" + "x" * 20, "restricted API key"),
    ("slack", "xoxb-1234-5678", "Slack bot token"),
    ("github", "ghp_" + "x" * 36, "personal access token"),
])
def test_an_api_key_given_instead_of_the_signing_secret_is_named(provider: str, secret: str, kind: str) -> None:
    headers = {"stripe": stripe_headers, "github": github_headers, "slack": slack_headers}[provider](BODY)
    result = check(headers, BODY, secret)
    assert (result.ok, result.reason) == (False, "wrong_kind_of_secret") and kind in result.detail
    assert secret not in json.dumps(result.to_dict())


def test_a_stripe_secret_without_whsec_prefix_gets_a_note() -> None:
    result = check(stripe_headers(BODY, "plainsecret"), BODY, "plainsecret")
    assert result.ok and any("whsec_" in n for n in result.notes)


@pytest.mark.parametrize("options,fragment", [
    ({"provider": "paypal"}, "'paypal'"), ({"tolerance": -1}, "tolerance -1"), ({"tolerance": True}, "tolerance True"),
])
def test_bad_questions_are_refused_naming_the_value(options: dict, fragment: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(VerifyInputError) as raised:
        check(stripe_headers(BODY), BODY, STRIPE_SECRET, **options)
    assert fragment in str(raised.value)
    with pytest.raises(VerifyInputError, match="secret is empty"):
        check(stripe_headers(BODY), BODY, "")


def recorded(request: bytes, limit: int = 1 << 20):  # type: ignore[no-untyped-def]
    """A record made the way the relay makes them: the observer parsing the request's bytes."""
    store = RecordStore(10, limit)
    observer = RequestObserver(store, "hooks", "http://127.0.0.1:1")
    observer.feed(request)
    assert observer.last is not None
    return observer.last


def http_post(headers: list[tuple[str, str]], body: bytes) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers)
    return f"POST /hook HTTP/1.1\r\nHost: hooks.localhost\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def test_verify_record_uses_the_record_bytes_time_and_cut_mark() -> None:
    record = recorded(http_post(stripe_headers(BODY, t=NOW), BODY))
    record.started_at = NOW + 30
    result = verify_record(record, STRIPE_SECRET)
    assert result.ok and result.skew_seconds == -30
    record.started_at = NOW + 3000
    assert verify_record(record, STRIPE_SECRET).reason == "clock_skew"
    cut = recorded(http_post(github_headers(BODY), BODY), limit=10)
    assert cut.request_body.truncated and verify_record(cut, GITHUB_SECRET).reason == "body_truncated"
    partial = recorded(http_post(github_headers(BODY), BODY)[:-5])
    assert verify_record(partial, GITHUB_SECRET).reason == "body_incomplete"
    replayed = recorded(http_post(slack_headers(BODY, ts=NOW), BODY))
    replayed.started_at, replayed.replay_of = NOW + 7200, 3
    result = verify_record(replayed, SLACK_SECRET)
    assert result.reason == "timestamp_outside_tolerance" and any("replay of request 3" in n for n in result.notes)


SIGNERS = [("stripe", stripe_headers), ("github", github_headers), ("slack", slack_headers)]


@settings(max_examples=150, deadline=None)
@given(body=st.binary(max_size=512), secret=st.text(min_size=1, max_size=40), which=st.sampled_from(SIGNERS),
       data=st.data())
def test_property_signed_verifies_and_any_single_byte_change_does_not(body: bytes, secret: str, which, data) -> None:  # type: ignore[no-untyped-def]
    provider, sign = which
    headers = sign(body, secret)
    assert check(headers, body, secret, provider=provider).ok
    assert check(headers, body, secret).ok
    if body:
        index = data.draw(st.integers(0, len(body) - 1))
        new_byte = data.draw(st.integers(0, 255).filter(lambda b: b != body[index]))
        changed = body[:index] + bytes([new_byte]) + body[index + 1:]
        result = check(headers, changed, secret)
        assert not result.ok and result.reason != "ok"
