"""The checks every engine's quoting filters share, whatever its config syntax.

An engine that renders a config (nginx, HAProxy, a third-party one) writes each value from the
route table through a filter of its own syntax; these are the parts that do not depend on it:
control characters are refused everywhere (the models never let them through, so one reaching a
filter is a bug to stop, not to write), and names, `host:port` addresses and integers are
checked, then written bare.
"""

from __future__ import annotations

import ipaddress
import re

_HOSTNAME_RE = re.compile(r"(\*\.)?[a-z0-9]([a-z0-9.-]*[a-z0-9])?")
_ADDRESS_RE = re.compile(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}")


class QuoteError(ValueError):
    """A value that cannot be written into a config safely (a template error: exit 2)."""


def checked_text(value: object, what: str) -> str:
    """`value` as a string free of control characters (CR, LF, NUL, DEL, ...), or QuoteError."""
    if not isinstance(value, str):
        raise QuoteError(f"{what} must be a string, not {type(value).__name__}")
    bad = next((ch for ch in value if ord(ch) < 0x20 or ord(ch) == 0x7F), None)
    if bad is not None:
        raise QuoteError(f"{what} {value!r} contains the control character {bad!r}")
    return value


def host_name(value: object) -> str:
    """A server name (`myapp.localhost`, `*.myapp.local`): lower-case host-name characters only."""
    text = checked_text(value, "server name")
    if not _HOSTNAME_RE.fullmatch(text):
        raise QuoteError(f"server name {text!r} is not a host name")
    return text


def host_port(value: object) -> str:
    """`host:port` or `[v6]:port`, as upstream and listen directives take it."""
    text = checked_text(value, "address")
    if not _ADDRESS_RE.fullmatch(text):
        raise QuoteError(f"address {text!r} is not host:port")
    return text


def integer(value: object) -> str:
    """An int (never a bool) as decimal text."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise QuoteError(f"{value!r} is not an integer")
    return str(value)


def is_ip(host: str) -> bool:
    """Whether a backend host is an IP literal (no TLS name to send for it)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


__all__ = ["QuoteError", "checked_text", "host_name", "host_port", "integer", "is_ip"]
