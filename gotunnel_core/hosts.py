"""Manage gotunnel's names in the system hosts file without disturbing anything else in it.

All of gotunnel's entries live in one marker-delimited block::

    # BEGIN gotunnel
    # Managed by gotunnel; remove with: sudo gotunnel hosts clean
    127.0.0.1	myapp.local
    ::1	myapp.local
    # END gotunnel

Every byte outside that block is preserved exactly: the file is handled as bytes, never
decoded, so comments, CRLF line endings, tabs, blank lines and non-UTF-8 bytes survive.
Names are matched exactly (removing ``app.local`` never touches ``myapp.local``), and lines
outside the block -- even ones naming our hosts -- are never edited.

No trailing newline: if the file does not end in a line break when the block is appended,
a separator line break is written before the block and the block records that it did so
(``SEPARATOR_NOTE``). Removing the block while it is still at the end of the file removes
that separator again, so ``add`` followed by ``clean`` restores the original bytes exactly.
If someone has appended lines after the block in the meantime, the separator is kept, since
removing it would glue their last line onto ours.

Writes are read-modify-write under a ``filelock`` lock file next to the hosts file
(``<hosts>.gotunnel.lock``) and replace the file atomically (temp file in the same
directory, fsync, mode and owner copied, rename, directory fsync). If the rename is refused
because the file is a bind mount (``EBUSY``/``EXDEV``, as with ``/etc/hosts`` in Docker
containers), we fall back to rewriting it in place with an fsync; a crash during that
rewrite can leave a partially written file, so it is logged and reported through
``HostsFile.last_write_method``.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from filelock import FileLock, Timeout

from .errors import PermissionProblem, RuntimeFailure, ValidationError

log = logging.getLogger(__name__)

BEGIN_MARKER = b"# BEGIN gotunnel"
END_MARKER = b"# END gotunnel"
SEPARATOR_NOTE = b"# gotunnel added the line break before this block; it goes away with the block"
LOOPBACKS = (b"127.0.0.1", b"::1")
DEFAULT_FIX_COMMAND = "sudo gotunnel hosts sync"
DEFAULT_CLEAN_COMMAND = "sudo gotunnel hosts clean"
LOCK_SUFFIX = ".gotunnel.lock"
TEMP_SUFFIX = ".gotunnel.tmp"

_BAD_NAME_RE = re.compile(r"[\s#\x00-\x1f\x7f]")

WriteMethod = Literal["none", "rename", "in-place"]
_Change = Callable[[frozenset[str]], frozenset[str]]


def default_hosts_path() -> Path:
    """Return the system hosts file: /etc/hosts on POSIX, the drivers\\etc\\hosts file on Windows."""
    if sys.platform == "win32":
        root = os.environ.get("SystemRoot", r"C:\Windows")
        return Path(root) / "System32" / "drivers" / "etc" / "hosts"
    return Path("/etc/hosts")


def _check_name(name: str) -> bytes:
    """Refuse names that could corrupt the file or be read as something else; return them as bytes."""
    if not isinstance(name, str) or not name:
        raise ValidationError("host name", name, "must be a non-empty string")
    if _BAD_NAME_RE.search(name):
        raise ValidationError("host name", name, "must not contain whitespace, '#' or control characters")
    try:
        return name.encode("ascii")
    except UnicodeEncodeError:
        raise ValidationError("host name", name, "must be ASCII (use the IDNA/punycode form)") from None


def _marker_lines(data: bytes, marker: bytes) -> list[int]:
    """Offsets of the lines consisting of `marker` alone, give or take ASCII whitespace (and so CRLF).

    Scans with bytes.find rather than a per-line regex: hosts files can be megabytes (ad blockers).
    """
    found = []
    pos = data.find(marker)
    while pos >= 0:
        start = _line_start(data, pos)
        end = data.find(b"\n", pos)
        if data[start : len(data) if end < 0 else end].strip() == marker:
            found.append(pos)
        pos = data.find(marker, pos + len(marker))
    return found


def _line_start(data: bytes, pos: int) -> int:
    """Offset of the start of the line containing `pos`."""
    return data.rfind(b"\n", 0, pos) + 1


def _line_end(data: bytes, pos: int) -> int:
    """Offset just past the line break ending the line containing `pos` (or EOF)."""
    nl = data.find(b"\n", pos)
    return len(data) if nl < 0 else nl + 1


@dataclass(frozen=True)
class _Parsed:
    """A hosts file split around gotunnel's block: `before + block + after == data`."""

    before: bytes
    block: bytes
    after: bytes
    names: frozenset[str]
    separator_added: bool
    eol: bytes
    has_block: bool


def _detect_eol(data: bytes) -> bytes:
    """Use the file's own line ending (CRLF or LF) for our lines; LF for an empty file on POSIX."""
    nl = data.find(b"\n")
    if nl < 0:
        return b"\r\n" if sys.platform == "win32" else b"\n"
    return b"\r\n" if nl > 0 and data[nl - 1 : nl] == b"\r" else b"\n"


def _parse(data: bytes, path: Path) -> _Parsed:
    """Locate the single gotunnel block; refuse a malformed one rather than guess."""
    begins = _marker_lines(data, BEGIN_MARKER)
    ends = _marker_lines(data, END_MARKER)
    hint = f"edit {path} by hand so it has at most one '{BEGIN_MARKER.decode()}' ... '{END_MARKER.decode()}' block"
    if not begins and not ends:
        return _Parsed(data, b"", b"", frozenset(), False, _detect_eol(data), False)
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        raise RuntimeFailure(
            f"hosts file {str(path)!r} has a malformed gotunnel block "
            f"({len(begins)} BEGIN and {len(ends)} END marker(s)); refusing to guess what to change",
            hint=hint,
        )
    start = _line_start(data, begins[0])
    inner_start = _line_end(data, begins[0])
    inner_end = ends[0]
    stop = _line_end(data, ends[0])
    begin_line = data[start:inner_start]
    eol = b"\r\n" if begin_line.endswith(b"\r\n") else b"\n"
    names: set[str] = set()
    separator_added = False
    for raw in data[inner_start:inner_end].split(b"\n"):
        line = raw.strip()
        if not line:
            continue
        if line.startswith(b"#"):
            separator_added = separator_added or line == SEPARATOR_NOTE
            continue
        fields = line.split(b"#", 1)[0].split()
        for field in fields[1:]:
            names.add(field.decode("ascii", "replace").lower())
    return _Parsed(data[:start], data[start:stop], data[stop:], frozenset(names), separator_added, eol, True)


def _render(parsed: _Parsed, names: frozenset[str], clean_command: str) -> bytes:
    """Return the whole new file content with the block holding exactly `names` (none: no block)."""
    before, after = parsed.before, parsed.after
    separator = parsed.separator_added
    eol = parsed.eol
    if not names:
        if separator and not after and before.endswith(eol):
            # We added this line break when appending the block; drop it to restore the original.
            before = before[: -len(eol)]
        return before + after
    if not parsed.has_block:
        separator = bool(before) and not before.endswith(b"\n")
        if separator:
            before += eol
    lines = [BEGIN_MARKER, f"# Managed by gotunnel; remove with: {clean_command}".encode()]
    if separator:
        lines.append(SEPARATOR_NOTE)
    for name in sorted(names):
        encoded = name.encode("ascii")
        lines.extend(ip + b"\t" + encoded for ip in LOOPBACKS)
    lines.append(END_MARKER)
    return before + eol.join(lines) + eol + after


class HostsFile:
    """gotunnel's block in one hosts file; every change is locked, atomic and leaves other bytes alone."""

    def __init__(
        self,
        path: Path,
        *,
        lock_timeout: float = 10.0,
        fix_command: str = DEFAULT_FIX_COMMAND,
        clean_command: str = DEFAULT_CLEAN_COMMAND,
    ) -> None:
        self.path = Path(path)
        self.lock_timeout = lock_timeout
        self.fix_command = fix_command
        self.clean_command = clean_command
        # How the last mutating call wrote the file: "none", "rename" or "in-place" (bind mount).
        self.last_write_method: WriteMethod = "none"

    # -- public API -------------------------------------------------------------------------

    def entries(self) -> list[str]:
        """Names currently in gotunnel's block, sorted; locked when we may create the lock file."""
        target = self._target()
        try:
            lock = self._lock(target)
            lock.acquire()
        except OSError:
            # Unprivileged readers (e.g. `gotunnel status`) cannot create the lock file, and a
            # stuck writer should not block a read; the file is normally replaced by rename, so
            # an unlocked read still sees a whole version (only the bind-mount fallback is torn-able).
            return sorted(_parse(self._read(target), target).names)
        try:
            return sorted(_parse(self._read(target), target).names)
        finally:
            lock.release()

    def add(self, names: Iterable[str]) -> bool:
        """Ensure every name maps to loopback in our block; True if the file changed."""
        wanted = self._names(names)
        return self._update(lambda current: current | wanted)

    def remove(self, names: Iterable[str]) -> bool:
        """Drop exactly these names from our block (never by substring); True if the file changed."""
        unwanted = self._names(names)
        return self._update(lambda current: current - unwanted)

    def sync(self, names: Iterable[str]) -> bool:
        """Make our block hold exactly these names (no block if none); True if the file changed."""
        wanted = self._names(names)
        return self._update(lambda current: wanted)

    def clean(self) -> bool:
        """Remove our block entirely, restoring the bytes we added; True if the file changed."""
        return self._update(lambda current: frozenset())

    # -- internals --------------------------------------------------------------------------

    @staticmethod
    def _names(names: Iterable[str]) -> frozenset[str]:
        """Validate (again: this file is system-wide) and normalise the caller's names."""
        if isinstance(names, (str, bytes)):
            raise TypeError("names must be an iterable of names, not a single string")
        result = []
        for name in names:
            _check_name(name)
            result.append(name.lower())
        return frozenset(result)

    def _target(self) -> Path:
        """The real file to edit: follow symlinks so we replace the file, not the link."""
        return Path(os.path.realpath(self.path))

    def _lock(self, target: Path) -> FileLock:
        """The inter-process lock beside the hosts file; the directory must be writable anyway to rename."""
        return FileLock(str(target) + LOCK_SUFFIX, timeout=self.lock_timeout, mode=0o644)

    def _denied(self, target: Path, what: str) -> PermissionProblem:
        """The error for missing privileges: names the path, hints the privileged command."""
        return PermissionProblem(f"cannot write hosts file {str(target)!r}: {what}", hint=self.fix_command)

    def _check_access(self, target: Path) -> None:
        """Refuse up front, before touching anything, when we clearly cannot replace the file."""
        kwargs = {"effective_ids": True} if os.access in os.supports_effective_ids else {}
        if target.exists() and not os.access(target, os.W_OK, **kwargs):
            raise self._denied(target, "no write permission on the file")
        if not os.access(target.parent, os.W_OK | os.X_OK, **kwargs):
            raise self._denied(target, f"no write permission on its directory {str(target.parent)!r}")

    def _read(self, target: Path) -> bytes:
        """The file's raw bytes (a missing file reads as empty)."""
        try:
            return target.read_bytes()
        except FileNotFoundError:
            return b""
        except PermissionError as exc:
            raise PermissionProblem(
                f"cannot read hosts file {str(target)!r}: {exc.strerror}", hint=self.fix_command
            ) from None

    def _update(self, change: _Change) -> bool:
        """Read, change the name set, and write back only if the bytes differ; all under the lock."""
        self.last_write_method = "none"
        target = self._target()
        self._check_access(target)
        lock = self._lock(target)
        try:
            lock.acquire()
        except Timeout:
            raise RuntimeFailure(
                f"timed out after {self.lock_timeout:g}s waiting for the lock {lock.lock_file!r}",
                hint="another gotunnel is editing the hosts file; retry, or remove the lock file if none is running",
            ) from None
        except PermissionError as exc:
            raise self._denied(target, f"cannot create lock file {lock.lock_file!r} ({exc.strerror})") from None
        try:
            self._remove_stale_temps(target)
            data = self._read(target)
            parsed = _parse(data, target)
            new = _render(parsed, frozenset(change(parsed.names)), self.clean_command)
            if new == data:
                return False
            self.last_write_method = self._write(target, new)
            return True
        finally:
            lock.release()

    @staticmethod
    def _temp_prefix(target: Path) -> str:
        """Hidden, recognisable temp names so stale ones can be swept."""
        return f".{target.name}."

    def _remove_stale_temps(self, target: Path) -> None:
        """Delete temp files left by a writer killed mid-write; only lock holders create them, and we hold it."""
        prefix = self._temp_prefix(target)
        for stale in target.parent.iterdir():
            if not (stale.name.startswith(prefix) and stale.name.endswith(TEMP_SUFFIX)):
                continue
            try:
                stale.unlink()
            except OSError as exc:
                log.debug("could not remove stale temp file %s: %s", stale, exc)

    def _write(self, target: Path, data: bytes) -> WriteMethod:
        """Replace `target` atomically; fall back to an in-place rewrite only for bind mounts."""
        try:
            st: os.stat_result | None = target.stat()
        except FileNotFoundError:
            st = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=self._temp_prefix(target), suffix=TEMP_SUFFIX, dir=target.parent)
        except PermissionError as exc:
            raise self._denied(target, exc.strerror or "permission denied") from None
        try:
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                    self._copy_metadata(fh.fileno(), st)
                os.replace(tmp, target)
            except OSError as exc:
                os.unlink(tmp)
                if exc.errno in (errno.EBUSY, errno.EXDEV):
                    return self._write_in_place(target, data, exc)
                raise
        except PermissionError as exc:
            raise self._denied(target, exc.strerror or "permission denied") from None
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        self._fsync_dir(target.parent)
        return "rename"

    @staticmethod
    def _copy_metadata(fd: int, st: os.stat_result | None) -> None:
        """Give the new file the old one's mode and owner (hosts must stay world-readable)."""
        mode = 0o644 if st is None else st.st_mode & 0o7777
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        if st is not None and hasattr(os, "fchown"):
            try:
                os.fchown(fd, st.st_uid, st.st_gid)
            except PermissionError:
                # Unprivileged: we can only own it ourselves, which is what the temp file already is.
                pass

    def _write_in_place(self, target: Path, data: bytes, cause: OSError) -> WriteMethod:
        """Rewrite a bind-mounted file through its own inode: not atomic, so say so loudly."""
        log.warning(
            "hosts file %s cannot be replaced by rename (%s; probably a bind mount); "
            "rewriting it in place -- a crash mid-write could leave it partially written",
            target,
            os.strerror(cause.errno) if cause.errno else cause,
        )
        with open(target, "r+b") as fh:
            fh.write(data)
            fh.truncate()
            fh.flush()
            os.fsync(fh.fileno())
        return "in-place"

    @staticmethod
    def _fsync_dir(directory: Path) -> None:
        """Persist the rename itself; directories cannot be opened for fsync on Windows."""
        if sys.platform == "win32":
            return
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
