"""The persisted desired state: which tunnels should be running, kept across daemon restarts.

Written atomically (temp file + rename) under a file lock, so a crash never leaves a half
file and two writers never lose each other's changes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from filelock import FileLock

from .errors import RuntimeFailure
from .fsutil import atomic_write
from .models import Tunnel

_VERSION = 1


class TunnelStore:
    """Read and update `tunnels.json` in the state directory."""

    def __init__(self, path: Path, lock_path: Path) -> None:
        self.path = path
        self._lock = FileLock(str(lock_path), timeout=30)

    def load(self) -> list[Tunnel]:
        """The stored tunnels (validated again: the file is input like any other)."""
        with self._lock:
            return self._read()

    def update(self, change: Callable[[list[Tunnel]], list[Tunnel]]) -> list[Tunnel]:
        """Apply `change` to the stored list under the lock and write the result atomically."""
        with self._lock:
            tunnels = change(self._read())
            payload = {"version": _VERSION, "tunnels": [t.to_dict() for t in tunnels]}
            atomic_write(self.path, json.dumps(payload, indent=2, sort_keys=True) + "\n", mode=0o600)
            return tunnels

    def _read(self) -> list[Tunnel]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise RuntimeFailure(f"state file {str(self.path)!r} is unreadable: {exc}",
                                 hint="move it away; gotunnel starts with no tunnels then") from None
        return [Tunnel.from_raw(item) for item in raw.get("tunnels", [])]
