"""Who is who in a team: the team CA, member certificates, names under the team domain.

The team CA is a `gotunnel_core.certs` CA whose name constraints permit only the team domain
(and exclude every IP address). It signs three kinds of leaves:

- member certificates: subject CN = the member's name, OU = its role (`agent`, `edge`, or
  `enrol-agent` / `enrol-edge` for the short-lived certificate inside an invitation), and the
  DNS name `<name>.<role>.member.<domain>` (BoringSSL, in gRPC, refuses a leaf without SAN
  under a name-constrained CA). clientAuth only, so they can never serve TLS, except an agent's:
  it is also serverAuth, because the agent serves the edge-to-agent hop with it, and edges
  accept exactly `<user>.agent.member.<domain>` there (`Team.agent_name`), so one agent can
  never answer for another's names. No tunnel can be published under `member.`;
- the hubs' server certificate (serverAuth, `hub.<domain>`);
- the edges' certificates (serverAuth, `*.<user>.<domain>` per user, or one name), over SDS.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..certs import CertificateAuthority, sign_leaf, utc_now
from ..certs.authority import CLOCK_SKEW
from ..errors import ValidationError

ROLES = ("agent", "edge")
#: Labels under the team domain that name the team's own certificates, never a member.
RESERVED_LABELS = ("hub", "member", "bucket")
#: Edge certificates: every user's wildcard is in one of this many certificates (by hash), so
#: the edges' listener names a fixed set of SDS secrets and never changes when users come and go.
CERT_BUCKETS = 64
ENROL_PREFIX = "enrol-"
DEFAULT_TEMPLATE = "{name}.{user}"
_MEMBER_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")
_TEMPLATE_FIELDS = re.compile(r"\{([a-z]*)\}")


def parse_member_name(raw: object) -> str:
    """A member (user, agent or edge) name: one lower-case DNS label of at most 32 characters."""
    if not isinstance(raw, str) or not _MEMBER_RE.match(raw):
        raise ValidationError("member name", raw, "must be one DNS label: a-z, 0-9 and inner hyphens, up to 32 characters")
    if raw in RESERVED_LABELS:
        raise ValidationError("member name", raw, "is reserved (the team's own certificates use it)")
    return raw


def parse_template(raw: object) -> str:
    """The published-name template: `{name}` (the tunnel) and optionally `{user}`, dot-separated."""
    if not isinstance(raw, str) or "{name}" not in raw:
        raise ValidationError("template", raw, "must contain {name}, e.g. '{name}.{user}'")
    fields = set(_TEMPLATE_FIELDS.findall(raw))
    if fields - {"name", "user"}:
        raise ValidationError("template", raw, "may only use {name} and {user}")
    sample = raw.replace("{name}", "a").replace("{user}", "b")
    if not all(re.match(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$", label) for label in sample.split(".")):
        raise ValidationError("template", raw, "must form DNS labels joined by dots, e.g. '{name}.{user}' or '{name}-{user}'")
    return raw


@dataclass(frozen=True)
class Team:
    """The team's domain and name template (what every hub and agent agrees on)."""

    domain: str
    template: str = DEFAULT_TEMPLATE

    def published_name(self, tunnel: str, user: str) -> str:
        """`api` of user `alice` -> `api.alice.<domain>` (by the template)."""
        if tunnel.startswith("*."):
            raise ValidationError("tunnel name", tunnel, "wildcard tunnels are not published to the team")
        if "." in tunnel:
            raise ValidationError("tunnel name", tunnel, "team names are one label (NAME in NAME.USER.<domain>)")
        fqdn = f"{self.template.replace('{name}', tunnel).replace('{user}', user)}.{self.domain}"
        labels = fqdn[: -len(self.domain) - 1].split(".")
        if labels[-1] in RESERVED_LABELS:
            # An edge certificate for these would let whoever holds it pose as a hub or a member.
            raise ValidationError("tunnel name", tunnel, f"{fqdn} is reserved for the team's own certificates")
        return fqdn

    def local_part(self, fqdn: str) -> str:
        """`api.alice.<domain>` -> `api.alice` (the name under the domain)."""
        suffix = "." + self.domain
        if not fqdn.endswith(suffix):
            raise ValidationError("team name", fqdn, f"is not under the team domain {self.domain!r}")
        return fqdn[: -len(suffix)]

    def cert_group(self, fqdn: str) -> str:
        """The edge certificate covering `fqdn`: `*.<parent>` when the parent is below the domain
        (one wildcard per user with the default template), else the name itself."""
        local = self.local_part(fqdn)
        _, dot, parent = local.partition(".")
        return f"*.{parent}.{self.domain}" if dot else fqdn

    @property
    def scope_labels(self) -> int:
        """How many leading Host labels pick a name's route configuration on the edges: the
        labels of the template (`api.alice` -> 2; `api-alice` -> 1), i.e. one scope per name."""
        return self.template.count(".") + 1

    def scope_key(self, fqdn: str) -> list[str]:
        """The Host labels that select `fqdn`'s route configuration (`api.alice.<domain>` -> api, alice)."""
        return fqdn.split(".")[: self.scope_labels]

    def bucket_of(self, group: str) -> int:
        return int(hashlib.sha256(group.encode()).hexdigest()[:8], 16) % CERT_BUCKETS

    def bucket_placeholder(self, bucket: int) -> str:
        """The name every bucket certificate carries, so an empty bucket still has a certificate."""
        return f"b{bucket:02d}.bucket.{self.domain}"

    def agent_name(self, user: str) -> str:
        """The name in agent `user`'s certificate: what edges check on the edge-to-agent hop."""
        return f"{user}.agent.member.{self.domain}"

    @property
    def hub_name(self) -> str:
        """The DNS name in every hub's server certificate (clients check it, whatever the address)."""
        return f"hub.{self.domain}"


@dataclass(frozen=True)
class Member:
    """The identity in a member certificate."""

    name: str
    role: str
    serial: int
    not_after_ts: float

    @property
    def member_id(self) -> str:
        """Unique per certificate: two agents enrolled under one name are still two owners."""
        return f"{self.name}/{self.serial:x}"[:48]

    @property
    def enrolling(self) -> bool:
        return self.role.startswith(ENROL_PREFIX)


def member_of(cert: x509.Certificate) -> Member:
    """The member a certificate names; ValidationError when it is not a member certificate."""
    def attr(oid: x509.ObjectIdentifier) -> str:
        values = cert.subject.get_attributes_for_oid(oid)
        return str(values[0].value) if values else ""

    name, role = attr(NameOID.COMMON_NAME), attr(NameOID.ORGANIZATIONAL_UNIT_NAME)
    allowed = ROLES + tuple(ENROL_PREFIX + r for r in ROLES)
    if role not in allowed or not _MEMBER_RE.match(name):
        raise ValidationError("certificate", cert.subject.rfc4514_string(), "is not a team member certificate")
    return Member(name, role, cert.serial_number, cert.not_valid_after_utc.timestamp())


def member_subject(name: str, role: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role)])


def issue_member(ca: CertificateAuthority, public_key: ec.EllipticCurvePublicKey, name: str, role: str,
                 validity: timedelta) -> x509.Certificate:
    """A certificate for a member key: clientAuth (it authenticates to hubs), and for an agent
    also serverAuth (it serves the edge-to-agent hop for its one member name)."""
    now = utc_now()
    domain = ca.info().permitted_dns[0]
    san = f"{parse_member_name(name)}.{role}.member.{domain}"
    usage = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if role == "agent":
        usage.append(ExtendedKeyUsageOID.SERVER_AUTH)
    return sign_leaf(ca, public_key, (san,), (), not_before=now - CLOCK_SKEW, not_after=now + validity,
                     subject=member_subject(parse_member_name(name), role), usage=usage)


def can_serve(cert_pem: bytes) -> bool:
    """True when a certificate carries serverAuth (agents enrolled before the TLS hop lack it)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.SERVER_AUTH in usage


def issue_server(ca: CertificateAuthority, names: list[str], validity: timedelta) -> tuple[bytes, bytes, float]:
    """A serverAuth certificate and new key for `names` (PEM cert, PEM key, notAfter timestamp)."""
    from ..certs.authority import key_to_pem, new_private_key

    key = new_private_key()
    now = utc_now()
    cert = sign_leaf(ca, key.public_key(), names, (), not_before=now - CLOCK_SKEW, not_after=now + validity)
    return pem(cert), key_to_pem(key), cert.not_valid_after_utc.timestamp()


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def team_ca(directory: object, domain: str) -> CertificateAuthority:
    """The team CA in `directory`: may sign for `domain` and its subdomains only."""
    from pathlib import Path

    return CertificateAuthority(Path(str(directory)), only_domains=(domain,), common_name=f"gotunnel team CA {domain}")
