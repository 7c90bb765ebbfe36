"""Where gotunnel keeps things: the per-user state directory and the files inside it.

Under `sudo`, the invoking user's directories are used (SUDO_USER), not root's, so the daemon,
CA and tunnels stay the user's own.
"""

from __future__ import annotations

import contextlib
import os
import pwd
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

from .fsutil import ensure_private_dir


def _as_root() -> bool:
    """Root, or root acting as the invoking user for a moment (`as_invoking_user`: real uid 0)."""
    return os.geteuid() == 0 or os.getuid() == 0


def invoking_home() -> Path:
    """The home of the user who ran gotunnel: SUDO_USER's under sudo, else ours."""
    sudo_user = os.environ.get("SUDO_USER")
    if _as_root() and sudo_user and sudo_user != "root":
        try:
            return Path(pwd.getpwnam(sudo_user).pw_dir)
        except KeyError:
            pass
    return Path.home()


def invoking_ids() -> tuple[int, int]:
    """(uid, gid) of the user who ran gotunnel: SUDO_USER's when root under sudo, else ours."""
    sudo_user = os.environ.get("SUDO_USER")
    if _as_root() and sudo_user and sudo_user != "root":
        try:
            entry = pwd.getpwnam(sudo_user)
            return entry.pw_uid, entry.pw_gid
        except KeyError:
            pass
    return os.geteuid(), os.getegid()


@contextlib.contextmanager
def as_invoking_user() -> Iterator[None]:
    """Under sudo, act as SUDO_USER (effective ids only) for the block, so files made in the user's
    state directory stay the user's and its ownership checks pass; elsewhere a no-op.

    Root stays the real user id, so the block's end returns to root for the privileged steps.
    """
    uid, gid = invoking_ids()
    if os.geteuid() != 0 or uid == 0:
        yield
        return
    groups = os.getgroups()
    os.setgroups([])
    os.setegid(gid)
    os.seteuid(uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)
        os.setgroups(groups)


def _xdg(var: str, fallback: str, env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("SUDO_USER") and _as_root():
        return invoking_home() / fallback
    value = env.get(var)
    return Path(value) if value and os.path.isabs(value) else invoking_home() / fallback


def user_config_dir(env: Mapping[str, str] | None = None) -> Path:
    """`<user config dir>/gotunnel` (XDG on Linux)."""
    if os.name != "posix" or os.uname().sysname == "Darwin":
        import platformdirs

        return Path(platformdirs.user_config_dir("gotunnel"))
    return _xdg("XDG_CONFIG_HOME", ".config", env) / "gotunnel"


def default_state_dir() -> Path:
    """`<user state dir>/gotunnel` (XDG on Linux)."""
    if os.name != "posix" or os.uname().sysname == "Darwin":
        import platformdirs

        return Path(platformdirs.user_state_dir("gotunnel"))
    return _xdg("XDG_STATE_HOME", ".local/state") / "gotunnel"


@dataclass(frozen=True)
class StateLayout:
    """Every path inside the state directory, in one place."""

    root: Path

    @property
    def socket(self) -> Path:
        return self.root / "daemon.sock"

    @property
    def pidfile(self) -> Path:
        return self.root / "daemon.pid"

    @property
    def daemon_lock(self) -> Path:
        """Held (flock) by the live daemon for its whole life; free once it dies, even by SIGKILL."""
        return self.root / "daemon.lock"

    @property
    def spawn_lock(self) -> Path:
        """Serialises CLI processes deciding whether to spawn a daemon."""
        return self.root / "spawn.lock"

    @property
    def tunnels_file(self) -> Path:
        return self.root / "tunnels.json"

    @property
    def tunnels_lock(self) -> Path:
        return self.root / "tunnels.json.lock"

    @property
    def log_file(self) -> Path:
        return self.root / "daemon.log"

    @property
    def audit_log(self) -> Path:
        """Every control operation, one JSON line each (rotated to audit.jsonl.1 ... by size)."""
        return self.root / "audit.jsonl"

    @property
    def daemon_output(self) -> Path:
        """The daemon's raw stdout/stderr, for errors before logging is set up."""
        return self.root / "daemon.out"

    @property
    def ca_dir(self) -> Path:
        return self.root / "ca"

    @property
    def certs_dir(self) -> Path:
        return self.root / "certs"

    @property
    def trust_record(self) -> Path:
        """What `gotunnel trust` installed where (`--uninstall` removes exactly that)."""
        return self.root / "trust.json"

    @property
    def trust_dir(self) -> Path:
        """`gotunnel trust --env`'s bundle of system roots plus the CA."""
        return self.root / "trust"

    @property
    def providers_file(self) -> Path:
        """Providers `gotunnel docker watch` turned on (kept across daemon restarts)."""
        return self.root / "providers.json"

    def engine_dir(self, engine: str) -> Path:
        return self.root / "engines" / engine

    def ensure(self) -> "StateLayout":
        """Create the state directory (0700) or refuse one with unsafe ownership or mode."""
        ensure_private_dir(self.root)
        return self


def state_layout(state_dir: str | None) -> StateLayout:
    return StateLayout(Path(state_dir).absolute() if state_dir else default_state_dir())
