"""Validated tunnel models: every value that reaches a template, a socket or a file passes here first.

Each `parse_*` function and `from_raw` constructor takes untrusted input (CLI flags, TOML, JSON
from the daemon socket) and either returns a normalised, immutable value or raises
`ValidationError` naming the field, the bad value and the reason.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit

from .errors import ValidationError

#: Suffixes under which every tunnel answers: `NAME.localhost` (this machine, RFC 6761) and
#: `NAME.local` (the LAN, through mDNS).
NAME_SUFFIXES: tuple[str, ...] = ("localhost", "local")

_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# Path characters: RFC 3986 unreserved, percent-escapes and a conservative set of sub-delims.
# Quotes, backslashes, semicolons, braces, spaces and controls are refused so that a path can
# never end the directive or string it is rendered into.
_PATH_RE = re.compile(r"^/(?:[A-Za-z0-9\-._~!&()*+,=:@/]|%[0-9A-Fa-f]{2})*$")
_MAX_NAME = 253 - len(".localhost")
_MAX_HEADER_VALUE = 4096
#: Backend URL schemes: HTTP/1.1, TLS (ALPN h2 or http/1.1), cleartext HTTP/2 (prior knowledge).
BACKEND_SCHEMES = ("http", "https", "h2c")


def _encode_label(label: str, raw: str) -> str:
    """Lower-case one label and turn a non-ASCII label into its punycode (IDNA 2008) form.

    An ASCII label in punycode form (`xn--...`) must decode to a valid IDN: `xn--zz` would be
    refused by browsers and certificate checks alike, so it is refused here."""
    import idna

    if label.isascii():
        label = label.lower()
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except (idna.IDNAError, UnicodeError) as exc:
                raise ValidationError("tunnel name", raw, f"label {label!r} is not valid punycode ({exc})") from None
        return label

    try:
        return idna.encode(label, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise ValidationError("tunnel name", raw, f"label {label!r} is not a valid IDN ({exc})") from None


def parse_tunnel_name(raw: object) -> str:
    """Normalise a tunnel name (`myapp`, `api.myapp`, `*.myapp`, `Bücher`) or refuse it.

    A trailing `.localhost`/`.local` is accepted and removed, so `-d myapp.local` and `-d myapp`
    name the same tunnel. The result is lower-case ASCII RFC 1123 labels, optionally led by `*.`.
    """
    if not isinstance(raw, str):
        raise ValidationError("tunnel name", raw, "must be a string")
    if raw == "":
        raise ValidationError("tunnel name", raw, "must not be empty")
    if raw != raw.strip() or any(ch.isspace() for ch in raw):
        raise ValidationError("tunnel name", raw, "must not contain whitespace")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in raw):
        raise ValidationError("tunnel name", raw, "must not contain control characters")
    name = raw[:-1] if raw.endswith(".") else raw
    labels = name.split(".")
    wildcard = labels[0] == "*"
    if wildcard:
        labels = labels[1:]
        if not labels:
            raise ValidationError("tunnel name", raw, "a wildcard needs a base name, as in '*.myapp'")
    encoded: list[str] = []
    for label in labels:
        if label == "":
            raise ValidationError("tunnel name", raw, "has an empty label (two dots, or a leading/trailing dot)")
        if label == "*":
            raise ValidationError("tunnel name", raw, "'*' is only allowed as the whole first label, as in '*.myapp'")
        label = _encode_label(label, raw)
        if len(label) > 63:
            raise ValidationError("tunnel name", raw, f"label {label[:20]}... is {len(label)} characters; the limit is 63")
        if not _LABEL_RE.fullmatch(label):
            raise ValidationError(
                "tunnel name",
                raw,
                f"label {label!r} may only hold letters, digits and inner hyphens (RFC 1123)",
            )
        encoded.append(label)
    if encoded[-1] in NAME_SUFFIXES:
        if len(encoded) == 1:
            raise ValidationError("tunnel name", raw, f"'{encoded[0]}' alone is a suffix, not a name")
        encoded.pop()
    result = ".".join((["*"] if wildcard else []) + encoded)
    if len(result) > _MAX_NAME:
        raise ValidationError("tunnel name", raw, f"is {len(result)} characters; the limit is {_MAX_NAME}")
    return result


def parse_path(raw: object, field_name: str = "path") -> str:
    """Validate an absolute URL path (path prefix or health-check path) with a safe character set."""
    if not isinstance(raw, str) or not _PATH_RE.fullmatch(raw):
        raise ValidationError(
            field_name,
            raw,
            "must start with '/' and hold only letters, digits, %XX escapes and -._~!&()*+,=:@/",
        )
    if raw.startswith("//"):
        # RFC 3986: a path without an authority cannot begin with "//"; URL parsers (Caddy's,
        # browsers') read what follows as a host: `//:A/health` is host "", port "A".
        raise ValidationError(field_name, raw, "must not start with '//' (a URL parser reads what follows as a host)")
    if any(seg in (".", "..") for seg in raw.split("/")):
        raise ValidationError(field_name, raw, "must not contain '.' or '..' segments")
    if len(raw) > 1024:
        raise ValidationError(field_name, raw, "is longer than 1024 characters")
    return raw


def parse_port(raw: object, field_name: str = "port") -> int:
    """Accept an int (or a decimal string) in 1..65535."""
    if isinstance(raw, bool):
        raise ValidationError(field_name, raw, "must be a number from 1 to 65535")
    if isinstance(raw, str) and raw.isascii() and raw.isdigit():
        raw = int(raw)
    if not isinstance(raw, int) or not 1 <= raw <= 65535:
        raise ValidationError(field_name, raw, "must be a number from 1 to 65535")
    return raw


def _parse_host(host: str, raw: str) -> str:
    """Validate a backend host: an IP literal or an RFC 1123 host name."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if not host or any(not _LABEL_RE.fullmatch(label) for label in labels):
        raise ValidationError("backend", raw, f"host {host!r} is neither an IP address nor a valid host name")
    return host.rstrip(".").lower()


@dataclass(frozen=True, slots=True)
class Backend:
    """One upstream server of a tunnel: scheme, host, port, optional path prefix and weight.

    Schemes: `http` (HTTP/1.1), `https` (TLS, offered ALPN `h2` and `http/1.1`) and `h2c`
    (cleartext HTTP/2 with prior knowledge, e.g. a gRPC server's insecure port).
    """

    scheme: str
    host: str
    port: int
    path: str = ""
    weight: int = 1

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path}"

    @property
    def address(self) -> str:
        """`host:port` as used by proxies in upstream definitions (IPv6 bracketed)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @classmethod
    def parse(cls, raw: object, weight: object = 1) -> "Backend":
        """Parse `http://host:port/prefix` (also `https://`, `h2c://`; `URL,weight=N`) or a `{url, weight}` mapping.

        Shorthands: `3000` is `http://127.0.0.1:3000`, `host:port` is `http://host:port`."""
        if isinstance(raw, Mapping):
            unknown = set(raw) - {"url", "weight"}
            if unknown:
                raise ValidationError("backend", dict(raw), f"unknown key(s) {', '.join(sorted(unknown))}")
            if "url" not in raw:
                raise ValidationError("backend", dict(raw), "needs a 'url'")
            return cls.parse(raw["url"], raw.get("weight", 1))
        if not isinstance(raw, str):
            raise ValidationError("backend", raw, "must be a URL string such as http://127.0.0.1:3000")
        url = raw
        if "," in raw:
            url, _, option = raw.partition(",")
            key, sep, value = option.partition("=")
            if key.strip() != "weight" or not sep:
                raise ValidationError("backend", raw, "the only option is ',weight=N'")
            weight = value.strip()
        url = expand_backend_shorthand(url)
        if any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in url) or any(ch in url for ch in "\"'\\{};<>`"):
            raise ValidationError("backend", raw, "contains whitespace, control or quoting characters")
        try:
            parts = urlsplit(url)
        except ValueError as exc:  # e.g. an unbalanced '[' ("Invalid IPv6 URL")
            raise ValidationError("backend", raw, f"is not a URL ({exc})") from None
        if parts.scheme not in BACKEND_SCHEMES:
            raise ValidationError("backend", raw, "scheme must be http, https or h2c")
        if parts.username is not None or parts.password is not None:
            raise ValidationError("backend", raw, "credentials in the URL are not supported")
        if parts.query or parts.fragment or url.endswith(("?", "#")):
            raise ValidationError("backend", raw, "must not have a query or fragment")
        try:
            port = parts.port
        except ValueError:
            raise ValidationError("backend", raw, "port must be a number from 1 to 65535") from None
        if port is None:
            if parts.netloc.endswith(":"):
                raise ValidationError("backend", raw, "port must be a number from 1 to 65535")
            port = 443 if parts.scheme == "https" else 80
        if port == 0:
            raise ValidationError("backend", raw, "port must be a number from 1 to 65535")
        host = _parse_host(parts.hostname or "", raw)
        path = parts.path.rstrip("/")
        if path:
            path = parse_path(path, "backend path")
        return cls(parts.scheme, host, port, path, parse_weight(weight))


def expand_backend_shorthand(raw: str) -> str:
    """`3000` -> `http://127.0.0.1:3000`; `host:port[/path]` -> `http://host:port[/path]`; URLs unchanged."""
    if "://" in raw:
        return raw
    if raw.isascii() and raw.isdigit():
        return f"http://127.0.0.1:{raw}"
    if _SHORTHAND_AUTHORITY.fullmatch(raw.split("/", 1)[0]):  # a port is required: `A` is no shorthand
        return "http://" + raw
    return raw


_SHORTHAND_AUTHORITY = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[^:/\[\]]+):[0-9]+")


def parse_weight(raw: object) -> int:
    """A backend weight: an integer from 1 to 1000."""
    if isinstance(raw, str) and raw.isascii() and raw.isdigit():
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= 1000:
        raise ValidationError("weight", raw, "must be an integer from 1 to 1000")
    return raw


def _number(raw: object, field_name: str, low: float, high: float) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not low <= raw <= high:
        raise ValidationError(field_name, raw, f"must be a number from {low:g} to {high:g}")
    return float(raw)


def _count(raw: object, field_name: str, low: int, high: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
        raise ValidationError(field_name, raw, f"must be an integer from {low} to {high}")
    return raw


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """Active health check: GET `path` every `interval` seconds; thresholds flip a backend's state."""

    path: str = "/"
    interval: float = 5.0
    timeout: float = 2.0
    healthy_threshold: int = 2
    unhealthy_threshold: int = 2

    @classmethod
    def parse(cls, raw: object) -> "HealthCheck":
        """Accept a path string (`/health`) or a table `{path, interval, timeout, healthy_threshold, unhealthy_threshold}`."""
        if isinstance(raw, str):
            return cls(path=parse_path(raw, "health path"))
        if not isinstance(raw, Mapping):
            raise ValidationError("health", raw, "must be a path or a table")
        allowed = {"path", "interval", "timeout", "healthy_threshold", "unhealthy_threshold"}
        unknown = set(raw) - allowed
        if unknown:
            raise ValidationError("health", dict(raw), f"unknown key(s) {', '.join(sorted(unknown))}")
        check = cls(
            path=parse_path(raw.get("path", "/"), "health path"),
            interval=_number(raw.get("interval", 5.0), "health interval", 0.1, 3600),
            timeout=_number(raw.get("timeout", 2.0), "health timeout", 0.05, 600),
            healthy_threshold=_count(raw.get("healthy_threshold", 2), "health healthy_threshold", 1, 100),
            unhealthy_threshold=_count(raw.get("unhealthy_threshold", 2), "health unhealthy_threshold", 1, 100),
        )
        return check

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "interval": self.interval,
            "timeout": self.timeout,
            "healthy_threshold": self.healthy_threshold,
            "unhealthy_threshold": self.unhealthy_threshold,
        }


def parse_header_name(raw: object) -> str:
    """An RFC 9110 token; returned as given (engines compare case-insensitively)."""
    if not isinstance(raw, str) or not _HEADER_NAME_RE.fullmatch(raw) or len(raw) > 256:
        raise ValidationError("header name", raw, "must be an HTTP token (letters, digits, !#$%&'*+-.^_`|~)")
    return raw


def parse_header_value(raw: object) -> str:
    """Printable ASCII and inner spaces only: no CR, LF, NUL, other controls or non-ASCII bytes."""
    if not isinstance(raw, str):
        raise ValidationError("header value", raw, "must be a string")
    if len(raw) > _MAX_HEADER_VALUE:
        raise ValidationError("header value", raw, f"is longer than {_MAX_HEADER_VALUE} characters")
    if any(not (0x20 <= ord(ch) < 0x7F) for ch in raw):
        raise ValidationError("header value", raw, "must hold printable ASCII only (no newlines or control characters)")
    if raw != raw.strip(" "):
        raise ValidationError("header value", raw, "must not start or end with a space")
    return raw


#: Headers a header rule may neither set nor remove: they frame the message or route it, and the
#: proxy writes them itself (a rule `Content-Length: 20` once sent a 3-byte body as 20 bytes on a
#: reused connection). `Gotunnel-Hop` is the proxy's loop marker (see `loops.py`).
RESERVED_HEADERS = frozenset({
    "host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer",
    "keep-alive", "proxy-connection", "gotunnel-hop",
})


def _rule_header_name(raw: object, direction: str) -> str:
    name = parse_header_name(raw)
    if name.lower() in RESERVED_HEADERS:
        raise ValidationError(f"headers.{direction} header", name,
                              "frames or routes the message, so the proxy sets it itself; a header rule may not set or remove it")
    return name


@dataclass(frozen=True, slots=True)
class HeaderOps:
    """Header rules for one direction: headers to set (replacing) and header names to remove."""

    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()

    @classmethod
    def parse(cls, raw: object, direction: str) -> "HeaderOps":
        if not isinstance(raw, Mapping):
            raise ValidationError(f"headers.{direction}", raw, "must be a table with 'add' and/or 'remove'")
        unknown = set(raw) - {"add", "remove"}
        if unknown:
            raise ValidationError(f"headers.{direction}", dict(raw), f"unknown key(s) {', '.join(sorted(unknown))}")
        add_raw = raw.get("add", {})
        if not isinstance(add_raw, Mapping):
            raise ValidationError(f"headers.{direction}.add", add_raw, "must be a table of name = value")
        remove_raw = raw.get("remove", [])
        if not isinstance(remove_raw, Sequence) or isinstance(remove_raw, str):
            raise ValidationError(f"headers.{direction}.remove", remove_raw, "must be a list of header names")
        add = tuple(sorted((_rule_header_name(k, direction), parse_header_value(v)) for k, v in add_raw.items()))
        remove = tuple(sorted({_rule_header_name(name, direction) for name in remove_raw}))
        return cls(add, remove)

    def to_dict(self) -> dict[str, Any]:
        return {"add": dict(self.add), "remove": list(self.remove)}


@dataclass(frozen=True, slots=True)
class HeaderRules:
    """Per-tunnel header rules for the request sent upstream and the response sent back."""

    request: HeaderOps = field(default_factory=HeaderOps)
    response: HeaderOps = field(default_factory=HeaderOps)

    @classmethod
    def parse(cls, raw: object) -> "HeaderRules":
        if not isinstance(raw, Mapping):
            raise ValidationError("headers", raw, "must be a table with 'request' and/or 'response'")
        unknown = set(raw) - {"request", "response"}
        if unknown:
            raise ValidationError("headers", dict(raw), f"unknown key(s) {', '.join(sorted(unknown))}")
        return cls(
            HeaderOps.parse(raw.get("request", {}), "request"),
            HeaderOps.parse(raw.get("response", {}), "response"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"request": self.request.to_dict(), "response": self.response.to_dict()}


#: `host_header` modes besides a literal value: the client's Host, or the chosen backend's `host:port`.
HOST_HEADER_MODES: tuple[str, ...] = ("preserve", "backend")
_HOST_PORT_RE = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]]+)(?::(?P<port>[0-9]{1,5}))?")


def parse_host_header(raw: object) -> str:
    """`preserve` (the client's Host, the default), `backend` (the backend's `host:port`), or a
    literal `host[:port]` sent upstream as Host (a host name or IP literal; IPv6 in brackets)."""
    if not isinstance(raw, str):
        raise ValidationError("host_header", raw, "must be 'preserve', 'backend' or a host[:port]")
    if raw in HOST_HEADER_MODES:
        return raw
    match = _HOST_PORT_RE.fullmatch(raw)
    if match is None:
        raise ValidationError("host_header", raw, "must be 'preserve', 'backend' or a host[:port] such as example.test:3000")
    host, port = match.group("host"), match.group("port")
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValidationError("host_header", raw, f"{host} is not an IPv6 address") from None
    else:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            labels = host.lower().rstrip(".").split(".")
            if any(not _LABEL_RE.fullmatch(label) for label in labels) or len(host) > 253:
                raise ValidationError("host_header", raw, f"{host!r} is neither an IP address nor a valid host name "
                                      "(letters, digits, inner hyphens and dots)") from None
    if port is not None and not 1 <= int(port) <= 65535:
        raise ValidationError("host_header", raw, "port must be a number from 1 to 65535")
    return raw.lower()


_MAX_PUBLIC_HOST = 253


def parse_public_host(raw: object, field_name: str = "host") -> str:
    """A real DNS name for a proxy gotunnel does not run (`api.example.com`, `*.api.example.com`,
    `bücher.example`): lower-case ASCII (IDNA 2008) labels, optionally led by one `*.`. Unlike
    tunnel names nothing is stripped or added; an IP address is refused (it is no server name)."""
    if not isinstance(raw, str) or raw == "":
        raise ValidationError(field_name, raw, "must be a non-empty DNS name such as api.example.com")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in raw):
        raise ValidationError(field_name, raw, "must not contain whitespace or control characters")
    name = raw[:-1] if raw.endswith(".") else raw
    labels = name.split(".")
    wildcard = labels[0] == "*"
    if wildcard:
        labels = labels[1:]
    if wildcard and not labels:
        raise ValidationError(field_name, raw, "a wildcard needs a base name, as in '*.example.com'")
    encoded: list[str] = []
    for label in labels:
        if label == "":
            raise ValidationError(field_name, raw, "has an empty label (two dots, or a leading/trailing dot)")
        if label == "*":
            raise ValidationError(field_name, raw, "'*' is only allowed as the whole first label, as in '*.example.com'")
        try:
            label = _encode_label(label, raw)
        except ValidationError as exc:
            raise ValidationError(field_name, raw, exc.reason) from None
        if len(label) > 63 or not _LABEL_RE.fullmatch(label):
            raise ValidationError(field_name, raw, f"label {label[:63]!r} is not a DNS label "
                                  "(1-63 letters, digits and inner hyphens)")
        encoded.append(label)
    if encoded[-1].isdigit():
        raise ValidationError(field_name, raw, "must be a DNS name, not an address (its last label is all digits)")
    result = ".".join((["*"] if wildcard else []) + encoded)
    if len(result) > _MAX_PUBLIC_HOST:
        raise ValidationError(field_name, raw, f"is {len(result)} characters; the limit is {_MAX_PUBLIC_HOST}")
    return result


def parse_domain_template(raw: object) -> str:
    """`domain_template`, such as `{name}.dev.example.com`: it must hold `{name}` once and give a
    valid DNS name for a tunnel name (checked with `app`)."""
    if not isinstance(raw, str) or raw.count("{name}") != 1:
        raise ValidationError("domain_template", raw, "must contain {name} exactly once, as in '{name}.dev.example.com'")
    sample = raw.replace("{name}", "app")
    if "{" in sample or "}" in sample:
        raise ValidationError("domain_template", raw, "the only placeholder is {name}")
    try:
        parse_public_host(sample, "domain_template")
    except ValidationError as exc:
        raise ValidationError("domain_template", raw, exc.reason) from None
    return raw.lower()


#: `tls` modes besides `{cert, key}`: the proxy gets certificates itself, or TLS ends elsewhere.
TLS_MODES: tuple[str, ...] = ("acme", "off")


@dataclass(frozen=True, slots=True)
class TlsPolicy:
    """How a proxy gotunnel does not run serves a tunnel's real names: `files` (the user's PEM
    `cert` and `key`), `acme` (the engine gets certificates itself, as Caddy does) or `off`."""

    mode: str
    cert: str = ""
    key: str = ""

    @classmethod
    def parse(cls, raw: object) -> "TlsPolicy":
        """`"acme"`, `"off"` or a table `{cert = PATH, key = PATH}` (paths checked later, where
        the config file's directory is known)."""
        if isinstance(raw, str):
            if raw.lower() in TLS_MODES:
                return cls(raw.lower())
            raise ValidationError("tls", raw, "must be 'acme', 'off' or a table {cert = PATH, key = PATH}")
        if not isinstance(raw, Mapping):
            raise ValidationError("tls", raw, "must be 'acme', 'off' or a table {cert = PATH, key = PATH}")
        unknown = set(raw) - {"cert", "key"}
        if unknown or "cert" not in raw or "key" not in raw:
            raise ValidationError("tls", dict(raw), "a table needs exactly the keys 'cert' and 'key'")
        paths = []
        for key in ("cert", "key"):
            value = raw[key]
            if not isinstance(value, str) or not value or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
                raise ValidationError(f"tls.{key}", value, "must be a file name without control characters")
            paths.append(value)
        return cls("files", paths[0], paths[1])

    def to_raw(self) -> Any:
        """The form `parse` accepts."""
        return {"cert": self.cert, "key": self.key} if self.mode == "files" else self.mode


_TUNNEL_KEYS = {"name", "backends", "https", "redirect_https", "redirect_code", "health", "headers",
                "upstream_timeout", "lan", "host_header", "hosts", "tls", "inspect"}
#: Redirect codes `redirect_https` may use: both keep the method and body. 307 (the default) is
#: temporary, so a browser does not remember it after the project stops redirecting; 308 is cached.
REDIRECT_CODES = (307, 308)


@dataclass(frozen=True, slots=True)
class Tunnel:
    """A named route: `NAME.localhost` and `NAME.local` proxied to one or more backends.

    `upstream_timeout` (seconds to the backend's first response byte, then 504) overrides the
    global setting when set; `lan = False` keeps the tunnel to loopback clients (no `.local`).
    """

    name: str
    backends: tuple[Backend, ...]
    https: bool = True
    redirect_https: bool = False
    health: HealthCheck | None = None
    headers: HeaderRules = field(default_factory=HeaderRules)
    redirect_code: int = 307
    upstream_timeout: float | None = None
    lan: bool = True
    #: What the backend sees as Host: `preserve`, `backend` or a literal `host[:port]` (`parse_host_header`).
    host_header: str = "preserve"
    #: Record this tunnel's requests for the dashboard's inspector (`gotunnel_core.inspect`).
    inspect: bool = False
    #: Real DNS names for a proxy gotunnel does not run (`render --for existing`, `sync`); the
    #: daemon's own engines serve only `hostnames`, and the local CA never signs these.
    hosts: tuple[str, ...] = ()
    #: TLS for those names; None: the `tls` setting decides.
    tls: TlsPolicy | None = None

    @property
    def is_wildcard(self) -> bool:
        return self.name.startswith("*.")

    @property
    def hostnames(self) -> tuple[str, ...]:
        """Every host name this tunnel answers on, e.g. `myapp.localhost`, `myapp.local`."""
        return tuple(f"{self.name}.{suffix}" for suffix in NAME_SUFFIXES)

    def same_backends(self, other: "Tunnel") -> bool:
        """Whether `other` proxies to exactly the same backends (URLs and weights, any order)."""
        return sorted((b.url, b.weight) for b in self.backends) == sorted((b.url, b.weight) for b in other.backends)

    @classmethod
    def from_raw(cls, raw: object) -> "Tunnel":
        """Build from a config-file table or API payload; refuses unknown keys and bad values."""
        if not isinstance(raw, Mapping):
            raise ValidationError("tunnel", raw, "must be a table")
        unknown = set(raw) - _TUNNEL_KEYS
        if unknown:
            raise ValidationError("tunnel", raw.get("name", "?"), f"unknown key(s) {', '.join(sorted(unknown))}")
        if "name" not in raw:
            raise ValidationError("tunnel", dict(raw), "needs a 'name'")
        name = parse_tunnel_name(raw["name"])
        backends_raw = raw.get("backends")
        if isinstance(backends_raw, (str, Mapping)):
            backends_raw = [backends_raw]  # API convenience; a config file must give a list (config.py)
        if not isinstance(backends_raw, Sequence) or not backends_raw:
            raise ValidationError("backends", backends_raw, f"tunnel {name!r} needs at least one backend URL")
        backends = tuple(Backend.parse(item) for item in backends_raw)
        if len(backends) > 64:
            raise ValidationError("backends", len(backends), "at most 64 backends per tunnel")
        health_raw = raw.get("health")
        https = _bool(raw.get("https", True), "https")
        redirect = _bool(raw.get("redirect_https", False), "redirect_https")
        if redirect and not https:
            raise ValidationError("redirect_https", True, f"tunnel {name!r} has HTTPS off (https = false, --no-https): "
                                  "there is nothing to redirect to")
        code = raw.get("redirect_code", 307)
        if "redirect_code" in raw and not redirect:
            raise ValidationError("redirect_code", code, f"tunnel {name!r} does not redirect to HTTPS (redirect_https)")
        if isinstance(code, bool) or code not in REDIRECT_CODES:
            raise ValidationError("redirect_code", code, "must be 307 (temporary, the default) or 308 (permanent)")
        timeout = raw.get("upstream_timeout")
        hosts_raw = raw.get("hosts", [])
        if isinstance(hosts_raw, str) or not isinstance(hosts_raw, Sequence):
            raise ValidationError("hosts", hosts_raw, f"tunnel {name!r}: must be a list of DNS names")
        hosts = tuple(dict.fromkeys(parse_public_host(h) for h in hosts_raw))
        tls_raw = raw.get("tls")
        return cls(
            name=name,
            backends=backends,
            https=https,
            redirect_https=redirect,
            health=None if health_raw is None else HealthCheck.parse(health_raw),
            headers=HeaderRules.parse(raw.get("headers", {})),
            redirect_code=code,
            upstream_timeout=None if timeout is None else parse_upstream_timeout(timeout),
            lan=_bool(raw.get("lan", True), "lan"),
            host_header=parse_host_header(raw.get("host_header", "preserve")),
            inspect=_bool(raw.get("inspect", False), "inspect"),
            hosts=hosts,
            tls=None if tls_raw is None else TlsPolicy.parse(tls_raw),
        )

    def upstream_host(self, client_host: str, backend: Backend) -> str:
        """The Host header `backend` receives for a request that arrived with `client_host`."""
        if self.host_header == "preserve":
            return client_host
        if self.host_header == "backend":
            return backend.address
        return self.host_header

    def to_dict(self) -> dict[str, Any]:
        """The canonical JSON form (what `from_raw` accepts and the state file stores)."""
        out: dict[str, Any] = {
            "name": self.name,
            "backends": [{"url": b.url, "weight": b.weight} for b in self.backends],
            "https": self.https,
            "redirect_https": self.redirect_https,
            "health": None if self.health is None else self.health.to_dict(),
            "headers": self.headers.to_dict(),
            "upstream_timeout": self.upstream_timeout,
            "lan": self.lan,
            "host_header": self.host_header,
            # only when on: state files and team peers of versions without the inspector still read it
            **({"inspect": True} if self.inspect else {}),
            **({"hosts": list(self.hosts)} if self.hosts else {}),
            **({"tls": self.tls.to_raw()} if self.tls is not None else {}),
        }
        if self.redirect_https:
            out["redirect_code"] = self.redirect_code
        return out


def parse_upstream_timeout(raw: object, field_name: str = "upstream_timeout") -> float:
    """Seconds a backend may take to its first response byte: 0.1 to 86400."""
    return _number(raw, field_name, 0.1, 86400)


def _bool(raw: object, field_name: str) -> bool:
    if not isinstance(raw, bool):
        raise ValidationError(field_name, raw, "must be true or false")
    return raw


@dataclass(frozen=True, slots=True)
class CertFiles:
    """PEM paths of a certificate and its key, as engines load them."""

    cert: str
    key: str


@dataclass(frozen=True, slots=True)
class Listen:
    """Where the engine listens: one HTTP and one HTTPS port on one address."""

    bind: str = "0.0.0.0"
    http_port: int = 8080
    https_port: int = 8443


#: The loop marker of tables built without a daemon's own id (see `loops.py`).
DEFAULT_HOP_ID = "gotunnel"
_HOP_ID_RE = re.compile(r"^[A-Za-z0-9-]{1,64}$")


@dataclass(frozen=True, slots=True)
class RouteTable:
    """Everything an engine needs to serve: listeners, tunnels and each tunnel's certificate.

    `certs` maps a tunnel name to its certificate files; `default_cert` is served for an SNI
    name that matches no tunnel (so the 404 page works over HTTPS too). `upstream_timeout` is
    the time to a backend's first response byte for tunnels without their own; `hop_id` is
    this gotunnel's loop marker (`loops.py`); `mdns`/`hosts` say whether `NAME.local` resolves
    (announced on the LAN / written into this machine's hosts file), for the 404 page's links.
    """

    listen: Listen
    tunnels: tuple[Tunnel, ...] = ()
    certs: Mapping[str, CertFiles] = field(default_factory=dict)
    default_cert: CertFiles | None = None
    upstream_timeout: float = 60.0
    hop_id: str = DEFAULT_HOP_ID
    mdns: bool = True
    hosts: bool = False

    def by_name(self) -> dict[str, Tunnel]:
        return {t.name: t for t in self.tunnels}

    def timeout_of(self, tunnel: Tunnel) -> float:
        """The tunnel's upstream timeout: its own, else the table's."""
        return self.upstream_timeout if tunnel.upstream_timeout is None else tunnel.upstream_timeout

    def to_dict(self) -> dict[str, Any]:
        return {
            "listen": {"bind": self.listen.bind, "http_port": self.listen.http_port, "https_port": self.listen.https_port},
            "tunnels": [t.to_dict() for t in self.tunnels],
            "certs": {name: {"cert": c.cert, "key": c.key} for name, c in sorted(self.certs.items())},
            "default_cert": None if self.default_cert is None else {"cert": self.default_cert.cert, "key": self.default_cert.key},
            "upstream_timeout": self.upstream_timeout,
            "hop_id": self.hop_id,
            "mdns": self.mdns,
            "hosts": self.hosts,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "RouteTable":
        """Inverse of `to_dict`; tunnels are re-validated."""
        listen = raw["listen"]
        default = raw.get("default_cert")
        return cls(
            listen=Listen(str(listen["bind"]), parse_port(listen["http_port"]), parse_port(listen["https_port"])),
            tunnels=tuple(Tunnel.from_raw(t) for t in raw.get("tunnels", [])),
            certs={name: CertFiles(c["cert"], c["key"]) for name, c in raw.get("certs", {}).items()},
            default_cert=None if default is None else CertFiles(default["cert"], default["key"]),
            upstream_timeout=parse_upstream_timeout(raw.get("upstream_timeout", 60.0)),
            hop_id=parse_hop_id(raw.get("hop_id", DEFAULT_HOP_ID)),
            mdns=_bool(raw.get("mdns", True), "mdns"),
            hosts=_bool(raw.get("hosts", False), "hosts"),
        )


def parse_hop_id(raw: object) -> str:
    """A loop marker: letters, digits and hyphens (it is rendered into engine configs)."""
    if not isinstance(raw, str) or not _HOP_ID_RE.match(raw):
        raise ValidationError("hop id", raw, "must be 1 to 64 letters, digits or hyphens")
    return raw


def parse_bind(raw: object) -> str:
    """A listen address: an IPv4 or IPv6 literal."""
    try:
        return str(ipaddress.ip_address(str(raw)))
    except ValueError:
        raise ValidationError("bind address", raw, "must be an IP address such as 0.0.0.0 or 127.0.0.1") from None
