"""`gotunnel sync`: render for an existing proxy, write atomically, validate against the host's
whole config, reload; a refused config puts the previous file back and the proxy is not touched.

This is what docker-gen + nginx-proxy or consul-template do, with the proxy's own validation and a
rollback in between. `watch` repeats it whenever a source (the config file, a certificate file,
with `--docker` the Docker follower's event counter) changes, polling: hashing a few small files
every `interval` seconds costs next to nothing, sees edits that keep the modification time, and
needs no new dependency.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

from .engine import Engine, EngineValidationError
from .errors import GotunnelError, RuntimeFailure, UsageError
from .fsutil import atomic_write

#: A config file is not secret (keys are referenced by path): readable like the host's own.
CONFIG_MODE = 0o644


@dataclass(frozen=True)
class SyncTarget:
    """Where and how to apply: the output path, the host's main config, the reload command."""

    out: Path
    main_config: Path | None = None
    reload_cmd: str | None = None
    fmt: str | None = None


@dataclass(frozen=True)
class SyncResult:
    """What one sync did: `changed` False means the output already held this config."""

    changed: bool
    files: tuple[Path, ...]


def output_paths(files: Mapping[str, str], out: Path) -> dict[Path, str]:
    """One rendered file goes to `out` itself; several go into the directory `out` by their names."""
    if len(files) == 1:
        return {out: next(iter(files.values()))}
    paths = {}
    for name, content in files.items():
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise RuntimeFailure(f"engine rendered a file outside the output directory: {name!r}")
        paths[out / name] = content
    return paths


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _restore(previous: Mapping[Path, bytes | None]) -> None:
    """Put each file back as it was (a file that did not exist is removed)."""
    for path, data in previous.items():
        if data is None:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        else:
            atomic_write(path, data, _mode(path))


def _mode(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        return CONFIG_MODE


def run_reload_cmd(command: str) -> None:
    """Run `--reload-cmd` (split like a shell would, not run by one); non-zero exit: RuntimeFailure."""
    argv = shlex.split(command)
    if not argv:
        raise UsageError("--reload-cmd is empty")
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    except OSError as exc:
        raise RuntimeFailure(f"--reload-cmd {command!r} could not run: {exc.strerror}") from None
    if done.returncode != 0:
        output = " / ".join(line for line in (done.stderr + done.stdout).splitlines() if line.strip())
        raise RuntimeFailure(f"--reload-cmd {command!r} exited with {done.returncode}: {output or '(no output)'}")


def sync_once(engine: Engine, files: Mapping[str, str], target: SyncTarget) -> SyncResult:
    """Write `files` (rendered by `engine.render_existing`) atomically, validate, reload.

    Unchanged output: nothing is written, validated or reloaded. A config the proxy's validator
    refuses: the previous files are put back and EngineValidationError raised (exit 2); the
    running proxy was never asked to reload."""
    wanted = output_paths(files, target.out)
    previous = {path: _read(path) for path in wanted}
    if all(previous[path] == content.encode() for path, content in wanted.items()):
        return SyncResult(False, tuple(wanted))
    if len(wanted) > 1:
        target.out.mkdir(parents=True, exist_ok=True)
    elif not target.out.parent.is_dir():
        raise UsageError(f"--out {str(target.out)!r}: directory {str(target.out.parent)!r} does not exist")
    if engine.existing_applies_on_write:
        return _sync_watched(engine, files, target, wanted, previous)
    try:
        for path, content in wanted.items():
            atomic_write(path, content, _mode(path))
        engine.validate_existing(target.out, target.main_config, target.fmt)
    except (EngineValidationError, OSError, UsageError):
        _restore(previous)
        raise
    if target.reload_cmd:
        run_reload_cmd(target.reload_cmd)
    else:
        engine.reload_existing(target.out, target.main_config, target.fmt)
    return SyncResult(True, tuple(wanted))


def _sync_watched(engine: Engine, files: Mapping[str, str], target: SyncTarget, wanted: Mapping[Path, str],
                  previous: Mapping[Path, bytes | None]) -> SyncResult:
    """For a proxy that loads files as they appear (Envoy's file xDS): validate a staging copy,
    then move each file into place in the order rendered (clusters before the listeners that
    name them). A refused config never reaches the watched place."""
    with tempfile.TemporaryDirectory(prefix="gotunnel-sync-") as scratch:
        staged = Path(scratch) / (target.out.name if len(files) == 1 else "out")
        for path, content in output_paths(files, staged).items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        engine.validate_existing(staged, target.main_config, target.fmt)
    try:
        for path, content in wanted.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, content, _mode(path))
    except OSError:
        _restore(previous)
        raise
    if target.reload_cmd:
        run_reload_cmd(target.reload_cmd)
    return SyncResult(True, tuple(wanted))


def fingerprint(paths: Iterable[Path]) -> dict[Path, str]:
    """The content hash of each source (`-` for a missing one): what `watch` compares."""
    marks = {}
    for path in set(paths):
        data = _read(path)
        marks[path] = "-" if data is None else hashlib.sha256(data).hexdigest()
    return marks


def watch(step: Callable[[], Iterable[Path]], initial_sources: Iterable[Path],
          report: Callable[[GotunnelError], None], interval: float = 0.2,
          should_stop: Callable[[], bool] = lambda: False, marker: Callable[[], object] | None = None) -> None:
    """Run `step` (a sync that returns the sources it read), then again each time one of the
    sources changes, polling their content every `interval` seconds. A failed step is reported and
    watching goes on (with the sources known so far): the proxy keeps its last good config, as
    `sync_once` guarantees, until an edit fixes the source. `marker` is one more source, one that
    is not a file (the Docker follower's event counter): a new value means sync again, and
    changes between two polls cost one sync."""
    sources = set(initial_sources)
    seen: dict[Path, str] | None = None
    seen_mark: object = None
    while not should_stop():
        current = fingerprint(sources)
        mark = marker() if marker is not None else None
        if current != seen or mark != seen_mark:
            try:
                found = set(step()) or sources
            except GotunnelError as exc:
                report(exc)
                found = sources
            # What was read before the step stands for the sources known then, so an edit made
            # while the step ran is seen on the next round; sources new to this step are read now.
            seen = {**fingerprint(found - sources), **{p: h for p, h in current.items() if p in found}}
            sources, seen_mark = found, mark
        time.sleep(interval)


def config_sources(config_file: str | None, extra: Iterable[str] = ()) -> list[Path]:
    """The files a sync depends on: the config file and each certificate and key it names."""
    found = [Path(config_file)] if config_file else []
    return found + [Path(p) for p in extra if p and os.path.isabs(p)]


__all__ = ["SyncResult", "SyncTarget", "config_sources", "fingerprint", "run_reload_cmd", "sync_once", "watch"]
