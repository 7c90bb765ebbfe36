"""Team mode: many machines, one set of names (`gotunnel team`, `agent`; the Envoy plugin adds
`hub` and `edge`). See docs/team-edge.md for the design.

Needs the `team` extra (`pip install 'gotunnel-core[team]'`): grpcio and aetcd.
"""

import os


def quiet_grpc_core() -> None:
    """Silence gRPC's C-core logging (call before grpc is first imported): a refused TLS
    handshake prints several lines of OpenSSL internals to stderr, while team mode reports
    every failure itself, in one line (the CLI) or as a structured log event (hub, agent)."""
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
