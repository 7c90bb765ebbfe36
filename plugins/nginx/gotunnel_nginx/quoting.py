"""Quoting of values for nginx configuration syntax; every value that reaches a template passes here.

nginx reads a double-quoted token up to the next unescaped `"`, turning `\\"` into `"` and `\\\\`
into `\\`; inside quotes `;`, `{`, `}`, `#` and spaces are plain characters. So a quoted value
with `\\` and `"` escaped cannot end its token, its directive or its block. What quoting cannot
neutralise is `$`: directives that accept variables expand `$name` even inside quotes. So:

- `ngx_str` (values of variable-expanding directives: `proxy_set_header`, `add_header`)
  writes `$` as `${gt_dollar}`, a variable the config defines (with `geo`) as a literal `$`;
- `ngx_lit` (literal-only positions: header names in `proxy_set_header`, `add_header`,
  `proxy_hide_header`) keeps `$` as is;
- `ngx_path` (file names: `ssl_certificate`, `alias`, which may expand variables) refuses `$`;
- `ngx_name` (server names, upstream hosts) accepts only host-name characters, unquoted.

Control characters (CR, LF, NUL, ...) are refused everywhere: the models never let them through,
and a template filter that sees one raises rather than writing a broken config.
"""

from __future__ import annotations

from gotunnel_core.quoting import QuoteError, checked_text, host_name, host_port, integer

#: Refusals of the filters below (the core's `QuoteError`; the name is kept for nginx's callers).
NginxQuoteError = QuoteError
_check = checked_text


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def ngx_str(value: object, dollar: str = "gt_dollar") -> str:
    """A quoted string for a directive that expands variables; `$` stays a literal `$` (written
    as the variable `dollar`, which the config defines as `$`)."""
    text = _check(value, "value")
    return '"' + _escape(text).replace("$", "${" + dollar + "}") + '"'


def ngx_str_inner(value: object, dollar: str = "gt_dollar") -> str:
    """`ngx_str` without the surrounding quotes, to build one quoted token from several parts."""
    return ngx_str(value, dollar)[1:-1]


#: The `$` variable in configs for an existing nginx, where every name starts with `gotunnel_`.
EXISTING_DOLLAR = "gotunnel_dollar"


def ngx_str_existing(value: object) -> str:
    """`ngx_str` for an existing nginx (`$` as `${gotunnel_dollar}`)."""
    return ngx_str(value, EXISTING_DOLLAR)


def ngx_str_inner_existing(value: object) -> str:
    """`ngx_str_inner` for an existing nginx."""
    return ngx_str_inner(value, EXISTING_DOLLAR)


def ngx_lit(value: object) -> str:
    """A quoted string for a position nginx takes literally (no variable expansion)."""
    return '"' + _escape(_check(value, "value")) + '"'


def ngx_path(value: object) -> str:
    """A quoted file name; `$` is refused because these directives may expand variables."""
    text = _check(value, "path")
    if "$" in text:
        raise NginxQuoteError(f"path {text!r} contains '$', which nginx would read as a variable; "
                              "use a state directory without '$'")
    return '"' + _escape(text) + '"'


#: A server name (`myapp.localhost`, `*.myapp.local`): host-name characters only.
ngx_name = host_name


def ngx_wildcard(value: object) -> str:
    """`*.myapp.localhost` as a quoted server_name regex that matches exactly one label in place
    of `*` (like the builtin engine and like a wildcard certificate), where nginx's own
    `*.myapp.localhost` would also match `a.b.myapp.localhost`."""
    text = ngx_name(value)
    if not text.startswith("*."):
        raise NginxQuoteError(f"server name {text!r} is not a wildcard")
    return '"~^[^.]+' + text[1:].replace(".", "\\.") + '$"'


def ngx_sni_regex(value: object) -> str:
    """The server names of one tunnel as a quoted, case-insensitive regex that also matches no SNI
    at all, for `if ($ssl_server_name !~* ...)`: built only from checked host names."""
    if not isinstance(value, (list, tuple)) or not value:
        raise NginxQuoteError(f"{value!r} is not a list of server names")
    parts = []
    for name in value:
        text = ngx_name(name)
        if text.startswith("*."):
            parts.append("[^.]+" + text[1:].replace(".", "\\."))
        else:
            parts.append(text.replace(".", "\\."))
    return '"^(?:' + "|".join(parts) + ')?$"'


def ngx_cidr(value: object) -> str:
    """An IPv4/IPv6 network (`127.0.0.0/8`) for a `geo` block, unquoted."""
    import ipaddress

    text = _check(value, "network")
    try:
        return str(ipaddress.ip_network(text))
    except ValueError:
        raise NginxQuoteError(f"{text!r} is not an IP network") from None


#: `host:port` or `[v6]:port` for `server` and `listen`; an integer.
ngx_address = host_port
ngx_int = integer


FILTERS = {
    "ngx_str": ngx_str,
    "ngx_str_inner": ngx_str_inner,
    "ngx_lit": ngx_lit,
    "ngx_path": ngx_path,
    "ngx_name": ngx_name,
    "ngx_wildcard": ngx_wildcard,
    "ngx_sni_regex": ngx_sni_regex,
    "ngx_address": ngx_address,
    "ngx_int": ngx_int,
    "ngx_cidr": ngx_cidr,
}
#: The same filters for configs meant for an nginx gotunnel does not run.
EXISTING_FILTERS = {**FILTERS, "ngx_str": ngx_str_existing, "ngx_str_inner": ngx_str_inner_existing}
