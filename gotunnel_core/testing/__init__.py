"""gotunnel's test kit, for the core's tests and for plugin authors (like tox's `tox.pytest`).

Installed with gotunnel-core; pytest loads its plugin (`gotunnel_core.testing.plugin`, entry point
`pytest11: gotunnel`) automatically, which provides the `gotunnel` and `echo_backend` fixtures and
the `--gotunnel-engine NAME` option that runs the engine conformance suite
(`gotunnel_core.testing.conformance`) against an installed engine.

Modules: `runner` (the CLI runner, `free_port`, `wait_for`, `stop_pid`, `pid_gone`), `backends` (echo, SSE,
upload/download and websocket servers, keep-alive clients), `engines` (an engine on an event loop
thread, a throwaway PKI, route tables, low-level clients), `golden` (render golden files),
`matrix` (the README engine matrix), `conformance` (the suite and its behaviour registry).
"""

from __future__ import annotations

from .runner import Gotunnel, Result, free_port, pid_gone, stop_pid, wait_for

__all__ = ["Gotunnel", "Result", "free_port", "pid_gone", "stop_pid", "wait_for"]
