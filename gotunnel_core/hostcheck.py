"""Does the backend accept the Host it will get through the tunnel? Dev servers often refuse names
they do not know (Vite's `allowedHosts`, Django's `ALLOWED_HOSTS`, Rails' `config.hosts`), which
looks like a broken tunnel. `check_tunnel` sends one GET with exactly the Host the engine sends
(after `host_header`) straight to the backend, recognises those frameworks' refusal pages and
returns the framework with its one-line fix. `start`, `run` and `doctor` show the result.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .models import Backend, Listen, Tunnel

#: Keys a tunnel's description (`start`/`list`) adds to its canonical form (`Tunnel.to_dict`).
DESCRIPTION_ONLY = frozenset({"urls", "source"})

#: The probe's User-Agent, so a test backend (or a log reader) can tell it from a client's request.
USER_AGENT = "gotunnel-hostcheck"

#: How much of the answer is read (the refusal text is near the top), and how long we wait.
READ_LIMIT = 64 * 1024
TIMEOUT = 3.0


@dataclass(frozen=True)
class Refusal:
    """A backend refused a Host the tunnel sends it."""

    tunnel: str
    framework: str
    host: str
    status: int
    fix: str

    def message(self) -> str:
        return f"tunnel {self.tunnel!r}: the backend ({self.framework}) refuses the Host {self.host!r} (HTTP {self.status})"

    def to_dict(self) -> dict[str, object]:
        return {"tunnel": self.tunnel, "framework": self.framework, "host": self.host, "status": self.status,
                "fix": self.fix}


def _signatures() -> list[tuple[str, Callable[[int, bytes], bool], str]]:
    from .devloop.frameworks import DJANGO_FIX, RAILS_FIX, VITE_FIX

    return [
        ("Vite", lambda status, body: status == 403 and b"Blocked request. This host" in body, VITE_FIX),
        ("Django", lambda status, body: status == 400 and (b"DisallowedHost" in body
                                                           or b"Invalid HTTP_HOST header" in body), DJANGO_FIX),
        ("Rails", lambda status, body: status == 403 and b"Blocked host" in body, RAILS_FIX),
    ]


def recognise(status: int, body: bytes) -> tuple[str, str] | None:
    """(framework, fix) when `status`/`body` is a known framework's unknown-Host refusal."""
    for name, matches, fix in _signatures():
        if matches(status, body):
            return name, fix
    return None


def fetch(backend: Backend, host: str, timeout: float = TIMEOUT) -> tuple[int, bytes] | None:
    """One `GET /` to the backend with `Host: host` (http.client, exactly that Host): (status, the
    start of the body), or None when it does not answer like an HTTP server."""
    import http.client

    conn: http.client.HTTPConnection
    if backend.scheme == "https":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # local dev backends use self-signed certificates
        conn = http.client.HTTPSConnection(backend.host, backend.port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(backend.host, backend.port, timeout=timeout)
    try:
        conn.putrequest("GET", (backend.path or "") + "/", skip_host=True, skip_accept_encoding=True)
        for name, value in (("Host", host), ("Accept", "text/html,*/*"), ("User-Agent", USER_AGENT),
                            ("Connection", "close")):
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read(READ_LIMIT)
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def client_hosts(tunnel: Tunnel, listen: Listen, mdns: bool) -> list[str]:
    """The Host headers browsers send for the tunnel (HTTPS port when it serves HTTPS)."""
    port = listen.https_port if tunnel.https else listen.http_port
    suffix = "" if port in (80, 443) else f":{port}"
    base = tunnel.name.replace("*", "gotunnel-check", 1)
    return [f"{base}.localhost{suffix}"] + ([f"{base}.local{suffix}"] if mdns else [])


def check_tunnel(tunnel: Tunnel, listen: Listen, *, mdns: bool) -> list[Refusal]:
    """The refusals of the tunnel's first backend for each of its names (empty: all accepted, or
    the backend is not a framework we recognise)."""
    backend = tunnel.backends[0]
    refusals: list[Refusal] = []
    for client_host in client_hosts(tunnel, listen, mdns):
        host = tunnel.upstream_host(client_host, backend)
        answer = fetch(backend, host)
        known = recognise(*answer) if answer is not None else None
        if answer is not None and known is not None:
            refusals.append(Refusal(tunnel.name, known[0], host, answer[0], known[1]))
    return refusals


def check_described(described: list[dict[str, Any]], daemon: Mapping[str, Any]) -> list[Refusal]:
    """`check_tunnel` for tunnels as the daemon describes them (`start`/`list` results), with the
    listen ports and mDNS setting its `ping` reports."""
    listen = Listen(str(daemon["bind"]), int(daemon["http_port"]), int(daemon["https_port"]))
    refusals: list[Refusal] = []
    for item in described:
        raw = {k: v for k, v in item.items() if k not in DESCRIPTION_ONLY}
        # `list` describes each backend with whether it answers (`problem`): not part of the tunnel
        raw["backends"] = [{k: v for k, v in b.items() if k != "problem"} if isinstance(b, dict) else b
                           for b in item.get("backends", [])]
        refusals += check_tunnel(Tunnel.from_raw(raw), listen, mdns=bool(daemon.get("mdns")))
    return refusals


def warning_lines(refusals: list[Refusal]) -> list[str]:
    """What `start` and `run` print (on stderr) for each refusal: the problem and the fix."""
    lines: list[str] = []
    for refusal in refusals:
        lines.append(f"warning: {refusal.message()}")
        lines.append(f"  fix: {refusal.fix}  (or start the tunnel with --host-header backend)")
    return lines
