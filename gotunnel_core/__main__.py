"""`python -m gotunnel_core` runs the CLI (the daemon is spawned this way)."""

import sys

from .memory import is_daemon_argv

if is_daemon_argv(sys.argv[1:]):
    # The daemon never draws on a terminal (it logs JSON to a file), but importing structlog pulls
    # in rich and pygments for pretty tracebacks when they are installed: 3.7 MiB resident,
    # measured, in a process meant to stay small with 1,000 idle connections. structlog works
    # without them; gotunnel's own rich code (top, status) runs in the CLI, never here.
    sys.modules.setdefault("rich", None)  # type: ignore[arg-type]

from .cli import main  # noqa: E402

main()
