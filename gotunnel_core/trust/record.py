"""`trust.json` in the state directory: exactly what `gotunnel trust` installed, per store.

`--uninstall` removes what this file lists and nothing else. Written atomically under a file
lock; a store's entry is added right after that store's install succeeded and dropped right
after its removal, so the file is true even if the command dies half-way through the stores.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from filelock import FileLock

from ..errors import RuntimeFailure
from ..fsutil import atomic_write

VERSION = 1


class TrustRecord:
    """Read and update the record file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = FileLock(str(self.path) + ".lock", mode=0o600, timeout=30)

    def load(self) -> dict[str, dict[str, Any]]:
        """Store id -> that store's install record."""
        with self._lock:
            return self._read()

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise RuntimeFailure(f"trust record {str(self.path)!r} is unreadable: {exc}",
                                 hint="fix or remove it; gotunnel then no longer knows what it installed") from None
        stores = raw.get("stores") if isinstance(raw, dict) else None
        if not isinstance(stores, dict):
            raise RuntimeFailure(f"trust record {str(self.path)!r} has no 'stores' table")
        return stores

    def _update(self, change: Callable[[dict[str, dict[str, Any]]], None]) -> None:
        with self._lock:
            stores = self._read()
            change(stores)
            payload = {"version": VERSION, "stores": stores}
            atomic_write(self.path, json.dumps(payload, indent=2, sort_keys=True) + "\n", mode=0o600)

    def put(self, store_id: str, entry: dict[str, Any]) -> None:
        entry = {**entry, "installed_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self._update(lambda stores: stores.__setitem__(store_id, entry))

    def drop(self, store_id: str) -> None:
        def forget(stores: dict[str, dict[str, Any]]) -> None:
            stores.pop(store_id, None)

        self._update(forget)
