"""The audit log: every control operation as one JSON line in the state directory.

The daemon records each operation that changes state (start, stop, stop --all, renew), with the
peer's uid and pid read from the unix socket (SO_PEERCRED, so a client cannot claim another
identity), the operation, its arguments (header values left out: they may hold secrets), its
result and the time. The CLI records what it does without the daemon (trust, untrust) with its
own uid and pid. Files are owner-only (0600) and rotated by size: `audit.jsonl`, `.1` ... `.N`.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping

#: Rotate when the current file passes this size; keep this many older files.
MAX_BYTES = 1024 * 1024
BACKUPS = 5
#: Daemon operations that change state (the read-only ones, e.g. list or metrics, are not audited).
AUDITED_OPS = frozenset({"start", "stop", "stop_all", "renew"})


@dataclass(frozen=True)
class Peer:
    """Who is on the other end of a unix socket, as the kernel says."""

    pid: int
    uid: int
    gid: int


def peer_credentials(sock: socket.socket) -> Peer | None:
    """SO_PEERCRED of a connected unix socket (Linux); None where the platform has none."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    except OSError:
        return None
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid, uid, gid)


def summarize_args(op: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments worth keeping: tunnels by name and backends (no header values: they may be secrets)."""
    if op == "start":
        tunnels = []
        for raw in args.get("tunnels") or ():
            if isinstance(raw, Mapping):
                backends = [b.get("url") if isinstance(b, Mapping) else b for b in raw.get("backends") or ()]
                tunnels.append({"name": raw.get("name"), "backends": backends})
        return {"tunnels": tunnels}
    return {k: v for k, v in args.items() if isinstance(v, (str, int, float, bool, list)) or v is None}


class AuditLog:
    """Appends entries to `path` (0600), rotating by size; safe across threads of one process."""

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()

    def record(self, op: str, args: Mapping[str, Any], *, ok: bool, error: str | None = None,
               peer: Peer | None = None, source: str = "daemon") -> dict[str, Any]:
        """Write one entry and return it."""
        entry: dict[str, Any] = {
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "source": source,
            "uid": peer.uid if peer else os.getuid(),
            "pid": peer.pid if peer else os.getpid(),
            "op": op,
            "args": summarize_args(op, args),
            "result": "ok" if ok else "error",
        }
        if error:
            entry["error"] = error
        line = json.dumps(entry, sort_keys=True, default=str) + "\n"
        with self._lock:
            self._rotate_if_needed(len(line))
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        return entry

    def _rotate_if_needed(self, incoming: int) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size + incoming <= self.max_bytes:
            return
        for index in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{index + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))


def audit_files(path: Path, backups: int = BACKUPS) -> list[Path]:
    """The log and its rotated files, oldest first."""
    older = [path.with_name(f"{path.name}.{i}") for i in range(backups, 0, -1)]
    return [p for p in [*older, path] if p.exists()]


def read_entries(path: Path) -> Iterator[dict[str, Any]]:
    """Every entry, oldest first; a torn or foreign line is skipped."""
    for file in audit_files(path):
        with file.open("r", errors="replace") as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict):
                    yield entry


def format_entry(entry: Mapping[str, Any]) -> str:
    """One human line: time, who, what, result."""
    import pwd

    uid = entry.get("uid")
    try:
        who = f"{pwd.getpwuid(int(uid)).pw_name}({uid})"  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError):
        who = f"uid {uid}"
    args = entry.get("args") or {}
    if entry.get("op") == "start":
        detail = ", ".join(f"{t.get('name')} -> {', '.join(map(str, t.get('backends') or []))}"
                           for t in args.get("tunnels") or [])
    else:
        detail = ", ".join(map(str, args.get("names") or [])) or ""
    result = entry.get("result", "?")
    if entry.get("error"):
        result += f": {entry['error']}"
    return f"{entry.get('time', '?')}  {who} pid {entry.get('pid')}  {entry.get('op')} {detail}".rstrip() + f"  [{result}]"
