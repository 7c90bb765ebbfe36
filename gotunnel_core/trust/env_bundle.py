"""`gotunnel trust --env`: a CA bundle of the system roots plus gotunnel's CA, and the environment
variables that make runtimes no other store covers use it (Python's ssl and requests, Node, curl).
"""

from __future__ import annotations

import shlex
import ssl
from pathlib import Path
from typing import Any

from ..fsutil import atomic_write, ensure_private_dir
from .base import CA

VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE")
FALLBACK_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Arch
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/ssl/cert.pem",  # macOS, Alpine
)


def system_roots() -> tuple[str | None, bytes]:
    """The system's root bundle: OpenSSL's compiled-in file (not $SSL_CERT_FILE, which may be
    our own bundle), else certifi's, else a well-known path; (None, b"") when none is found."""
    candidates: list[str] = []
    paths = ssl.get_default_verify_paths()
    if paths.openssl_cafile:
        candidates.append(paths.openssl_cafile)
    try:
        import certifi  # type: ignore[import-not-found]

        candidates.append(certifi.where())
    except ImportError:
        pass
    candidates += FALLBACK_BUNDLES
    for candidate in candidates:
        path = Path(candidate)
        if path.is_file():
            data = path.read_bytes()
            if b"-----BEGIN CERTIFICATE-----" in data:
                return str(path), data
    return None, b""


def build_bundle(directory: Path, ca: CA) -> dict[str, Any]:
    """Write `<directory>/bundle.pem` (system roots + our CA) and return where and what."""
    ensure_private_dir(directory)
    source, roots = system_roots()
    if roots and not roots.endswith(b"\n"):
        roots += b"\n"
    bundle = directory / "bundle.pem"
    label = f"# gotunnel local CA {ca.short}\n".encode()
    atomic_write(bundle, roots + label + ca.pem, mode=0o644)
    return {"bundle": str(bundle), "system_roots": source, "variables": {v: str(bundle) for v in VARIABLES},
            "items": [str(bundle)]}


def shell_exports(info: dict[str, Any]) -> str:
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in info["variables"].items())
