"""Leaf certificates per tunnel name: issue, check, renew, list and remove them on disk.

Layout in the leaves directory (0700): `<stem>.pem` holds the leaf certificate alone (no chain:
clients trust the CA directly, sending it would only add bytes) and `<stem>_key.pem` (0600) its
key, where `<stem>` is the tunnel name with `*.` spelled `_wildcard.`. The key suffix uses `_`
because DNS labels cannot contain it, so `myapp-key` and `myapp` can never collide.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import filelock
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..errors import UsageError, ValidationError
from ..fsutil import atomic_write, ensure_private_dir
from .authority import (
    CLOCK_SKEW,
    LOCK_TIMEOUT,
    CertificateAuthority,
    check_private_file,
    key_to_pem,
    new_private_key,
)
from .names import DEFAULT_NAME, LEAF_SUFFIXES, leaf_sans, name_from_filename, safe_filename

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

CERT_SUFFIX = ".pem"
KEY_SUFFIX = "_key.pem"


@dataclass(frozen=True)
class CertPair:
    """Paths of a usable (valid, current) certificate and key for one name."""

    name: str
    cert_path: Path
    key_path: Path
    serial: int
    not_after: datetime


@dataclass(frozen=True)
class LeafInfo:
    """What `gotunnel certs list` shows for one leaf; `due_reason` says why it would be renewed."""

    name: str
    sans: tuple[str, ...]
    serial: str
    not_before: datetime
    not_after: datetime
    cert_path: Path
    key_path: Path
    due_for_renewal: bool
    due_reason: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; dates in ISO 8601, paths as strings."""
        return {
            "name": self.name,
            "sans": list(self.sans),
            "serial": self.serial,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "cert_path": str(self.cert_path),
            "key_path": str(self.key_path),
            "due_for_renewal": self.due_for_renewal,
            "due_reason": self.due_reason,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def build_leaf(
    ca: CertificateAuthority,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str | IPAddress] = (),
    *,
    not_before: datetime,
    not_after: datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Sign a serverAuth leaf for arbitrary SANs (low level: no files, no name constraints check)."""
    key = new_private_key()
    return sign_leaf(ca, key.public_key(), dns_names, ip_addresses, not_before=not_before, not_after=not_after), key


def sign_leaf(
    ca: CertificateAuthority,
    public_key: ec.EllipticCurvePublicKey,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str | IPAddress] = (),
    *,
    not_before: datetime,
    not_after: datetime,
    subject: x509.Name | None = None,
    usage: x509.ObjectIdentifier | Sequence[x509.ObjectIdentifier] = ExtendedKeyUsageOID.SERVER_AUTH,
) -> x509.Certificate:
    """Sign a leaf for `public_key` (a key that may live elsewhere, e.g. from a CSR).

    `usage` is the extended key usage, or several (serverAuth; clientAuth for team members;
    both for team agents, which also serve the edge-to-agent hop);
    `subject` replaces the default (CN = the first DNS name).
    """
    ca_cert = ca.certificate
    not_after = min(not_after, ca_cert.not_valid_after_utc)  # never outlive the CA
    ips = [ipaddress.ip_address(ip) for ip in ip_addresses]
    cn = dns_names[0] if dns_names else (str(ips[0]) if ips else "")
    # An IP in the CN would be checked by OpenSSL as a DNS name against the constraints; skip it.
    if subject is None:
        subject = (
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
            if dns_names and len(cn) <= 64
            else x509.Name([])
        )
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ip) for ip in ips]
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage] if isinstance(usage, x509.ObjectIdentifier) else list(usage)),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
    )
    if sans:  # RFC 5280: SAN must be critical when the subject is empty.
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=not subject.rdns)
    return builder.sign(ca.private_key, hashes.SHA256())


def _cert_sans(cert: x509.Certificate) -> tuple[set[str], set[IPAddress]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    return set(san.get_values_for_type(x509.DNSName)), set(san.get_values_for_type(x509.IPAddress))  # type: ignore[arg-type]


class LeafIssuer:
    """Issues and renews the leaf certificates the engine serves, one pair of files per name."""

    LOCK_FILE = ".leaves.lock"

    def __init__(
        self,
        ca: CertificateAuthority,
        directory: Path,
        *,
        validity: timedelta = timedelta(days=90),
        renew_before: timedelta = timedelta(days=30),
        suffixes: Sequence[str] = LEAF_SUFFIXES,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """`clock` defaults to the CA's clock; `suffixes` are appended to tunnel names for the SANs."""
        if validity <= timedelta(0):
            raise ValidationError("validity", validity, "must be positive")
        if not timedelta(0) <= renew_before < validity:
            raise ValidationError(
                "renew_before", renew_before, f"must be at least 0 and less than the validity ({validity})"
            )
        self.ca = ca
        self.directory = Path(directory)
        self.validity = validity
        self.renew_before = renew_before
        self.suffixes = tuple(suffixes)
        self.clock = clock or ca.clock

    # -- paths ---------------------------------------------------------------------

    def cert_path(self, name: str) -> Path:
        return self.directory / (safe_filename(name) + CERT_SUFFIX)

    def key_path(self, name: str) -> Path:
        return self.directory / (safe_filename(name) + KEY_SUFFIX)

    def _lock(self) -> filelock.FileLock:
        ensure_private_dir(self.directory)
        return filelock.FileLock(str(self.directory / self.LOCK_FILE), mode=0o600, timeout=LOCK_TIMEOUT)

    # -- checks --------------------------------------------------------------------

    def _load(self, name: str) -> tuple[x509.Certificate | None, str | None]:
        """Read the stored cert for `name` and say why it must be (re)issued, or None if it is fine."""
        cert_path, key_path = self.cert_path(name), self.key_path(name)
        if not cert_path.exists() or not key_path.exists():
            return None, "missing"
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except ValueError:
            return None, "unreadable certificate"
        return cert, self._reason(name, cert, key_path)

    def _reason(self, name: str, cert: x509.Certificate, key_path: Path) -> str | None:
        now = self.clock()
        try:
            cert.verify_directly_issued_by(self.ca.certificate)
        except Exception:  # ValueError, InvalidSignature, TypeError depending on the mismatch
            return "not issued by the current CA"
        dns, ips = leaf_sans(name, self.suffixes)
        if _cert_sans(cert) != (set(dns), set(ips)):
            return "names differ from the expected ones"
        if now >= cert.not_valid_after_utc:
            return "expired"
        if now < cert.not_valid_before_utc:
            return "not yet valid (clock moved back)"
        if cert.not_valid_after_utc - now < self.renew_before:
            return f"expires within {self.renew_before.days} days"
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (ValueError, OSError):
            return "unreadable key"
        if key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) != cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            return "key does not match certificate"
        return None

    def due(self, name: str) -> bool:
        """True when `ensure_leaf(name)` would issue a new certificate."""
        return self._load(name)[1] is not None

    # -- issuing -------------------------------------------------------------------

    def _pair(self, name: str, cert: x509.Certificate) -> CertPair:
        return CertPair(name, self.cert_path(name), self.key_path(name), cert.serial_number, cert.not_valid_after_utc)

    def _issue(self, name: str) -> CertPair:
        from .. import tracing

        with tracing.span("certificate.issue", name=name):
            return self._issue_now(name)

    def _issue_now(self, name: str) -> CertPair:
        now = self.clock()
        dns, ips = leaf_sans(name, self.suffixes)
        cert, key = build_leaf(self.ca, dns, ips, not_before=now - CLOCK_SKEW, not_after=now + self.validity)
        # Key first, then cert: the cert file never names a key that is not on disk yet. Callers
        # (the daemon) tell the engine to reload only after this returns, when both are written.
        atomic_write(self.key_path(name), key_to_pem(key), mode=0o600)
        atomic_write(self.cert_path(name), cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
        return self._pair(name, cert)

    def ensure_leaf(self, name: str) -> CertPair:
        """Return the stored pair for `name` if current, else issue a new one; never an expired one."""
        safe_filename(name)  # validates before touching the disk
        self.ca.ensure()
        with self._lock():
            cert, reason = self._load(name)
            if cert is not None and reason is None:
                check_private_file(self.key_path(name))
                return self._pair(name, cert)
            return self._issue(name)

    def ensure_default(self) -> CertPair:
        """The `localhost` / 127.0.0.1 / ::1 certificate served for unknown SNI."""
        return self.ensure_leaf(DEFAULT_NAME)

    def renew(self, name: str) -> CertPair:
        """Issue a new certificate for `name` even if the current one is fine."""
        safe_filename(name)
        self.ca.ensure()
        with self._lock():
            return self._issue(name)

    def remove(self, name: str) -> None:
        """Delete the pair for `name` (cert first, so no cert is left without its key); idempotent."""
        safe_filename(name)
        if not self.directory.exists():
            return
        with self._lock():
            for path in (self.cert_path(name), self.key_path(name)):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass

    # -- inspection ----------------------------------------------------------------

    def _info(self, name: str, cert: x509.Certificate, reason: str | None) -> LeafInfo:
        dns, ips = _cert_sans(cert)
        return LeafInfo(
            name=name,
            sans=tuple(sorted(dns)) + tuple(str(ip) for ip in sorted(ips, key=lambda i: (i.version, i))),
            serial=f"{cert.serial_number:x}",
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            cert_path=self.cert_path(name),
            key_path=self.key_path(name),
            due_for_renewal=reason is not None,
            due_reason=reason,
        )

    def leaf_info(self, name: str) -> LeafInfo:
        """Inspection data for one name; UsageError if no readable certificate is stored."""
        cert, reason = self._load(name)
        if cert is None:
            raise UsageError(f"no certificate stored for {name!r} ({reason})")
        return self._info(name, cert, reason)

    def list_leaves(self) -> list[LeafInfo]:
        """All stored leaves sorted by name; unreadable or foreign files are skipped."""
        if not self.directory.is_dir():
            return []
        out: list[LeafInfo] = []
        for path in sorted(self.directory.iterdir()):
            fname = path.name
            if fname.startswith(".") or not fname.endswith(CERT_SUFFIX) or fname.endswith(KEY_SUFFIX):
                continue
            name = name_from_filename(fname[: -len(CERT_SUFFIX)])
            if name is None:
                continue
            cert, reason = self._load(name)
            if cert is not None:
                out.append(self._info(name, cert, reason))
        return out


