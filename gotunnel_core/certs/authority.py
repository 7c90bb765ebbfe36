"""The local root CA: created once per user, name-constrained to local-only names and private IPs."""

from __future__ import annotations

import getpass
import ipaddress
import json
import os
import secrets
import socket
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import filelock
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..errors import PermissionProblem, RuntimeFailure
from ..fsutil import atomic_write, ensure_private_dir
from .names import BUILTIN_SUFFIXES, PERMITTED_NETWORKS, normalize_suffixes, utc_now, validate_suffix

CA_VALIDITY = timedelta(days=3650)
#: Backdating of notBefore so a slightly slow clock elsewhere still accepts fresh certificates.
CLOCK_SKEW = timedelta(hours=1)
LOCK_TIMEOUT = 30.0


@dataclass(frozen=True)
class CAInfo:
    """What `gotunnel certs ca` shows: identity, validity and what the CA may sign for."""

    subject: str
    serial: str
    not_before: datetime
    not_after: datetime
    sha256_fingerprint: str
    permitted_dns: tuple[str, ...]
    permitted_ips: tuple[str, ...]
    cert_path: Path
    key_path: Path

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; dates in ISO 8601, paths as strings."""
        return {
            "subject": self.subject,
            "serial": self.serial,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "sha256_fingerprint": self.sha256_fingerprint,
            "permitted_dns": list(self.permitted_dns),
            "permitted_ips": list(self.permitted_ips),
            "cert_path": str(self.cert_path),
            "key_path": str(self.key_path),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def new_private_key() -> ec.EllipticCurvePrivateKey:
    """EC P-256: universally supported for TLS and fast to generate."""
    return ec.generate_private_key(ec.SECP256R1())


def key_to_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def check_private_file(path: Path) -> None:
    """Refuse a private key that others can access or that belongs to someone else."""
    st = path.stat()
    if st.st_uid != os.geteuid():
        raise PermissionProblem(
            f"key file {str(path)!r} belongs to uid {st.st_uid}, not to us (uid {os.geteuid()})",
            hint=f"fix the owner: chown {os.geteuid()} {path}",
        )
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PermissionProblem(
            f"key file {str(path)!r} is accessible by other users (mode {stat.S_IMODE(st.st_mode):04o})",
            hint=f"restrict it: chmod 600 {path}",
        )


def _default_subject_cn(now: datetime) -> str:
    """Readable and unique per machine: user@host, creation date and a random tag."""
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = str(os.geteuid())
    host = socket.gethostname() or "localhost"
    cn = f"gotunnel local CA ({user}@{host}) {now:%Y-%m-%d} {secrets.token_hex(3)}"
    return cn[:64]  # X.520 upper bound for commonName


class CertificateAuthority:
    """Owns `ca.pem` / `ca-key.pem` in a private directory; creates them on first `ensure()`."""

    CERT_FILE = "ca.pem"
    KEY_FILE = "ca-key.pem"
    LOCK_FILE = ".ca.lock"

    def __init__(
        self,
        directory: Path,
        *,
        extra_suffixes: Sequence[str] = (),
        clock: Callable[[], datetime] = utc_now,
        only_domains: Sequence[str] | None = None,
        common_name: str | None = None,
    ) -> None:
        """`extra_suffixes` only matter when the CA is created; an existing CA keeps its constraints.

        `only_domains` makes a CA that may sign for exactly these DNS subtrees and no IP address
        (the team CA); `common_name` replaces the default user@host subject.
        """
        self.directory = Path(directory)
        self.extra_suffixes = normalize_suffixes(extra_suffixes)
        self.only_domains = None if only_domains is None else tuple(validate_suffix(d) for d in only_domains)
        self.common_name = common_name
        self.clock = clock
        self._cert: x509.Certificate | None = None
        self._key: ec.EllipticCurvePrivateKey | None = None

    @property
    def cert_path(self) -> Path:
        return self.directory / self.CERT_FILE

    @property
    def key_path(self) -> Path:
        return self.directory / self.KEY_FILE

    @classmethod
    def in_memory(cls, cert_pem: bytes, key_pem: bytes, *, clock: Callable[[], datetime] = utc_now) -> "CertificateAuthority":
        """A CA loaded from PEM without files (a team hub reads its CA from etcd)."""
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        public = cert.public_key()
        if (not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(public, ec.EllipticCurvePublicKey)
                or public.public_numbers() != key.public_key().public_numbers()):
            raise RuntimeFailure("the CA key does not match the CA certificate (or is not an EC key)")
        ca = cls(Path("/nonexistent-in-memory-ca"), clock=clock)
        ca._cert, ca._key = cert, key
        return ca

    # -- lifecycle -----------------------------------------------------------------

    def ensure(self) -> None:
        """Load the CA, creating it first if missing; safe against concurrent processes."""
        if self._cert is not None:
            return
        ensure_private_dir(self.directory)
        lock = filelock.FileLock(str(self.directory / self.LOCK_FILE), mode=0o600, timeout=LOCK_TIMEOUT)
        try:
            with lock:
                if self.cert_path.exists():
                    self._load()
                else:
                    self._create()
        except filelock.Timeout as exc:
            raise RuntimeFailure(
                f"timed out waiting for the CA lock {lock.lock_file}",
                hint="another gotunnel process is creating the CA; retry in a moment",
            ) from exc

    def _load(self) -> None:
        if not self.key_path.exists():
            raise RuntimeFailure(
                f"CA certificate {self.cert_path} exists but its key {self.key_path} is missing",
                hint=f"restore the key, or remove {self.cert_path} to create a new CA (it must be trusted again)",
            )
        check_private_file(self.key_path)
        try:
            cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
            key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        except ValueError as exc:
            raise RuntimeFailure(
                f"cannot parse the CA in {self.directory}: {exc}",
                hint=f"remove {self.directory} to create a new CA (it must be trusted again)",
            ) from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise RuntimeFailure(
                f"unsupported CA key type in {self.key_path} (expected EC)",
                hint=f"remove {self.directory} to create a new CA (it must be trusted again)",
            )
        if cert.public_key().public_numbers() != key.public_key().public_numbers():  # type: ignore[union-attr]
            raise RuntimeFailure(
                f"CA key {self.key_path} does not match certificate {self.cert_path}",
                hint=f"remove {self.directory} to create a new CA (it must be trusted again)",
            )
        self._cert, self._key = cert, key

    def _create(self) -> None:
        now = self.clock()
        key = new_private_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (self.common_name or _default_subject_cn(now))[:64]),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gotunnel development CA")])
        constraints = self._name_constraints()
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(constraints, critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        # Key first: a reader that finds ca.pem can always find its key.
        atomic_write(self.key_path, key_to_pem(key), mode=0o600)
        atomic_write(self.cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
        self._cert, self._key = cert, key

    def _name_constraints(self) -> x509.NameConstraints:
        """Local CA: special-use suffixes and private networks. Team CA: its domains, no IP at all
        (an IP SAN is excluded everywhere, so a leaked key cannot sign for an address either)."""
        if self.only_domains is not None:
            return x509.NameConstraints(
                permitted_subtrees=[x509.DNSName(d) for d in self.only_domains],
                excluded_subtrees=[x509.IPAddress(ipaddress.ip_network(n)) for n in ("0.0.0.0/0", "::/0")],
            )
        dns_subtrees = [x509.DNSName(s) for s in (*BUILTIN_SUFFIXES, *self.extra_suffixes)]
        ip_subtrees = [x509.IPAddress(ipaddress.ip_network(n)) for n in PERMITTED_NETWORKS]
        return x509.NameConstraints(permitted_subtrees=[*dns_subtrees, *ip_subtrees], excluded_subtrees=None)

    # -- accessors -----------------------------------------------------------------

    @property
    def certificate(self) -> x509.Certificate:
        self.ensure()
        assert self._cert is not None
        return self._cert

    @property
    def private_key(self) -> ec.EllipticCurvePrivateKey:
        self.ensure()
        assert self._key is not None
        return self._key

    def cert_pem(self) -> bytes:
        """The CA certificate in PEM, for trust-store installers."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def _constraints(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        try:
            nc = self.certificate.extensions.get_extension_for_class(x509.NameConstraints).value
        except x509.ExtensionNotFound:
            return (), ()
        subtrees = nc.permitted_subtrees or []
        dns = tuple(g.value for g in subtrees if isinstance(g, x509.DNSName))
        ips = tuple(str(g.value) for g in subtrees if isinstance(g, x509.IPAddress))
        return dns, ips

    def info(self) -> CAInfo:
        """Inspection data for the CLI (`gotunnel certs ca`)."""
        cert = self.certificate
        dns, ips = self._constraints()
        return CAInfo(
            subject=cert.subject.rfc4514_string(),
            serial=f"{cert.serial_number:x}",
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            sha256_fingerprint=cert.fingerprint(hashes.SHA256()).hex(":").upper(),
            permitted_dns=dns,
            permitted_ips=ips,
            cert_path=self.cert_path,
            key_path=self.key_path,
        )
