"""Quoting of values for HAProxy's configuration syntax; every value that reaches the template passes here.

HAProxy splits a line into words at unquoted spaces; `#` starts a comment, `\\` escapes, double
quotes are "weak" (they still expand `${VAR}` and backslash escapes) and single quotes are
"strong": nothing inside them is interpreted, and quoted parts next to each other form one word.
So a value written inside single quotes, with each `'` written as `'\\''` (close, escaped quote,
reopen), is read back exactly, whatever it holds, and can end neither its word nor its line.

What quoting at the line level cannot neutralise is a word's own syntax:

- log-format words (`http-request set-header` values, `set-path`, `lf-file` pages) expand
  `%[...]`, `%ci` and the like: `hap_lf` writes `%` as `%%` first, so a value stays literal;
- an empty quoted word is dropped by HAProxy's reader: `hap_lf` writes the empty string as the
  expression `%[str()]`, and `hap_str` refuses it;
- names (server names in SNI filters and map keys) are checked against host-name characters and
  written bare, as HAProxy's own map and crt-list readers split on spaces;
- control characters (CR, LF, NUL, ...) are refused everywhere: the models never let them through,
  and a filter that sees one raises rather than writing a broken config.
"""

from __future__ import annotations

import re

from gotunnel_core.quoting import QuoteError, checked_text, host_name, host_port, integer

_PROXY_NAME_RE = re.compile(r"[A-Za-z0-9_.:-]+")
#: Refusals of the filters below (the core's `QuoteError`, shared by every engine's filters).
HAProxyQuoteError = QuoteError
_check = checked_text


def hap_str(value: object) -> str:
    """One word, taken literally: a strongly quoted string (header names, content types, paths)."""
    text = _check(value, "value")
    if not text:
        raise HAProxyQuoteError("an empty word: HAProxy would drop it")
    return "'" + text.replace("'", "'\\''") + "'"


def hap_lf(value: object) -> str:
    """One log-format word whose text stays literal: `%` doubled, then strongly quoted; the empty
    string (which HAProxy would drop as a word) as the expression `%[str()]`."""
    text = _check(value, "value")
    return hap_str(text.replace("%", "%%")) if text else "%[str()]"


def lf_literal(value: str) -> str:
    """Text for a log-format file (`lf-file`): `%` doubled, nothing else changes."""
    return _check_text(value).replace("%", "%%")


def _check_text(value: str) -> str:
    """Page text: newlines and tabs allowed (a page is a file, not a word in a line), other controls refused."""
    for line in value.split("\n"):
        _check(line.replace("\t", " "), "page text")
    return value


#: A host name (`myapp.localhost`, `*.myapp.local`): host-name characters only, bare.
hap_name = host_name


def is_proxy_name(text: str) -> bool:
    """Whether HAProxy accepts `text` as a frontend, backend or server name."""
    return bool(_PROXY_NAME_RE.fullmatch(text))


def hap_proxy(value: object) -> str:
    """A frontend/backend name (HAProxy allows letters, digits and `_.:-`), bare."""
    text = _check(value, "proxy name")
    if not is_proxy_name(text):
        raise HAProxyQuoteError(f"proxy name {text!r} holds characters HAProxy does not allow")
    return text


#: `host:port` or `[v6]:port` for `server` and `bind`, bare; an integer.
hap_address = host_port
hap_int = integer


def hap_ms(value: object) -> str:
    """Seconds (int or float) as HAProxy milliseconds, `1500ms` (at least 1 ms)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise HAProxyQuoteError(f"{value!r} is not a duration in seconds")
    return f"{max(1, round(value * 1000))}ms"


FILTERS = {
    "hap_str": hap_str,
    "hap_lf": hap_lf,
    "hap_name": hap_name,
    "hap_proxy": hap_proxy,
    "hap_address": hap_address,
    "hap_int": hap_int,
    "hap_ms": hap_ms,
}
