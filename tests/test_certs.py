"""Local CA and leaf certificates, checked against real `openssl verify`, NSS and a TLS handshake."""

from __future__ import annotations

import ipaddress
import json
import multiprocessing
import os
import shutil
import socket
import ssl
import stat
import subprocess
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gotunnel_core.certs import (
    DEFAULT_NAME,
    CertificateAuthority,
    LeafIssuer,
    build_leaf,
)
from gotunnel_core.errors import PermissionProblem, UsageError, ValidationError

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


class Clock:
    """A movable clock so tests can jump forward without sleeping."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ca(tmp_path: Path, clock: Clock) -> CertificateAuthority:
    ca = CertificateAuthority(tmp_path / "ca", extra_suffixes=["corp.example"], clock=clock)
    ca.ensure()
    return ca


@pytest.fixture
def issuer(ca: CertificateAuthority, tmp_path: Path) -> LeafIssuer:
    return LeafIssuer(ca, tmp_path / "ca" / "leaves")


# -- helpers -------------------------------------------------------------------------


def openssl_verify(ca: CertificateAuthority, cert_pem: Path, when: datetime | None = None) -> subprocess.CompletedProcess[str]:
    args = ["openssl", "verify", "-CAfile", str(ca.cert_path)]
    if when is not None:
        args += ["-attime", str(int(when.timestamp()))]
    return subprocess.run([*args, str(cert_pem)], capture_output=True, text=True)


def write_leaf(ca: CertificateAuthority, tmp_path: Path, fname: str, dns=(), ips=()) -> Path:
    now = ca.clock()
    cert, _ = build_leaf(ca, list(dns), list(ips), not_before=now - timedelta(hours=1), not_after=now + timedelta(days=1))
    path = tmp_path / fname
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def sign_raw(ca: CertificateAuthority, tmp_path: Path, fname: str, sans: list[x509.GeneralName], cn: str) -> Path:
    """Sign directly with the CA key, bypassing gotunnel's code: what an attacker with the key could do."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = ca.clock()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca.private_key, hashes.SHA256())
    )
    path = tmp_path / fname
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- CA ------------------------------------------------------------------------------


def test_ca_files_modes_and_extensions(ca: CertificateAuthority) -> None:
    assert mode(ca.directory) == 0o700
    assert mode(ca.cert_path) == 0o644
    assert mode(ca.key_path) == 0o600
    cert = ca.certificate
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and not ku.value.digital_signature
    nc = cert.extensions.get_extension_for_class(x509.NameConstraints)
    assert nc.critical
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc > timedelta(days=3600)
    assert "gotunnel local CA" in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    info = ca.info()
    assert {"localhost", "local", "test", "internal", "home.arpa", "corp.example"} <= set(info.permitted_dns)
    assert "fc00::/7" in info.permitted_ips and "127.0.0.0/8" in info.permitted_ips
    data = json.loads(info.to_json())
    assert datetime.fromisoformat(data["not_after"]) == cert.not_valid_after_utc


def test_two_cas_differ(tmp_path: Path, clock: Clock) -> None:
    a = CertificateAuthority(tmp_path / "a", clock=clock)
    b = CertificateAuthority(tmp_path / "b", clock=clock)
    assert a.certificate.subject != b.certificate.subject


def test_existing_ca_is_loaded_not_recreated(ca: CertificateAuthority, clock: Clock) -> None:
    again = CertificateAuthority(ca.directory, clock=clock)
    again.ensure()
    assert again.cert_pem() == ca.cert_pem()


def test_ca_key_readable_by_others_is_refused(ca: CertificateAuthority, clock: Clock) -> None:
    os.chmod(ca.key_path, 0o644)
    with pytest.raises(PermissionProblem) as exc:
        CertificateAuthority(ca.directory, clock=clock).ensure()
    assert "chmod 600" in (exc.value.hint or "")


def test_ca_dir_open_to_others_is_refused(tmp_path: Path, clock: Clock) -> None:
    d = tmp_path / "open"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    with pytest.raises(PermissionProblem):
        CertificateAuthority(d, clock=clock).ensure()


def test_missing_ca_key_is_an_error_not_a_new_ca(ca: CertificateAuthority, clock: Clock) -> None:
    ca.key_path.unlink()
    with pytest.raises(Exception, match="key .* is missing"):
        CertificateAuthority(ca.directory, clock=clock).ensure()


@pytest.mark.parametrize("bad", ["", "Corp.Example", ".corp.example", "corp..example", "a_b.example", "-x.example", "10.0.0.1"])
def test_extra_suffixes_are_validated(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValidationError):
        CertificateAuthority(tmp_path / "ca", extra_suffixes=[bad])


@pytest.mark.parametrize("public", ["com", "co.uk", "github.io", "arpa"])
def test_public_suffixes_are_refused_before_a_ca_exists(tmp_path: Path, public: str) -> None:
    # A name constraint on `com` would let the CA sign for every .com site.
    with pytest.raises(ValidationError, match=f"'{public}'.*public suffix"):
        CertificateAuthority(tmp_path / "ca", extra_suffixes=[public]).ensure()
    assert not (tmp_path / "ca").exists()


@pytest.mark.parametrize("private", ["corp.example.com", "lan", "dev.internal.example.co.uk", "home.arpa"])
def test_registrable_and_private_use_suffixes_are_accepted(tmp_path: Path, private: str) -> None:
    CertificateAuthority(tmp_path / "ca", extra_suffixes=[private])


def _ensure_in_child(directory: str, barrier, queue) -> None:  # runs in a forked process
    barrier.wait()
    ca = CertificateAuthority(Path(directory))
    ca.ensure()
    queue.put(ca.cert_pem())


def test_concurrent_ensure_yields_one_ca(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    barrier, queue = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_ensure_in_child, args=(str(tmp_path / "ca"), barrier, queue)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert len(set(results)) == 1
    assert (tmp_path / "ca" / "ca.pem").read_bytes() == results[0]


# -- name constraints, checked by real verifiers -------------------------------------


def test_openssl_accepts_tunnel_leaves(issuer: LeafIssuer, ca: CertificateAuthority) -> None:
    for name in ("myapp", "api.myapp", "*.myapp", DEFAULT_NAME):
        pair = issuer.ensure_leaf(name)
        res = openssl_verify(ca, pair.cert_path, ca.clock())
        assert res.returncode == 0, (name, res.stdout, res.stderr)


@pytest.mark.parametrize(
    ("dns", "ips", "ok"),
    [
        (["example.com"], [], False),
        (["evillocalhost"], [], False),  # suffix match needs a dot boundary
        (["localhost.example.com"], [], False),
        (["x.corp.example"], [], True),  # extra suffix given at creation
        (["x.test", "y.home.arpa", "z.internal"], [], True),
        ([], ["8.8.8.8"], False),
        ([], ["127.0.0.1"], True),
        ([], ["::1", "192.168.1.10", "fd00::1"], True),
        ([], ["2001:db8::1"], False),
        (["myapp.localhost", "example.com"], [], False),  # one bad name taints the whole cert
    ],
)
def test_openssl_enforces_name_constraints(ca, tmp_path, dns, ips, ok) -> None:
    path = write_leaf(ca, tmp_path, "leaf.pem", dns, ips)
    res = openssl_verify(ca, path, ca.clock())
    assert (res.returncode == 0) == ok, (res.stdout, res.stderr)
    if not ok:
        assert "permitted subtree violation" in res.stdout + res.stderr


def test_cert_signed_directly_with_ca_key_for_public_name_fails(ca, tmp_path) -> None:
    path = sign_raw(ca, tmp_path, "evil.pem", [x509.DNSName("example.com")], cn="example.com")
    res = openssl_verify(ca, path, ca.clock())
    assert res.returncode != 0
    assert "permitted subtree violation" in res.stdout + res.stderr


def test_openssl_checks_a_hostname_like_cn_too(ca, tmp_path) -> None:
    """Quirk: OpenSSL checks a CN that looks like a host name against DNS constraints, even with SANs."""
    path = sign_raw(ca, tmp_path, "cn.pem", [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))], cn="127.0.0.1")
    assert openssl_verify(ca, path, ca.clock()).returncode != 0
    # build_leaf therefore never puts an IP in the CN:
    assert openssl_verify(ca, write_leaf(ca, tmp_path, "ok.pem", ips=["127.0.0.1"]), ca.clock()).returncode == 0


@pytest.mark.skipif(shutil.which("certutil") is None, reason="certutil (NSS tools) not installed")
def test_nss_agrees(tmp_path: Path) -> None:
    """Firefox/Chrome-on-Linux use NSS; its name-constraint matching must agree with OpenSSL's."""
    ca = CertificateAuthority(tmp_path / "ca")  # NSS verifies at the real time: use the real clock
    ca.ensure()
    issuer = LeafIssuer(ca, tmp_path / "ca" / "leaves")
    db = tmp_path / "nss"
    db.mkdir()
    subprocess.run(["certutil", "-N", "-d", f"sql:{db}", "--empty-password"], check=True, capture_output=True)
    subprocess.run(["certutil", "-A", "-d", f"sql:{db}", "-n", "ca", "-t", "C,,", "-i", str(ca.cert_path)], check=True)
    cases = {
        "leaf": (issuer.ensure_leaf("*.myapp").cert_path, True),
        "bad": (write_leaf(ca, tmp_path, "bad.pem", ["example.com"]), False),
        "ip": (write_leaf(ca, tmp_path, "ip.pem", ips=["8.8.8.8"]), False),
    }
    for nick, (path, ok) in cases.items():
        subprocess.run(["certutil", "-A", "-d", f"sql:{db}", "-n", nick, "-t", ",,", "-i", str(path)], check=True)
        res = subprocess.run(["certutil", "-V", "-d", f"sql:{db}", "-n", nick, "-u", "V"], capture_output=True, text=True)
        assert ("certificate is valid" in res.stdout) == ok, (nick, res.stdout, res.stderr)


# -- leaves --------------------------------------------------------------------------


def test_leaf_contents(issuer: LeafIssuer, clock: Clock) -> None:
    pair = issuer.ensure_leaf("myapp")
    cert = x509.load_pem_x509_certificate(pair.cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"myapp.localhost", "myapp.local"}
    assert cert.not_valid_before_utc == clock.now - timedelta(hours=1)
    assert cert.not_valid_after_utc == clock.now + timedelta(days=90)
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.SERVER_AUTH]
    )
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature
    cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert pair.serial == cert.serial_number and pair.not_after == cert.not_valid_after_utc


def test_wildcard_and_default_files(issuer: LeafIssuer) -> None:
    wild = issuer.ensure_leaf("*.myapp")
    assert wild.cert_path.name == "_wildcard.myapp.pem"
    assert wild.key_path.name == "_wildcard.myapp_key.pem"
    info = issuer.leaf_info("*.myapp")
    assert set(info.sans) == {"*.myapp.localhost", "*.myapp.local"}
    default = issuer.ensure_default()
    assert set(issuer.leaf_info(DEFAULT_NAME).sans) == {"localhost", "127.0.0.1", "::1"}
    assert default.cert_path.name == "_default.pem"


def test_name_that_ends_in_key_does_not_collide(issuer: LeafIssuer) -> None:
    a, b = issuer.ensure_leaf("myapp"), issuer.ensure_leaf("myapp-key")
    assert len({a.cert_path, a.key_path, b.cert_path, b.key_path}) == 4
    assert issuer.ensure_leaf("myapp").serial == a.serial


@pytest.mark.parametrize("bad", ["../etc", "a/b", "", "MyApp", "*.", "a..b", "*.*.x"])
def test_bad_leaf_names_refused(issuer: LeafIssuer, bad: str) -> None:
    with pytest.raises(ValidationError):
        issuer.ensure_leaf(bad)


def test_leaf_permissions(issuer: LeafIssuer) -> None:
    pair = issuer.ensure_leaf("myapp")
    assert mode(pair.key_path) == 0o600
    assert mode(pair.cert_path.parent) == 0o700
    os.chmod(pair.key_path, 0o640)
    with pytest.raises(PermissionProblem):
        issuer.ensure_leaf("myapp")


def test_renewal_follows_the_clock(issuer: LeafIssuer, clock: Clock, ca: CertificateAuthority) -> None:
    first = issuer.ensure_leaf("myapp")
    clock.advance(days=1)
    assert not issuer.due("myapp")
    assert issuer.ensure_leaf("myapp") == first
    clock.advance(days=60, hours=1)  # 61 days in: 29 days left < 30
    assert issuer.due("myapp")
    assert issuer.leaf_info("myapp").due_for_renewal
    second = issuer.ensure_leaf("myapp")
    assert second.serial != first.serial
    assert second.not_after == clock.now + timedelta(days=90)
    assert not issuer.due("myapp")
    assert openssl_verify(ca, second.cert_path, clock.now).returncode == 0


def test_expired_certificate_is_never_returned(issuer: LeafIssuer, clock: Clock) -> None:
    first = issuer.ensure_leaf("myapp")
    clock.advance(days=100)
    assert issuer.leaf_info("myapp").due_reason == "expired"
    pair = issuer.ensure_leaf("myapp")
    assert pair.serial != first.serial
    assert pair.not_after > clock.now


def test_reissued_when_ca_changes_or_names_differ(tmp_path: Path, issuer: LeafIssuer, clock: Clock) -> None:
    first = issuer.ensure_leaf("myapp")
    other_ca = CertificateAuthority(tmp_path / "other", clock=clock)
    moved = LeafIssuer(other_ca, issuer.directory)
    assert moved.leaf_info("myapp").due_reason == "not issued by the current CA"
    assert moved.ensure_leaf("myapp").serial != first.serial
    more = LeafIssuer(other_ca, issuer.directory, suffixes=("localhost", "local", "corp.example"))
    assert more.due("myapp")


def test_renew_forces_and_remove_deletes(issuer: LeafIssuer) -> None:
    first = issuer.ensure_leaf("myapp")
    assert issuer.renew("myapp").serial != first.serial
    issuer.remove("myapp")
    assert not first.cert_path.exists() and not first.key_path.exists()
    issuer.remove("myapp")  # idempotent
    with pytest.raises(UsageError):
        issuer.leaf_info("myapp")


def test_list_leaves(issuer: LeafIssuer) -> None:
    issuer.ensure_leaf("myapp")
    issuer.ensure_leaf("*.api")
    issuer.ensure_default()
    infos = {i.name: i for i in issuer.list_leaves()}
    assert set(infos) == {"myapp", "*.api", DEFAULT_NAME}
    d = json.loads(infos["myapp"].to_json())
    assert d["sans"] == ["myapp.local", "myapp.localhost"]
    assert d["due_for_renewal"] is False
    assert int(d["serial"], 16) == issuer.ensure_leaf("myapp").serial
    datetime.fromisoformat(d["not_before"])


def test_renew_before_must_be_shorter_than_validity(ca: CertificateAuthority, tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        LeafIssuer(ca, tmp_path / "l", validity=timedelta(days=10), renew_before=timedelta(days=30))


# -- a real TLS handshake --------------------------------------------------------------


def _serve_once(ctx: ssl.SSLContext, sock: socket.socket) -> None:
    try:
        conn, _ = sock.accept()
        with ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"hello")
    except (ssl.SSLError, OSError):
        pass


@pytest.mark.parametrize(("hostname", "ok"), [("myapp.localhost", True), ("myapp.local", True), ("other.localhost", False)])
def test_tls_handshake(tmp_path: Path, hostname: str, ok: bool) -> None:
    ca = CertificateAuthority(tmp_path / "ca")  # real clock: the handshake checks validity at real time
    pair = LeafIssuer(ca, tmp_path / "ca" / "leaves").ensure_leaf("myapp")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pair.cert_path, pair.key_path)
    client_ctx = ssl.create_default_context(cafile=str(ca.cert_path))  # trusts only our CA
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
        t = threading.Thread(target=_serve_once, args=(server_ctx, sock), daemon=True)
        t.start()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            if ok:
                with client_ctx.wrap_socket(raw, server_hostname=hostname) as tls:
                    assert tls.recv(5) == b"hello"
            else:
                with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
                    client_ctx.wrap_socket(raw, server_hostname=hostname)
        t.join(timeout=5)
