"""The `gotunnel` command line: the click group and error contract (`app`); the commands themselves
are in `gotunnel_core.commands`, registered through the same hook plugin commands use."""

from .app import CliState, cli, emit_json, main, pass_state

__all__ = ["CliState", "cli", "emit_json", "main", "pass_state"]
