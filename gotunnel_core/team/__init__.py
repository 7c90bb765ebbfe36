"""Team mode: many machines, one set of names (`gotunnel team`, `agent`; the Envoy plugin adds
`hub` and `edge`). See docs/team-edge.md for the design.

Needs the `team` extra (`pip install 'gotunnel-core[team]'`): grpcio and aetcd.
"""
