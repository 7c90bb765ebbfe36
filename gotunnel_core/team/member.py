"""A member's credentials on disk and its enrolment (`--token`) with a hub.

Layout, per role, under `<state>/team/<role>/` (0700): `ca.pem`, `cert.pem`, `key.pem` (0600),
`member.json` (name, role, domain, template).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..certs.authority import key_to_pem, new_private_key
from ..errors import RuntimeFailure
from ..fsutil import atomic_write, ensure_private_dir
from . import api, tokens
from .identity import Team


@dataclass(frozen=True)
class Credentials:
    """What a member presents to hubs."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    name: str
    role: str
    team: Team

    @property
    def not_after(self) -> float:
        return x509.load_pem_x509_certificate(self.cert_pem).not_valid_after_utc.timestamp()

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return api.client_credentials(self.ca_pem, self.cert_pem, self.key_pem)


def member_dir(state_root: Path, role: str) -> Path:
    return state_root / "team" / role


def load(directory: Path) -> Credentials | None:
    try:
        info = json.loads((directory / "member.json").read_text())
        return Credentials((directory / "ca.pem").read_bytes(), (directory / "cert.pem").read_bytes(),
                           (directory / "key.pem").read_bytes(), info["name"], info["role"],
                           Team(info["domain"], info["template"]))
    except (OSError, ValueError, KeyError):
        return None


def save(directory: Path, creds: Credentials) -> None:
    ensure_private_dir(directory)
    atomic_write(directory / "key.pem", creds.key_pem, mode=0o600)
    atomic_write(directory / "cert.pem", creds.cert_pem, mode=0o644)
    atomic_write(directory / "ca.pem", creds.ca_pem, mode=0o644)
    atomic_write(directory / "member.json", json.dumps({
        "name": creds.name, "role": creds.role, "domain": creds.team.domain, "template": creds.team.template,
    }, indent=2) + "\n", mode=0o600)


def _domain_of(ca_pem: bytes) -> str:
    """The team domain: the CA's one permitted DNS subtree."""
    ca = x509.load_pem_x509_certificate(ca_pem)
    constraints = ca.extensions.get_extension_for_class(x509.NameConstraints).value
    names = [g.value for g in constraints.permitted_subtrees or [] if isinstance(g, x509.DNSName)]
    if len(names) != 1:
        raise RuntimeFailure("the token's CA is not a gotunnel team CA (it must permit exactly one domain)")
    return str(names[0])


async def _call(hubs: list[str], hub_name: str, creds: grpc.ChannelCredentials, method: str,
                request: dict[str, Any]) -> dict[str, Any]:
    """One unary call, trying each hub in turn; the last error when none answers."""
    last: Exception | None = None
    for hub in hubs:
        async with grpc.aio.secure_channel(hub, creds, options=api.channel_options(hub_name)) as channel:
            call = channel.unary_unary(method, request_serializer=api.encode, response_deserializer=api.decode)
            try:
                return await call(request, timeout=10)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION,
                                  grpc.StatusCode.INVALID_ARGUMENT):
                    raise RuntimeFailure(f"hub {hub} refused: {exc.details()}") from None
                last = exc
    detail = last.details() if isinstance(last, grpc.aio.AioRpcError) else str(last)
    raise RuntimeFailure(f"no hub answered ({', '.join(hubs)}): {detail}",
                         hint="check the addresses, and that this machine holds a certificate of this team")


def enrol(hubs: list[str], token: str, directory: Path, expected_role: str) -> Credentials:
    """Use a one-time token: new key here, certificate from a hub, everything saved in `directory`."""
    invitation = tokens.decode(token)
    if invitation.role != expected_role:
        raise RuntimeFailure(f"this token enrols an {invitation.role}, not an {expected_role}",
                             hint=f"ask for `gotunnel team invite NAME --role {expected_role}`")
    domain = _domain_of(invitation.ca_pem)
    key = new_private_key()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    creds = api.client_credentials(invitation.ca_pem, invitation.cert_pem, invitation.key_pem)
    answer = asyncio.run(_call(hubs, f"hub.{domain}", creds, api.ENROL, {"public_key": public.decode()}))
    result = Credentials(invitation.ca_pem, answer["cert"].encode(), key_to_pem(key), answer["name"], answer["role"],
                         Team(answer["domain"], answer["template"]))
    save(directory, result)
    return result


async def renew_async(hubs: list[str], creds: Credentials, directory: Path) -> Credentials:
    """A fresh certificate for a new key, authenticated by the current one; saved in `directory`."""
    key = new_private_key()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    answer = await _call(hubs, creds.team.hub_name, creds.channel_credentials(), api.RENEW, {"public_key": public.decode()})
    result = Credentials(creds.ca_pem, answer["cert"].encode(), key_to_pem(key), creds.name, creds.role, creds.team)
    save(directory, result)
    return result


def renew(hubs: list[str], creds: Credentials, directory: Path) -> Credentials:
    return asyncio.run(renew_async(hubs, creds, directory))


def due(creds: Credentials) -> bool:
    """True once less than a third of the certificate's life is left (its life as issued: hubs
    back-date certificates by CLOCK_SKEW, which would otherwise make a short-lived one due at
    once and renewed on every check)."""
    import time

    from ..certs.authority import CLOCK_SKEW

    cert = x509.load_pem_x509_certificate(creds.cert_pem)
    span = cert.not_valid_after_utc - cert.not_valid_before_utc
    lifetime = (span - CLOCK_SKEW if span > CLOCK_SKEW else span).total_seconds()
    return creds.not_after - time.time() < lifetime / 3


def ensure(hubs: list[str], token: str | None, directory: Path, role: str) -> Credentials:
    """The saved credentials (renewed first when a third of their life is left), or a new
    enrolment with `token`; a clear error without either."""
    existing = load(directory)
    if existing is not None:
        return renew(hubs, existing, directory) if due(existing) else existing
    if not token:
        raise RuntimeFailure(f"this machine is not enrolled as a team {role} yet",
                             hint=f"pass --token from `gotunnel team invite NAME --role {role}`")
    return enrol(hubs, token, directory, role)
