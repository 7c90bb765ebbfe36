"""The agent API: gRPC methods carrying JSON messages, on the hub's port, over mutual TLS.

Methods (service `gotunnel.team.v1.Agent`):

- `Enrol` (unary): a member holding the enrolment certificate of an invitation sends the public
  key it generated; the hub answers with its member certificate (once per invitation).
- `Renew` (unary): a member sends a new public key and gets a fresh certificate.
- `Session` (bidirectional stream): an agent sends `{"port": P, "names": [...]}` whenever what
  it publishes changes (P is its TLS listener; `"plain": true` makes it a plain HTTP port)
  and `{"ping": true}` to stay alive; the hub answers each publication with what it accepted
  and refused (and why). Registrations live exactly as long as the session, plus at most the
  lease TTL when the agent vanishes without a word.

Messages are JSON (no generated code to keep in sync); the transport is real gRPC, so every
client gets HTTP/2, deadlines, keep-alives and TLS from grpcio.
"""

from __future__ import annotations

import json
from typing import Any

import grpc

SERVICE = "gotunnel.team.v1.Agent"
ENROL = f"/{SERVICE}/Enrol"
RENEW = f"/{SERVICE}/Renew"
SESSION = f"/{SERVICE}/Session"


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


def decode(raw: bytes) -> dict[str, Any]:
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("a message must be a JSON object")
    return data


def client_credentials(ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> grpc.ChannelCredentials:
    """Mutual TLS towards a hub: trust only the team CA, present the member certificate."""
    return grpc.ssl_channel_credentials(root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem)


def channel_options(hub_name: str) -> list[tuple[str, Any]]:
    """Check the hub's certificate for `hub.<domain>` whatever address it is dialled at."""
    return [("grpc.ssl_target_name_override", hub_name), ("grpc.keepalive_time_ms", 3000),
            ("grpc.keepalive_timeout_ms", 5000), ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.initial_reconnect_backoff_ms", 200), ("grpc.max_reconnect_backoff_ms", 1000)]


def parse_hubs(raw: str) -> list[str]:
    """`10.0.0.1:7443,10.0.0.2:7443` -> addresses (validated), in failover order."""
    from ..errors import ValidationError
    from ..models import parse_port

    out: list[str] = []
    for item in (p.strip() for p in str(raw).split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host:
            raise ValidationError("--hub", item, "expected ADDR:PORT")
        parse_port(port, "--hub port")
        out.append(item)
    if not out:
        raise ValidationError("--hub", raw, "needs at least one ADDR:PORT")
    return out
