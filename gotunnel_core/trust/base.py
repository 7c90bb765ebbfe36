"""The trust-store strategy interface and what every strategy shares.

A strategy (`TrustStore`) knows one place that decides which CAs a program trusts: it detects
whether that place exists on this machine (by probing tools and paths, never by OS name),
says whether changing it needs privileges we lack, installs the CA (rolling its own steps back
if one fails, so nothing half-done is left), removes exactly what a record says it installed,
and checks whether the CA is trusted there, by a real TLS handshake where it can.
"""

from __future__ import annotations

import abc
import enum
import os
import shutil
import socket
import ssl
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import RuntimeFailure


class StoreError(RuntimeFailure):
    """A store operation failed; the store's own steps have been rolled back."""


class Verdict(str, enum.Enum):
    """What `gotunnel trust --check` reports per store."""

    TRUSTED = "trusted"
    NOT_TRUSTED = "not trusted"
    MISSING = "store missing"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class CA:
    """The CA certificate as the stores need it: PEM file, bytes and a stable identity."""

    path: Path
    pem: bytes
    der: bytes
    fingerprint: str  # SHA-256, lower-case hex without colons
    serial: int

    @classmethod
    def from_path(cls, path: Path) -> "CA":
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization

        pem = Path(path).read_bytes()
        cert = x509.load_pem_x509_certificate(pem)
        return cls(Path(path), pem, cert.public_bytes(serialization.Encoding.DER),
                   cert.fingerprint(hashes.SHA256()).hex(), cert.serial_number)

    @property
    def short(self) -> str:
        """16 hex digits of the fingerprint: enough to tell CAs apart in file names and nicknames."""
        return self.fingerprint[:16]

    @property
    def file_stem(self) -> str:
        return f"gotunnel-{self.short}"

    @property
    def nickname(self) -> str:
        return f"gotunnel local CA {self.short}"

    @property
    def sha1(self) -> str:
        import hashlib

        return hashlib.sha1(self.der).hexdigest().upper()  # noqa: S324 - keychain/Windows identify certs by SHA-1


@dataclass(frozen=True)
class Target:
    """Where `--check` does its handshakes: connect to host:port, send and verify `server_name`.

    `leaf` is the PEM of a certificate the running tunnel serves (the default `localhost` one),
    for stores that can only verify a certificate offline; with `offline` no handshake is tried.
    """

    host: str
    port: int
    server_name: str
    leaf: Path | None = None
    offline: bool = False


@dataclass(frozen=True)
class Detection:
    present: bool
    detail: str = ""


@dataclass(frozen=True)
class CheckResult:
    verdict: Verdict
    detail: str = ""


@dataclass
class TrustEnv:
    """The machine as the strategies see it: environment, the invoking user's home and ids.

    Under `sudo`, `home`, `uid` and `gid` are SUDO_USER's: per-user stores (NSS databases) are
    changed as that user, so they stay the user's.
    """

    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    home: Path = field(default_factory=Path.home)
    uid: int = field(default_factory=os.geteuid)
    gid: int = field(default_factory=os.getegid)

    @classmethod
    def current(cls) -> "TrustEnv":
        from ..paths import invoking_home, invoking_ids

        uid, gid = invoking_ids()
        return cls(dict(os.environ), invoking_home(), uid, gid)

    @property
    def as_other_user(self) -> bool:
        """True when we are root acting for the sudo-invoking user."""
        return os.geteuid() == 0 and self.uid != 0

    def get(self, name: str, default: str) -> str:
        value = self.environ.get(name)
        return value if value else default

    def which(self, name: str, *extra_dirs: str) -> str | None:
        """Find a program on PATH, then in `extra_dirs` (sbin is often missing from a user's PATH)."""
        found = shutil.which(name, path=self.environ.get("PATH"))
        if found:
            return found
        for directory in extra_dirs:
            candidate = Path(directory) / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
        return None

    def run(self, argv: Sequence[str], *, as_user: bool = False, input: bytes | None = None,
            timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a tool; with `as_user`, as the invoking user under sudo. Failures raise StoreError."""
        kwargs: dict[str, Any] = {}
        if as_user and self.as_other_user:
            kwargs = {"user": self.uid, "group": self.gid, "extra_groups": []}
        try:
            proc = subprocess.run(list(argv), capture_output=True, timeout=timeout, env=dict(self.environ),
                                  input=input, **kwargs)
        except FileNotFoundError:
            raise StoreError(f"{argv[0]} not found") from None
        except subprocess.TimeoutExpired:
            raise StoreError(f"{Path(argv[0]).name} did not finish within {timeout:g} s") from None
        result = subprocess.CompletedProcess(proc.args, proc.returncode,
                                             proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))
        if check and result.returncode != 0:
            tail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-3:]
            raise StoreError(f"`{' '.join(map(str, argv))}` failed (exit {result.returncode}): {' / '.join(tail)}")
        return result


def writable(path: Path) -> bool:
    """Whether we could create or replace files in `path` (or, if missing, create it)."""
    path = Path(path)
    while not path.exists():
        if path.parent == path:
            return False
        path = path.parent
    effective = os.access in os.supports_effective_ids  # what counts is who writes (seteuid under sudo)
    mode = os.W_OK | os.X_OK if path.is_dir() else os.W_OK
    return os.access(path, mode, effective_ids=effective)


def handshake(target: Target, *, cafile: str | None = None, capath: str | None = None,
              cadata: str | None = None) -> CheckResult:
    """A real TLS handshake to `target` trusting only the given roots (never the defaults)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verify + check_hostname on
    try:
        ctx.load_verify_locations(cafile=cafile, capath=capath, cadata=cadata)
    except (OSError, ssl.SSLError) as exc:
        return CheckResult(Verdict.NOT_TRUSTED, f"cannot load the store's roots: {exc}")
    try:
        with socket.create_connection((target.host, target.port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname=target.server_name):
                pass
    except ssl.SSLCertVerificationError as exc:
        return CheckResult(Verdict.NOT_TRUSTED, f"handshake with {target.server_name}:{target.port}: "
                                                f"{exc.verify_message or exc.reason}")
    except (OSError, ssl.SSLError) as exc:
        return CheckResult(Verdict.UNKNOWN, f"cannot reach {target.host}:{target.port}: {exc}")
    return CheckResult(Verdict.TRUSTED, f"TLS handshake with {target.server_name}:{target.port} verified")


def openssl_verify(env: TrustEnv, leaf: Path, *, cafile: str | None = None, capath: str | None = None) -> CheckResult:
    """Offline: `openssl verify` of a served certificate against only the store's roots."""
    tool = env.which("openssl")
    if tool is None:
        return CheckResult(Verdict.UNKNOWN, "openssl not found for an offline check")
    argv = [tool, "verify"]
    argv += ["-CAfile", cafile] if cafile else ["-no-CAfile"]
    argv += ["-CApath", capath] if capath else ["-no-CApath"]
    result = env.run([*argv, "-no-CAstore", str(leaf)], check=False)
    if result.returncode == 0:
        return CheckResult(Verdict.TRUSTED, f"openssl verify of {leaf.name} succeeded (no running tunnel)")
    last = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or [""]
    return CheckResult(Verdict.NOT_TRUSTED, f"openssl verify of {leaf.name}: {last[0]}")


class TrustStore(abc.ABC):
    """One trust store. Subclasses set `id`, `title` and, for alternatives, `group`."""

    id: str = ""
    #: Stores of one group are alternatives (the system store of Debian, Fedora or Arch): only
    #: the first present one of a group is used.
    group: str = ""
    title: str = ""

    def __init__(self, env: TrustEnv) -> None:
        self.env = env

    @abc.abstractmethod
    def detect(self) -> Detection:
        """Whether this store exists here (probe tools and paths), and where."""

    def needs_privilege(self) -> bool:
        """True when changing the store needs privileges this process lacks (then nothing is tried)."""
        return False

    @abc.abstractmethod
    def install(self, ca: CA) -> dict[str, Any]:
        """Install `ca`; return what was done (for the record). On failure roll back and raise StoreError."""

    @abc.abstractmethod
    def uninstall(self, record: Mapping[str, Any]) -> None:
        """Remove exactly what `record` says was installed; things already gone are fine."""

    @abc.abstractmethod
    def check(self, ca: CA, target: Target) -> CheckResult:
        """Whether `ca` is trusted here: a handshake to `target` where possible, else an offline check."""

    def summary(self, record: Mapping[str, Any]) -> str:
        """One line for the table, from an install record."""
        return ", ".join(str(v) for v in record.get("items", []))
