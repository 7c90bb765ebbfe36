"""An external engine's private directory inside the state dir, and the atomic config swap.

    <state>/engines/<engine>/
        configs/gen-000007/     one directory per rendered, validated configuration
        current -> configs/gen-000007   the live one; replaced by rename(2) of a new symlink
        run/                    the engine's own pid file, control socket, lock
        logs/                   anything the engine insists on logging to files
        tmp/                    the engine's temp files (request bodies, buffers)
        supervisor.json         pid + create time + command line of the running engine

A new configuration is written into a hidden directory, renamed into `configs/`, validated,
and only then published by swapping `current`; the engine always reads `current/...`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Mapping

from ..engine import write_rendered
from ..fsutil import atomic_write

_GEN_RE = re.compile(r"^gen-(\d{6,})$")


class WorkDir:
    """Paths and file operations of one engine's work directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()

    @property
    def configs(self) -> Path:
        return self.root / "configs"

    @property
    def current(self) -> Path:
        return self.root / "current"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def record_file(self) -> Path:
        return self.root / "supervisor.json"

    def ensure(self) -> "WorkDir":
        for path in (self.root, self.configs, self.run, self.logs, self.tmp):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self

    def generation_dir(self, generation: int) -> Path:
        return self.configs / f"gen-{generation:06d}"

    def generations(self) -> list[int]:
        try:
            names = os.listdir(self.configs)
        except FileNotFoundError:
            return []
        return sorted(int(m.group(1)) for m in map(_GEN_RE.match, names) if m)

    def next_generation(self) -> int:
        """One more than any generation on disk (numbers never repeat, even across daemons)."""
        existing = self.generations()
        return (existing[-1] + 1) if existing else 1

    def write_generation(self, generation: int, files: Mapping[str, str]) -> Path:
        """Write `files` into a fresh generation directory (built aside, then renamed into place)."""
        final = self.generation_dir(generation)
        staging = self.configs / f".staging-{generation:06d}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o700)
        try:
            write_rendered(files, staging)
            shutil.rmtree(final, ignore_errors=True)
            os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return final

    def discard(self, generation: int) -> None:
        shutil.rmtree(self.generation_dir(generation), ignore_errors=True)

    def current_generation(self) -> int | None:
        try:
            target = os.readlink(self.current)
        except OSError:
            return None
        m = _GEN_RE.match(os.path.basename(target.rstrip("/")))
        return int(m.group(1)) if m else None

    def swap(self, generation: int) -> None:
        """Point `current` at `generation` atomically: a new symlink renamed over the old one."""
        link = self.root / f".current-{os.getpid()}"
        try:
            link.unlink()
        except FileNotFoundError:
            pass
        os.symlink(os.path.join("configs", f"gen-{generation:06d}"), link)
        os.replace(link, self.current)

    def prune(self, keep: int = 3) -> None:
        """Remove old generations, keeping the newest `keep` and whatever `current` points at."""
        live = self.current_generation()
        old = [g for g in self.generations() if g != live][:-keep] if keep else []
        for generation in old:
            self.discard(generation)
        for leftover in self.configs.glob(".staging-*"):
            shutil.rmtree(leftover, ignore_errors=True)

    # ----- the supervisor's pidfile -------------------------------------------------------------

    def read_record(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.record_file.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write_record(self, record: Mapping[str, Any]) -> None:
        atomic_write(self.record_file, json.dumps(dict(record), sort_keys=True) + "\n", mode=0o600)

    def clear_record(self) -> None:
        try:
            self.record_file.unlink()
        except FileNotFoundError:
            pass
