"""TLS towards etcd: the CA that signed etcd's certificate and this client's certificate and key.

Shared by every command that talks to the team's etcd (`gotunnel hub`, `team init --etcd`,
`team revoke`): the same flags (`--etcd-ca`, `--etcd-cert`, `--etcd-key`) and the same settings
(`etcd_ca`, `etcd_cert`, `etcd_key`, so `GOTUNNEL_ETCD_CA` or a config-file key work too). Files
are checked before anything connects: a missing or unreadable file, or one that is not PEM, is
a usage error naming it; a key others can read is refused like every other gotunnel key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import click

from ..errors import ValidationError

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class EtcdTls:
    """PEM bytes: `ca` verifies etcd (None: the system's roots), `cert`/`key` identify us."""

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None

    @property
    def client_auth(self) -> bool:
        return self.cert is not None


def _read(flag: str, path: str, check: Callable[[bytes], object]) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValidationError(flag, path, exc.strerror or "cannot be read") from None
    try:
        check(data)
    except ValueError:
        raise ValidationError(flag, path, "is not a PEM file of the expected kind") from None
    return data


def _certificates(data: bytes) -> object:
    from cryptography import x509

    return x509.load_pem_x509_certificates(data)


def _private_key(data: bytes) -> object:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        return load_pem_private_key(data, password=None)
    except TypeError:  # encrypted: gRPC cannot use it
        raise ValueError("encrypted") from None


def load_etcd_tls(ca: str | None, cert: str | None, key: str | None) -> EtcdTls | None:
    """Read and check the files (None when none is given)."""
    from ..certs.authority import check_private_file

    if not (ca or cert or key):
        return None
    if bool(cert) != bool(key):
        given, missing = ("--etcd-cert", "--etcd-key") if cert else ("--etcd-key", "--etcd-cert")
        raise ValidationError(given, cert or key, f"needs {missing} too (a client certificate and its key)")
    ca_pem = _read("--etcd-ca", ca, _certificates) if ca else None
    cert_pem = _read("--etcd-cert", cert, _certificates) if cert else None
    key_pem = None
    if key:
        key_pem = _read("--etcd-key", key, _private_key)
        check_private_file(Path(key))
    return EtcdTls(ca_pem, cert_pem, key_pem)


def etcd_tls_options(command: F) -> F:
    """The `--etcd-ca/--etcd-cert/--etcd-key` flags of a command that talks to etcd."""
    for flag, what in reversed((("ca", "CA certificate that signed etcd's certificate [GOTUNNEL_ETCD_CA]"),
                                ("cert", "client certificate for etcd (--client-cert-auth) [GOTUNNEL_ETCD_CERT]"),
                                ("key", "its private key, owner-only [GOTUNNEL_ETCD_KEY]"))):
        command = click.option(f"--etcd-{flag}", f"etcd_{flag}", metavar="FILE", help=what)(command)
    return command


def resolve_etcd_tls(urls: str, settings: Mapping[str, Any], ca: str | None, cert: str | None,
                     key: str | None) -> EtcdTls | None:
    """Flags first, then the settings; TLS files with `http://` endpoints are a usage error."""
    from .etcd import parse_endpoints

    ca = ca or settings.get("etcd_ca")
    cert = cert or settings.get("etcd_cert")
    key = key or settings.get("etcd_key")
    tls = load_etcd_tls(ca, cert, key)
    endpoints = parse_endpoints(urls)
    if tls is not None and not endpoints[0].tls:
        raise ValidationError("--etcd", urls, "TLS files were given (--etcd-ca/--etcd-cert/--etcd-key): use https:// URLs")
    return tls
