"""Error types that carry the CLI exit code and a hint, so every layer can fail the same way."""

from __future__ import annotations


class GotunnelError(Exception):
    """A failure reported to the user as one `error: ...` line plus an optional hint."""

    exit_code: int = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(GotunnelError):
    """Bad input from the user (flag, config file, environment): exit code 2."""

    exit_code = 2


class ValidationError(UsageError):
    """A value refused by a model; names the field and the bad value."""

    def __init__(self, field: str, value: object, reason: str, hint: str | None = None) -> None:
        super().__init__(f"invalid {field} {value!r}: {reason}", hint)
        self.field = field
        self.value = value
        self.reason = reason


class RuntimeFailure(GotunnelError):
    """Something went wrong while doing valid work (engine failed, daemon unreachable): exit code 1."""

    exit_code = 1


class PermissionProblem(RuntimeFailure):
    """The operation needs privileges or ownership we do not have; the hint says how to proceed."""
