"""Verify a recorded webhook's signature (Stripe, GitHub, Slack) and say why it fails.

Each provider signs the raw request body with HMAC-SHA256 under a shared secret:

- Stripe: `Stripe-Signature: t=TS,v1=HEX[,v1=HEX...]` over `"{t}.{body}"`; several `v1` while a
  secret is rolled; `v0` and unknown schemes are ignored; 300 s tolerance by default.
- GitHub: `X-Hub-Signature-256: sha256=HEX` over the body; the legacy `X-Hub-Signature: sha1=HEX`
  only when the SHA-256 header is absent. No timestamp is signed, so clock skew does not apply.
- Slack: `X-Slack-Signature: v0=HEX` over `"v0:{X-Slack-Request-Timestamp}:{body}"`; 5 minutes.

The point is the diagnosis. Time is judged against when the request was *recorded*, not now (a
record verified an hour later is not late). When the recorded bytes do not match, the usual rewrites
a proxy or framework does to a body are undone one at a time; if one matches, the body was changed
on the way (`body_changed_by_proxy`, naming the rewrite). Otherwise HMAC cannot tell a wrong secret
from a changed body, and the result says exactly that. Comparisons are constant-time.
"""

from __future__ import annotations

import hmac
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence
from urllib.parse import parse_qsl, quote, urlencode

PROVIDERS = ("stripe", "github", "slack")
#: Seconds a signed timestamp may be away from the recording time (Stripe's and Slack's defaults).
DEFAULT_TOLERANCE = {"stripe": 300, "slack": 300}
#: Beyond this, a timestamp is not a clock problem but an old delivery sent again.
STALE_AFTER = 3600

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_HEX40 = re.compile(r"^[0-9a-fA-F]{40}$")
_DIGITS = re.compile(r"^[0-9]{1,12}$")
_LABEL = {"stripe": "Stripe", "github": "GitHub", "slack": "Slack"}
#: The header that identifies each provider, in auto-detection order.
_SIGNATURE_HEADERS = (("stripe-signature", "stripe"), ("x-slack-signature", "slack"),
                      ("x-hub-signature-256", "github"), ("x-hub-signature", "github"))
#: Prefixes of API keys and tokens people paste instead of the webhook signing secret.
_WRONG_KIND = {
    "stripe": (("sk_", "a Stripe secret API key"), ("rk_", "a Stripe restricted API key"),
               ("pk_", "a Stripe publishable key")),
    "slack": (("xoxb-", "a Slack bot token"), ("xoxp-", "a Slack user token"), ("xoxa-", "a Slack app token"),
              ("xapp-", "a Slack app-level token")),
    "github": (("ghp_", "a GitHub personal access token"), ("github_pat_", "a GitHub personal access token"),
               ("gho_", "a GitHub OAuth token"), ("ghs_", "a GitHub App installation token")),
}
_WHERE = {"stripe": "the endpoint's signing secret (whsec_..., Dashboard > Webhooks > the endpoint, "
                    "or the one `stripe listen` prints)",
          "github": "the secret set in the webhook's settings",
          "slack": "the app's Signing Secret (Basic Information > App Credentials)"}


class VerifyInputError(ValueError):
    """The question itself is wrong (unknown provider, empty secret, bad tolerance): exit 2 / HTTP 400."""


@dataclass
class Verification:
    """The answer: `ok`, a machine-readable `reason` and a one-line `detail` saying what to do."""

    ok: bool
    provider: str | None
    reason: str
    detail: str
    #: The header the signature was read from.
    header: str | None = None
    #: Signed timestamp minus recording time, in seconds (positive: the timestamp is ahead).
    skew_seconds: int | None = None
    tolerance: int | None = None
    #: The proxy rewrite whose undoing made the signature match (`body_changed_by_proxy`).
    rewrite: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Signed:
    """What a header promises: the message to MAC for a candidate body, the digests, the timestamp."""

    header: str
    message: Callable[[bytes], bytes]
    signatures: tuple[str, ...]
    digest: str = "sha256"
    timestamp: int | None = None


class _Malformed(Exception):
    def __init__(self, header: str, detail: str) -> None:
        super().__init__(detail)
        self.header = header


def header_value(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    """The first value of header `name` (case-insensitive)."""
    return next((v for k, v in headers if k.lower() == name), None)


def detect_provider(headers: Sequence[tuple[str, str]]) -> str | None:
    """The provider whose signature header the request carries (Stripe, then Slack, then GitHub)."""
    return next((provider for name, provider in _SIGNATURE_HEADERS if header_value(headers, name) is not None), None)


def verify(headers: Sequence[tuple[str, str]], body: bytes, secret: str, *, provider: str = "auto",
           received_at: float, truncated: bool = False, tolerance: int | None = None) -> Verification:
    """Check the webhook signature of a request received at `received_at` (Unix time)."""
    provider = _check_input(provider, secret, tolerance)
    chosen = detect_provider(headers) if provider == "auto" else provider
    if chosen is None:
        return Verification(False, None, "no_signature_header",
                            "no Stripe-Signature, X-Hub-Signature-256, X-Hub-Signature or X-Slack-Signature header: "
                            "this request is not a signed Stripe, GitHub or Slack webhook")
    notes: list[str] = []
    try:
        signed = _PARSERS[chosen](headers, notes)
    except _Malformed as exc:
        return Verification(False, chosen, "malformed_header", f"{exc.header}: {exc}", header=exc.header, notes=notes)
    if signed is None:
        other = detect_provider(headers)
        seen = f"; it carries {_LABEL[other]}'s signature header (try provider {other})" if other else ""
        return Verification(False, chosen, "no_signature_header",
                            f"no {_LABEL[chosen]} signature header on this request{seen}", notes=notes)
    limit = tolerance if tolerance is not None else DEFAULT_TOLERANCE.get(chosen)
    skew = None if signed.timestamp is None else signed.timestamp - round(received_at)
    result = Verification(False, chosen, "", "", header=signed.header, skew_seconds=skew,
                          tolerance=limit if signed.timestamp is not None else None, notes=notes)
    if chosen == "github":
        notes.append("GitHub signs no timestamp: clock skew does not apply (nothing stops a replayed delivery "
                     "but its X-GitHub-Delivery id)")
    if chosen == "stripe" and not secret.startswith("whsec_") and _wrong_kind(chosen, secret) is None:
        notes.append("Stripe signing secrets start with whsec_; this one does not")
    if truncated:
        return _set(result, "body_truncated", "the recorded body was cut at inspect_body_limit, so the signature "
                    "cannot be checked: raise inspect_body_limit (GOTUNNEL_INSPECT_BODY_LIMIT) and send it again"
                    + _time_note(skew, limit))
    if _matches(signed, body, secret):
        if skew is not None and limit is not None and abs(skew) > limit:
            return _set(result, *_time_verdict(chosen, skew, limit))
        return _set(result, "ok", f"the {_LABEL[chosen]} signature matches the recorded body" + (
            f" (timestamp {_seconds(skew)} {'ahead of' if skew > 0 else 'behind'} the recording time, within "
            f"{limit} s)" if skew else ""), ok=True)
    for rewrite, original in proxy_variants(body):
        if _matches(signed, original, secret):
            result.rewrite = rewrite
            return _set(result, "body_changed_by_proxy", f"the secret is right but the body was changed on the way: "
                        f"{rewrite}; make the proxy or framework pass the raw body through, and verify the raw bytes"
                        + _time_note(skew, limit))
    if (kind := _wrong_kind(chosen, secret)) is not None:
        return _set(result, "wrong_kind_of_secret", f"this secret looks like {kind}, not a webhook signing secret: "
                    f"use {_WHERE[chosen]}")
    return _set(result, "wrong_secret_or_body_changed", f"the {signed.header} signature does not match the "
                f"recorded body with this secret: either it is not {_WHERE[chosen]}, or the body was changed in a way gotunnel "
                "cannot undo (HMAC cannot tell these apart)" + _time_note(skew, limit))


def verify_record(record: Any, secret: str, provider: str = "auto", tolerance: int | None = None) -> Verification:
    """`verify` applied to an inspector record, judging time against when it was recorded."""
    if record.t_request_done is None:
        _check_input(provider, secret, tolerance)
        return Verification(False, None if provider == "auto" else provider, "body_incomplete",
                            "the request body has not been received whole (still arriving, or the connection "
                            "ended early): nothing to verify yet")
    result = verify(record.request_headers, bytes(record.request_body.data), secret, provider=provider,
                    received_at=record.started_at, truncated=record.request_body.truncated, tolerance=tolerance)
    if record.replay_of is not None and result.skew_seconds is not None:
        result.notes.append(f"this record is a replay of request {record.replay_of}: its signed timestamp is the "
                            "original delivery's, so verify the original for its timing")
    return result


# ----- providers -------------------------------------------------------------------------------------


def _stripe(headers: Sequence[tuple[str, str]], notes: list[str]) -> _Signed | None:
    raw = header_value(headers, "stripe-signature")
    if raw is None:
        return None
    timestamps, signatures, others = [], [], []
    for item in raw.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or not key:
            raise _Malformed("Stripe-Signature", f"{item.strip()!r} is not KEY=VALUE")
        if key == "t":
            timestamps.append(value)
        elif key == "v1":
            signatures.append(value)
        else:
            others.append(key)
    if len(timestamps) != 1 or not _DIGITS.match(timestamps[0]):
        raise _Malformed("Stripe-Signature", f"needs one t=UNIX-SECONDS, found {timestamps or 'none'}")
    if not signatures:
        raise _Malformed("Stripe-Signature", f"no v1 signature (only {', '.join(others) or 'nothing'}): "
                         "Stripe's live scheme is v1")
    bad = [s for s in signatures if not _HEX64.match(s)]
    if bad:
        raise _Malformed("Stripe-Signature", f"v1={bad[0][:80]!r} is not 64 hex digits")
    if others:
        notes.append(f"ignored Stripe-Signature schemes: {', '.join(sorted(set(others)))}")
    if len(signatures) > 1:
        notes.append(f"{len(signatures)} v1 signatures (a secret being rolled): any one matching is enough")
    prefix = timestamps[0].encode() + b"."
    return _Signed("Stripe-Signature", lambda body: prefix + body, tuple(s.lower() for s in signatures),
                   timestamp=int(timestamps[0]))


def _github(headers: Sequence[tuple[str, str]], notes: list[str]) -> _Signed | None:
    raw = header_value(headers, "x-hub-signature-256")
    if raw is not None:
        algorithm, sep, value = raw.strip().partition("=")
        if algorithm != "sha256" or not sep or not _HEX64.match(value):
            raise _Malformed("X-Hub-Signature-256", f"{raw[:100]!r} is not sha256=64-HEX-DIGITS")
        return _Signed("X-Hub-Signature-256", lambda body: body, (value.lower(),))
    raw = header_value(headers, "x-hub-signature")
    if raw is None:
        return None
    algorithm, sep, value = raw.strip().partition("=")
    if algorithm != "sha1" or not sep or not _HEX40.match(value):
        raise _Malformed("X-Hub-Signature", f"{raw[:100]!r} is not sha1=40-HEX-DIGITS")
    notes.append("X-Hub-Signature-256 is absent: checked the legacy SHA-1 X-Hub-Signature instead")
    return _Signed("X-Hub-Signature", lambda body: body, (value.lower(),), digest="sha1")


def _slack(headers: Sequence[tuple[str, str]], notes: list[str]) -> _Signed | None:
    raw = header_value(headers, "x-slack-signature")
    if raw is None:
        return None
    version, sep, value = raw.strip().partition("=")
    if version != "v0" or not sep or not _HEX64.match(value):
        raise _Malformed("X-Slack-Signature", f"{raw[:100]!r} is not v0=64-HEX-DIGITS")
    stamp = header_value(headers, "x-slack-request-timestamp")
    if stamp is None:
        raise _Malformed("X-Slack-Request-Timestamp", "missing: Slack signs it together with the body")
    stamp = stamp.strip()
    if not _DIGITS.match(stamp):
        raise _Malformed("X-Slack-Request-Timestamp", f"{stamp[:40]!r} is not Unix seconds")
    prefix = b"v0:" + stamp.encode() + b":"
    return _Signed("X-Slack-Signature", lambda body: prefix + body, (value.lower(),), timestamp=int(stamp))


_PARSERS: dict[str, Callable[[Sequence[tuple[str, str]], list[str]], _Signed | None]] = {
    "stripe": _stripe, "github": _github, "slack": _slack}


# ----- the diagnosis ---------------------------------------------------------------------------------


def proxy_variants(body: bytes) -> Iterator[tuple[str, bytes]]:
    """Bodies the sender may have signed before a proxy rewrote them into `body`, each named by that rewrite."""
    seen = {body}

    def fresh(rewrite: str, candidate: bytes | None) -> Iterator[tuple[str, bytes]]:
        if candidate is not None and candidate not in seen:
            seen.add(candidate)
            yield rewrite, candidate

    yield from fresh("a trailing newline was added", body[:-2] if body.endswith(b"\r\n") else
                     body[:-1] if body.endswith(b"\n") else None)
    yield from fresh("a trailing newline was removed", body + b"\n")
    yield from fresh("CRLF line ends were turned into LF", body.replace(b"\n", b"\r\n") if b"\r\n" not in body else None)
    yield from fresh("LF line ends were turned into CRLF", body.replace(b"\r\n", b"\n"))
    bom = b"\xef\xbb\xbf"
    yield from fresh("a UTF-8 byte order mark was added", body[3:] if body.startswith(bom) else None)
    yield from fresh("the UTF-8 byte order mark was removed", bom + body if not body.startswith(bom) else None)
    yield from fresh("the charset was converted from ISO-8859-1 to UTF-8", _recode(body, "utf-8", "latin-1"))
    yield from fresh("the charset was converted from UTF-8 to ISO-8859-1", _recode(body, "latin-1", "utf-8"))
    for rewrite, candidate in _json_variants(body):
        yield from fresh(rewrite, candidate)
        yield from fresh(rewrite + ", and its trailing newline changed", candidate + b"\n")
    for rewrite, candidate in _form_variants(body):
        yield from fresh(rewrite, candidate)


def _json_variants(body: bytes) -> Iterator[tuple[str, bytes]]:
    """The JSON serialisations a sender commonly signs (keys in the recorded order)."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return
    if not isinstance(value, (dict, list)):
        return
    forms: tuple[tuple[str, dict[str, Any]], ...] = (
        ("was compact", {"separators": (",", ":")}), ("had spaces after , and :", {}),
        ("was indented by 2", {"indent": 2}), ("was indented by 4", {"indent": 4}))
    for name, options in forms:
        text = json.dumps(value, ensure_ascii=False, **options)
        yield f"the JSON was re-serialised (the sender's {name})", text.encode()
        if not text.isascii():  # (else escaping changes nothing)
            escaped = json.dumps(value, ensure_ascii=True, **options)
            yield f"the JSON was re-serialised (the sender's {name}, non-ASCII as \\u escapes)", escaped.encode()


def _form_variants(body: bytes) -> Iterator[tuple[str, bytes]]:
    """A form body as the common encoders write it (spaces as + or %20), fields in the recorded order."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        return
    if "=" not in text or any(c in text for c in "{}[]\r\n\t \""):
        return
    try:
        fields = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        return
    yield "the form body was re-encoded (the sender's spaces were +)", urlencode(fields).encode()
    yield "the form body was re-encoded (the sender's spaces were %20)", urlencode(fields, quote_via=quote).encode()


def _recode(body: bytes, decode_as: str, encode_as: str) -> bytes | None:
    try:
        candidate = body.decode(decode_as).encode(encode_as)
    except (UnicodeDecodeError, UnicodeEncodeError):
        return None
    return candidate if candidate != body else None


def _matches(signed: _Signed, body: bytes, secret: str) -> bool:
    expected = hmac.new(secret.encode(), signed.message(body), signed.digest).hexdigest()
    # Every candidate is compared, so the time taken never says which one matched.
    return any([hmac.compare_digest(expected, given) for given in signed.signatures])


def _time_verdict(provider: str, skew: int, limit: int) -> tuple[str, str]:
    where = f"{_seconds(skew)} {'ahead of' if skew > 0 else 'behind'} the time gotunnel recorded the request"
    if skew < -STALE_AFTER:
        return ("timestamp_outside_tolerance", f"the signature is right but its timestamp is {where} (tolerance "
                f"{limit} s): an old delivery sent again (a retry or a replay), which {_LABEL[provider]}'s libraries "
                "reject; ask the sender for a fresh one")
    cause = ("the sender's clock runs ahead of this machine's (or this one's is behind): sync the clocks (NTP)"
             if skew > 0 else "the request took that long to arrive, or the sender's clock is behind this machine's "
             "(or this one's is ahead): sync the clocks (NTP)")
    return ("clock_skew", f"the signature is right but its timestamp is {where}, over the {limit} s tolerance: "
            f"{cause}")


def _time_note(skew: int | None, limit: int | None) -> str:
    if skew is None or limit is None or abs(skew) <= limit:
        return ""
    return f" (also, its timestamp is {_seconds(skew)} {'ahead of' if skew > 0 else 'behind'} the recording time, " \
           f"over the {limit} s tolerance)"


def _seconds(skew: int) -> str:
    return f"{abs(skew)} s"


def _wrong_kind(provider: str, secret: str) -> str | None:
    return next((kind for prefix, kind in _WRONG_KIND[provider] if secret.startswith(prefix)), None)


def _set(result: Verification, reason: str, detail: str, ok: bool = False) -> Verification:
    result.reason, result.detail, result.ok = reason, detail, ok
    return result


def _check_input(provider: str, secret: str, tolerance: int | None) -> str:
    if provider not in (*PROVIDERS, "auto"):
        raise VerifyInputError(f"unknown provider {provider!r}: use stripe, github, slack or auto")
    if not isinstance(secret, str) or not secret:
        raise VerifyInputError("the secret is empty: give the webhook's signing secret")
    if tolerance is not None and (isinstance(tolerance, bool) or not isinstance(tolerance, int)
                                  or not 0 <= tolerance <= 10 ** 9):
        raise VerifyInputError(f"tolerance {tolerance!r}: must be a whole number of seconds from 0")
    return provider
