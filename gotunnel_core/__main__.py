"""`python -m gotunnel_core` runs the CLI (the daemon is spawned this way)."""

import sys

from .memory import background_command

if background_command(sys.argv[1:]) is not None:
    # The daemon (and a team hub or edge) never draws on a terminal, but importing structlog pulls
    # in rich and pygments for pretty tracebacks when they are installed: 3.7 MiB resident,
    # measured, in processes meant to stay small (the daemon with 1,000 idle connections, a hub
    # under 200 MiB). structlog works without them; gotunnel's own rich code (top, status) runs
    # in the interactive commands, never here.
    sys.modules.setdefault("rich", None)  # type: ignore[arg-type]

from .cli import main  # noqa: E402

main()
