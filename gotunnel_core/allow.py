"""Which config files may name programs: the user's own always, a project's only once allowed.

A cloned repository's `gotunnel.toml` is input from a stranger. Keys that make gotunnel run a
program or load templates (`engine_bin`, `template_dir`, `[engines.*] bin`, ...) are honoured
from it only after `gotunnel config allow`, which records the file's path with a hash of its
exact bytes in the user's config directory (as direnv does): any later edit needs a new allow.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

from .fsutil import atomic_write

#: Keys of an `[engines.NAME]` table that name a program or a directory of templates.
SENSITIVE_ENGINE_KEYS = frozenset({"bin", "template_dir", "image"})
ALLOW_FILE = "allowed-configs.json"


def sensitive_keys(file_data: Mapping[str, Any]) -> list[str]:
    """The keys of a parsed config file that name programs or template directories."""
    from .config import SETTINGS_BY_NAME

    keys = [k for k in file_data if k in SETTINGS_BY_NAME and SETTINGS_BY_NAME[k].sensitive]
    engines = file_data.get("engines")
    if isinstance(engines, Mapping):
        for engine, table in engines.items():
            if isinstance(table, Mapping):
                keys += [f"engines.{engine}.{k}" for k in table if _sensitive_engine_key(str(k))]
    return sorted(keys)


def _sensitive_engine_key(key: str) -> bool:
    return key in SENSITIVE_ENGINE_KEYS or key.endswith(("_bin", "_dir"))


def without_keys(file_data: Mapping[str, Any], keys: list[str]) -> dict[str, Any]:
    """A copy of `file_data` without `keys` (dotted `engines.NAME.KEY` for engine tables)."""
    out = {k: v for k, v in file_data.items() if k not in keys}
    if isinstance(out.get("engines"), Mapping):
        out["engines"] = {
            engine: ({k: v for k, v in table.items() if f"engines.{engine}.{k}" not in keys}
                     if isinstance(table, Mapping) else table)
            for engine, table in out["engines"].items()
        }
    return out


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_user_config(path: Path, env: Mapping[str, str] | None = None) -> bool:
    """Whether `path` is the user's own config file (`<user config dir>/gotunnel/config.toml`)."""
    from .paths import user_config_dir

    try:
        return path.resolve() == (user_config_dir(env) / "config.toml").resolve()
    except OSError:
        return False


def _store(env: Mapping[str, str] | None) -> Path:
    from .paths import user_config_dir

    return user_config_dir(env) / ALLOW_FILE


def _read(env: Mapping[str, str] | None) -> dict[str, str]:
    try:
        raw = json.loads(_store(env).read_text())
    except (OSError, ValueError):
        return {}
    allowed = raw.get("allowed") if isinstance(raw, dict) else None
    return {str(k): str(v) for k, v in allowed.items()} if isinstance(allowed, dict) else {}


def _write(entries: Mapping[str, str], env: Mapping[str, str] | None) -> None:
    path = _store(env)
    _check_store_dir(path.parent)
    atomic_write(path, json.dumps({"allowed": dict(sorted(entries.items()))}, indent=2) + "\n", mode=0o600)


def _check_store_dir(directory: Path) -> None:
    """The record's directory: created 0700; refused when another user owns it or may write it
    (whoever can write the record can allow any config file)."""
    import os
    import stat

    from .errors import PermissionProblem

    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = directory.stat()
    if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PermissionProblem(f"directory {str(directory)!r} may be written by other users; "
                                "gotunnel keeps the list of allowed config files there",
                                hint=f"chmod go-w {directory}")


def is_allowed(path: Path, data: bytes, env: Mapping[str, str] | None = None) -> bool:
    """Whether the user allowed exactly this content at this path."""
    return _read(env).get(str(path.resolve())) == digest(data)


def allow_file(path: Path, data: bytes, env: Mapping[str, str] | None = None) -> str:
    """Record `path` with the hash of `data` (its current bytes); returns the hash."""
    entries = _read(env)
    entries[str(path.resolve())] = digest(data)
    _write(entries, env)
    return entries[str(path.resolve())]


def revoke_file(path: Path, env: Mapping[str, str] | None = None) -> bool:
    """Forget an allowed file; False when it was not allowed."""
    entries = _read(env)
    if entries.pop(str(path.resolve()), None) is None:
        return False
    _write(entries, env)
    return True
