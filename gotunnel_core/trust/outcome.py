"""What `gotunnel trust` decides around the stores: the exact `sudo` command that finishes a job,
where `--check` shakes hands, and whether a run succeeded (exit status and message)."""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path
from typing import Callable, Sequence
from urllib.parse import urlsplit

from ..errors import PermissionProblem, RuntimeFailure, UsageError
from ..paths import StateLayout
from .base import Target
from .service import Row


def sudo_command(state_dir: Path | None, extra: Sequence[str]) -> Callable[[list[str]], str]:
    """A builder of the exact root command for the given stores, for the `hint:` line.

    `state_dir` is passed on only when it is not the default: sudo drops GOTUNNEL_* variables.
    """

    def build(store_ids: list[str]) -> str:
        prefix = ["gotunnel"] if shutil.which("gotunnel") else [sys.executable, "-m", "gotunnel_core"]
        argv = [*prefix]
        if state_dir is not None:
            argv += ["--state-dir", str(state_dir)]
        argv += ["trust", *extra]
        for store_id in store_ids:
            argv += ["--store", store_id]
        return "sudo " + shlex.join(argv)

    return build


def check_target(layout: StateLayout, leaf: Path, url: str | None) -> Target:
    """Where `--check` shakes hands: `url`, else the running daemon's HTTPS port, else offline."""
    from ..daemon.client import DaemonClient

    if url:
        parts = urlsplit(url if "://" in url else f"https://{url}")
        if parts.scheme != "https" or not parts.hostname:
            raise UsageError(f"invalid --check-url {url!r}: expected https://HOST[:PORT]/")
        host = parts.hostname
        connect = "127.0.0.1" if host == "localhost" or host.endswith(".localhost") else host
        return Target(connect, parts.port or 443, host, leaf)
    info = DaemonClient(layout).ping()
    if info is None:
        return Target("", 0, "localhost", leaf, offline=True)
    bind = info.get("bind") or "127.0.0.1"
    connect = "127.0.0.1" if bind in ("0.0.0.0", "::", "") else bind
    return Target(connect, int(info["https_port"]), "localhost", leaf)


def raise_for_outcome(action: str, rows: list[Row], sudo: Callable[[list[str]], str]) -> None:
    """Raise (exit 1, or the permission exit) with the reason and the sudo command unless every
    selected, present store is done; `sudo` builds the command for the stores that need root."""
    failed = [r.store for r in rows if r.status == "failed"]
    needs = [r.store for r in rows if r.status == "needs-sudo"]
    if failed:
        raise RuntimeFailure(f"{action} failed for: {', '.join(failed)} (see above; nothing half-done was left)")
    if needs:
        done = [r.store for r in rows if r.status in ("installed", "removed")]
        raise PermissionProblem(
            f"{', '.join(needs)} need{'s' if len(needs) == 1 else ''} root; done: {', '.join(done) or 'nothing'}",
            hint=sudo(needs),
        )
    if action == "install" and not any(r.status == "installed" for r in rows):
        raise RuntimeFailure("no trust store found to install into",
                             hint="install libnss3-tools (certutil) or ca-certificates, or use `gotunnel trust --env`")
    if action == "check":
        bad = [r.store for r in rows if r.status in ("not trusted", "unknown")]
        if bad:
            raise RuntimeFailure(f"gotunnel's CA is not trusted by: {', '.join(bad)}", hint="run `gotunnel trust`")
