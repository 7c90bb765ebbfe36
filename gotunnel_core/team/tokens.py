"""One-time enrolment tokens (`gotunnel team invite NAME`).

A token carries everything a new member needs and nothing it could reuse:

- the team CA certificate, so the member verifies the hub before sending anything;
- a short-lived enrolment certificate (OU `enrol-agent` / `enrol-edge`, valid for the token's
  TTL) and the 32-byte seed its key derives from.

The member connects to a hub with that certificate (mutual TLS, like every other call) and
asks for its real certificate for a key it generated itself. The hub accepts each enrolment
certificate once (its serial is recorded in etcd) and never after it expired.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..certs import CertificateAuthority
from ..certs.authority import key_to_pem
from ..errors import ValidationError
from .identity import ENROL_PREFIX, ROLES, issue_member, member_of, parse_member_name, pem

PREFIX = "gtt1_"
_SEED = 32


@dataclass(frozen=True)
class Invitation:
    """A decoded token."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    name: str
    role: str


def _key_from_seed(seed: bytes) -> ec.EllipticCurvePrivateKey:
    """The enrolment key, derived from the seed (so the token carries 32 bytes, not a PKCS#8 key)."""
    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # P-256 group order
    scalar = int.from_bytes(hashlib.sha512(b"gotunnel-enrol\x00" + seed).digest(), "big") % (order - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def _pack(*parts: bytes) -> bytes:
    out = bytearray()
    for part in parts:
        out += len(part).to_bytes(2, "big") + part
    return bytes(out)


def _unpack(blob: bytes) -> list[bytes]:
    parts: list[bytes] = []
    while blob:
        if len(blob) < 2:
            raise ValueError("truncated")
        size = int.from_bytes(blob[:2], "big")
        if len(blob) < 2 + size:
            raise ValueError("truncated")
        parts.append(blob[2:2 + size])
        blob = blob[2 + size:]
    return parts


def parse_ttl(raw: str) -> timedelta:
    """`30m`, `1h`, `2d` or seconds -> a duration from one minute to 30 days."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = str(raw).strip().lower()
    try:
        seconds = float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text)
    except (ValueError, KeyError):
        raise ValidationError("--ttl", raw, "expected a duration such as 30m, 1h or 2d") from None
    if not 60 <= seconds <= 30 * 86400:
        raise ValidationError("--ttl", raw, "must be between 1 minute and 30 days")
    return timedelta(seconds=seconds)


def invite(ca: CertificateAuthority, name: str, role: str, ttl: timedelta) -> str:
    """A new one-time token for member `name` in `role`."""
    if role not in ROLES:
        raise ValidationError("--role", role, f"must be one of {', '.join(ROLES)}")
    seed = secrets.token_bytes(_SEED)
    key = _key_from_seed(seed)
    cert = issue_member(ca, key.public_key(), parse_member_name(name), ENROL_PREFIX + role, ttl)
    der = serialization.Encoding.DER
    blob = _pack(ca.certificate.public_bytes(der), cert.public_bytes(der), seed)
    return PREFIX + base64.urlsafe_b64encode(blob).decode().rstrip("=")


def decode(token: str) -> Invitation:
    """Unpack a token; ValidationError (naming no secret) when it is not one."""
    text = str(token).strip()
    if not text.startswith(PREFIX):
        raise ValidationError("--token", text[:12] + "...", f"is not a gotunnel team token (they start with {PREFIX})")
    try:
        body = text[len(PREFIX):]
        parts = _unpack(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        ca_der, cert_der, seed = parts
        ca = x509.load_der_x509_certificate(ca_der)
        cert = x509.load_der_x509_certificate(cert_der)
        cert.verify_directly_issued_by(ca)
        member = member_of(cert)
    except (ValueError, TypeError, ValidationError) as exc:
        raise ValidationError("--token", text[:12] + "...", f"is damaged or not a team token ({type(exc).__name__})") from None
    if not member.enrolling or len(seed) != _SEED:
        raise ValidationError("--token", text[:12] + "...", "is not an enrolment token")
    key = _key_from_seed(seed)
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey) or key.public_key().public_numbers() != public.public_numbers():
        raise ValidationError("--token", text[:12] + "...", "is damaged (its key does not match)")
    return Invitation(pem(ca), pem(cert), key_to_pem(key), member.name, member.role[len(ENROL_PREFIX):])
