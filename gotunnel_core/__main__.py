"""`python -m gotunnel_core` runs the CLI (the daemon is spawned this way)."""

from .cli import main

main()
