"""Pure name logic for certificates: suffix validation, SAN lists, safe file names (no cryptography)."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ..errors import ValidationError

#: DNS suffixes every gotunnel CA may sign for (RFC 6761/6762/8375 special-use and private names).
#: A dNSName constraint "localhost" matches "localhost" itself and every subdomain of it
#: (RFC 5280 4.2.1.10; OpenSSL and NSS agree), so no ".localhost" twin is needed.
BUILTIN_SUFFIXES: tuple[str, ...] = ("localhost", "local", "test", "internal", "home.arpa")

#: Loopback, RFC 1918, link-local and unique-local ranges the CA may sign IP SANs for.
PERMITTED_NETWORKS: tuple[str, ...] = (
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
)

#: Suffixes a tunnel name gets in its leaf certificate: NAME.localhost and NAME.local (mDNS).
LEAF_SUFFIXES: tuple[str, ...] = ("localhost", "local")

#: Reserved name of the certificate served for unknown SNI; a tunnel name never starts with "_".
DEFAULT_NAME = "_default"
DEFAULT_DNS_NAMES: tuple[str, ...] = ("localhost",)
DEFAULT_IPS: tuple[str, ...] = ("127.0.0.1", "::1")

_WILDCARD_PREFIX = "_wildcard."
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_ANY_CASE_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")


#: Testing aid: move the certificate code's clock forward (or back) by this many days.
CLOCK_OFFSET_ENV = "GOTUNNEL_CLOCK_OFFSET_DAYS"
#: Testing aid: a file holding that number of days, re-read on every clock reading, so a test can
#: move the clock of an already running daemon (a missing or empty file means no offset).
CLOCK_OFFSET_FILE_ENV = "GOTUNNEL_CLOCK_OFFSET_FILE"


def clock_offset() -> timedelta:
    """The testing clock offset from GOTUNNEL_CLOCK_OFFSET_DAYS plus GOTUNNEL_CLOCK_OFFSET_FILE (0 normally)."""
    days = 0.0
    raw = os.environ.get(CLOCK_OFFSET_ENV, "").strip()
    path = os.environ.get(CLOCK_OFFSET_FILE_ENV, "")
    if path:
        try:
            raw_file = Path(path).read_text().strip()
        except OSError:
            raw_file = ""
        raw = f"{raw} {raw_file}"
    for part in raw.split():
        try:
            days += float(part)
        except ValueError:
            raise ValidationError(CLOCK_OFFSET_ENV, part, "must be a number of days") from None
    return timedelta(days=days)


def utc_now() -> datetime:
    """Default clock: the current time as an aware UTC datetime (injectable so tests can move time).

    GOTUNNEL_CLOCK_OFFSET_DAYS / GOTUNNEL_CLOCK_OFFSET_FILE shift it: a testing aid only, so the
    daemon's renewal can be exercised without waiting 60 days.
    """
    return datetime.now(timezone.utc) + clock_offset()


def validate_suffix(suffix: str) -> str:
    """Return `suffix` if it is a lower-case RFC 1123 host name (e.g. "corp.example"), else raise."""
    if not isinstance(suffix, str) or not suffix:
        raise ValidationError("suffix", suffix, "must be a non-empty DNS name")
    if len(suffix) > 253:
        raise ValidationError("suffix", suffix, "longer than 253 characters")
    labels = suffix.split(".")
    for label in labels:
        if not _LABEL.match(label):
            if _ANY_CASE_LABEL.match(label):
                raise ValidationError("suffix", suffix, "must be lower-case", hint=f"use {suffix.lower()!r}")
            raise ValidationError(
                "suffix",
                suffix,
                "each dot-separated label must be 1-63 letters, digits or inner hyphens",
                hint="write it without leading/trailing dots, e.g. 'corp.example'",
            )
    if labels[-1].isdigit():
        raise ValidationError("suffix", suffix, "the last label must not be numeric (looks like an IP address)")
    if suffix not in BUILTIN_SUFFIXES and _is_public_suffix(suffix):
        raise ValidationError(
            "suffix", suffix,
            "is a public suffix: a CA allowed to sign for it could sign for every site registered under it",
            hint="use a domain you control below it, e.g. 'dev.example.com'",
        )
    return suffix


def _is_public_suffix(name: str) -> bool:
    """True for `com`, `co.uk`, `github.io`...: a name on the Public Suffix List (known rules only,
    so private-use names such as `lan` or `corp` that the list does not know are allowed)."""
    from publicsuffixlist import PublicSuffixList

    return bool(PublicSuffixList(accept_unknown=False).is_public(name))


def normalize_suffixes(extra: Iterable[str]) -> tuple[str, ...]:
    """Validate caller-supplied suffixes and drop duplicates and builtins, keeping order."""
    out: list[str] = []
    for s in extra:
        s = validate_suffix(s)
        if s not in BUILTIN_SUFFIXES and s not in out:
            out.append(s)
    return tuple(out)


def validate_leaf_name(name: str) -> str:
    """Check a tunnel name (`myapp`, `api.myapp`, `*.myapp`) so it can never escape the leaves dir."""
    if name == DEFAULT_NAME:
        return name
    if not isinstance(name, str) or not name:
        raise ValidationError("tunnel name", name, "must be non-empty")
    body = name[2:] if name.startswith("*.") else name
    if not body or len(body) > 200 or not all(_LABEL.match(label) for label in body.split(".")):
        raise ValidationError(
            "tunnel name", name, "expected lower-case DNS labels, optionally prefixed by '*.'"
        )
    return name


def safe_filename(name: str) -> str:
    """Map a tunnel name to a file stem: `*.myapp` -> `_wildcard.myapp`; others unchanged."""
    validate_leaf_name(name)
    if name.startswith("*."):
        return _WILDCARD_PREFIX + name[2:]
    return name


def name_from_filename(stem: str) -> str | None:
    """Inverse of safe_filename; None when the stem is not one of ours."""
    name = "*." + stem[len(_WILDCARD_PREFIX):] if stem.startswith(_WILDCARD_PREFIX) else stem
    try:
        return validate_leaf_name(name)
    except ValidationError:
        return None


def leaf_sans(
    name: str, suffixes: Sequence[str] = LEAF_SUFFIXES
) -> tuple[tuple[str, ...], tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]]:
    """The (DNS names, IP addresses) a leaf for `name` must carry."""
    if name == DEFAULT_NAME:
        return DEFAULT_DNS_NAMES, tuple(ipaddress.ip_address(ip) for ip in DEFAULT_IPS)
    validate_leaf_name(name)
    return tuple(f"{name}.{suffix}" for suffix in suffixes), ()
