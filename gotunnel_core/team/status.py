"""The agent's status file: written by `gotunnel agent`, read by `gotunnel status` (no grpc needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

STATUS_FILE = "status.json"


def read_status(directory: Path) -> dict[str, Any] | None:
    """The last status an agent wrote, if that agent still runs (else None)."""
    import psutil

    try:
        data = json.loads((directory / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not psutil.pid_exists(int(data.get("pid", 0))):
        return None
    return data


def agent_status(state_root: Path) -> dict[str, Any] | None:
    """The running agent's hub connection and published names, for `gotunnel status --json`."""
    return read_status(state_root / "team" / "agent")
