"""The persisted desired state: which tunnels should be running, and how the daemon serving them
was started, kept across daemon restarts.

`tunnels.json` holds `{"version": 2, "daemon": {settings}, "tunnels": [...]}`. The daemon writes
its settings (engine, ports, bind address, names, limits: everything that shapes serving) when
it starts; a daemon restoring the tunnels after a crash starts with exactly those, so a plain
`gotunnel list` never brings tunnels back on other ports or a wider bind address.

Written atomically (temp file + rename) under a file lock, so a crash never leaves a half
file and two writers never lose each other's changes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping

from filelock import FileLock

from .errors import RuntimeFailure
from .fsutil import atomic_write
from .models import Tunnel

_VERSION = 2


class TunnelStore:
    """Read and update `tunnels.json` in the state directory."""

    def __init__(self, path: Path, lock_path: Path) -> None:
        self.path = path
        self._lock = FileLock(str(lock_path), timeout=30)

    def load(self) -> list[Tunnel]:
        """The stored tunnels (validated again: the file is input like any other)."""
        with self._lock:
            return [Tunnel.from_raw(item) for item in self._read().get("tunnels", [])]

    def update(self, change: Callable[[list[Tunnel]], list[Tunnel]]) -> list[Tunnel]:
        """Apply `change` to the stored list under the lock and write the result atomically."""
        with self._lock:
            raw = self._read()
            tunnels = change([Tunnel.from_raw(item) for item in raw.get("tunnels", [])])
            self._write(raw.get("daemon"), tunnels)
            return tunnels

    def save_settings(self, settings: Mapping[str, Any]) -> None:
        """Record the settings of the daemon that serves the stored tunnels."""
        with self._lock:
            raw = self._read()
            self._write(dict(settings), [Tunnel.from_raw(item) for item in raw.get("tunnels", [])])

    def clear(self) -> None:
        """Forget every tunnel and the daemon's settings (`gotunnel stop --all`)."""
        with self._lock:
            self._write(None, [])

    def _write(self, settings: Mapping[str, Any] | None, tunnels: list[Tunnel]) -> None:
        payload: dict[str, Any] = {"version": _VERSION, "tunnels": [t.to_dict() for t in tunnels]}
        if settings is not None:
            payload["daemon"] = settings
        atomic_write(self.path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n", mode=0o600)

    def _read(self) -> dict[str, Any]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise RuntimeFailure(f"state file {str(self.path)!r} is unreadable: {exc}",
                                 hint="move it away; gotunnel starts with no tunnels then") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("tunnels", []), list):
            raise RuntimeFailure(f"state file {str(self.path)!r} is not a gotunnel state file",
                                 hint="move it away; gotunnel starts with no tunnels then")
        return raw


def read_saved(path: Path) -> tuple[dict[str, Any] | None, int]:
    """(the saved daemon settings or None, how many tunnels are saved), for the CLI; a missing or
    unreadable file counts as nothing saved (the daemon itself reports a broken one)."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return None, 0
    if not isinstance(raw, dict):
        return None, 0
    settings = raw.get("daemon")
    tunnels = raw.get("tunnels")
    return (settings if isinstance(settings, dict) else None), (len(tunnels) if isinstance(tunnels, list) else 0)
