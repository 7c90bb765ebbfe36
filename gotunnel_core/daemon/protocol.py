"""Wire format of the daemon's unix-socket API: one JSON request line, one JSON response line.

Request: {"op": NAME, "args": {...}}. Response: {"ok": true, "result": ...} or
{"ok": false, "error": MESSAGE, "hint": HINT|null, "exit_code": 1|2}.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import GotunnelError, RuntimeFailure, UsageError

MAX_MESSAGE = 16 * 1024 * 1024


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


class DaemonStopping(RuntimeFailure):
    """The daemon is shutting down (`stop --all`) and takes no more changes: start a new one."""


def error_response(exc: GotunnelError) -> dict[str, Any]:
    response = {"ok": False, "error": exc.message, "hint": exc.hint, "exit_code": exc.exit_code}
    if isinstance(exc, DaemonStopping):
        response["code"] = "stopping"
    return response


def raise_for_response(response: dict[str, Any]) -> Any:
    """Return the result of an ok response, or raise the error it carries with its exit code."""
    if response.get("ok"):
        return response.get("result")
    if response.get("code") == "stopping":
        raise DaemonStopping(str(response.get("error", "the daemon is stopping")), response.get("hint"))
    cls = UsageError if response.get("exit_code") == 2 else RuntimeFailure
    raise cls(str(response.get("error", "daemon error")), response.get("hint"))
