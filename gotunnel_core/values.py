"""Parsers for setting and option values, shared by core settings (`config.py`) and engine options
(`options.py`): each takes a raw value (from TOML, the environment or a flag) and returns the typed
value, or raises ValueError with the reason ("must be an integer from 1 to 64"), which the caller
turns into one `error:` line naming the key and the value.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable
from urllib.parse import urlsplit

from .errors import ValidationError

Parser = Callable[[object], Any]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def boolean(raw: object) -> bool:
    """true/false (TOML), or 1/0/true/false/yes/no/on/off (environment)."""
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
        return raw.strip().lower() in _TRUE
    raise ValueError("must be a boolean (1/0/true/false)")


def text(raw: object) -> str:
    """Any string."""
    if not isinstance(raw, str):
        raise ValueError("must be a string")
    return raw


def optional_text(raw: object) -> str | None:
    """Any string; empty means unset."""
    return None if raw is None or raw == "" else text(raw)


def optional_path(raw: object) -> str | None:
    """A file or directory name (`~` expanded); empty means unset."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or "\0" in raw:
        raise ValueError("must be a path")
    return os.path.expanduser(raw)


def choice(*allowed: str) -> Parser:
    """One of `allowed` (case-insensitive)."""

    def parse(raw: object) -> str:
        if not isinstance(raw, str) or raw.lower() not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return raw.lower()

    return parse


def integer(low: int, high: int) -> Parser:
    """A whole number from `low` to `high`."""

    def parse(raw: object) -> int:
        if isinstance(raw, str) and raw.strip().lstrip("-").isdigit():
            raw = int(raw)
        if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
            raise ValueError(f"must be an integer from {low} to {high}")
        return raw

    return parse


def number(low: float, high: float) -> Parser:
    """A number (seconds, usually) from `low` to `high`."""

    def parse(raw: object) -> float:
        if isinstance(raw, str):
            try:
                raw = float(raw)
            except ValueError:
                raise ValueError(f"must be a number from {low:g} to {high:g}") from None
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not low <= raw <= high:
            raise ValueError(f"must be a number from {low:g} to {high:g}")
        return float(raw)

    return parse


def str_list(raw: object) -> list[str]:
    """A list of strings (comma-separated in the environment)."""
    if isinstance(raw, str):
        return [part.strip() for part in raw.split(",") if part.strip()]
    if isinstance(raw, (list, tuple)) and all(isinstance(item, str) for item in raw):
        return [item.strip() for item in raw if item.strip()]
    raise ValueError("must be a list of strings (comma-separated in the environment)")


def optional(parser: Parser) -> Parser:
    """`parser`, except that None or an empty string means unset (None)."""

    def parse(raw: object) -> Any:
        return None if raw is None or raw == "" else parser(raw)

    return parse


#: A Docker image reference: [registry[:port]/]path[:tag][@digest] (distribution/reference's grammar).
_IMAGE_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
#: A registry: `localhost`, a dotted name or a name with a port (else the first part is a path component).
_IMAGE_DOMAIN = rf"(?:(?:localhost|{_IMAGE_LABEL}(?:\.{_IMAGE_LABEL})+)(?::[0-9]+)?/|{_IMAGE_LABEL}:[0-9]+/)"
_IMAGE_REFERENCE = re.compile(
    rf"{_IMAGE_DOMAIN}?{_IMAGE_COMPONENT}(?:/{_IMAGE_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?")


def image_reference(raw: object) -> str | None:
    """A Docker image reference (`nginx:1.28.0`, `registry:5000/team/caddy@sha256:...`); empty means unset."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or len(raw) > 255 or not _IMAGE_REFERENCE.fullmatch(raw):
        raise ValueError("must be a Docker image reference, e.g. nginx:1.28.0")
    return raw


#: An email address as ACME accounts take it: one `@`, no spaces or controls, a dotted domain.
_EMAIL = re.compile(r"[^@{}\s\x00-\x1f\x7f]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


def https_url(raw: object) -> str:
    """An absolute `https://host[:port]/path` URL (an ACME directory): no other scheme, no
    credentials, no whitespace, control characters or braces (which proxies read as placeholders)."""
    reason = "must be an https:// URL, e.g. https://acme-staging-v02.api.letsencrypt.org/directory"
    if not isinstance(raw, str) or any(c.isspace() or ord(c) < 0x20 or c in "\x7f{}" for c in raw):
        raise ValueError(reason)
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - a port that is no number from 0 to 65535 raises here
    except ValueError:
        raise ValueError(reason) from None
    if parts.scheme != "https" or not parts.hostname or parts.username is not None:
        raise ValueError(reason)
    return raw


def email_address(raw: object) -> str:
    """An email address (`ops@example.com`): one `@` and a dotted domain, at most 254 characters."""
    if not isinstance(raw, str) or len(raw) > 254 or not _EMAIL.fullmatch(raw):
        raise ValueError("must be an email address, e.g. ops@example.com")
    return raw


def from_model(parser: Callable[[Any], Any]) -> Parser:
    """Adapt a model parser (which raises ValidationError) to the ValueError protocol here."""

    def parse(raw: object) -> Any:
        try:
            return parser(raw)
        except ValidationError as exc:
            raise ValueError(exc.reason) from None

    return parse
