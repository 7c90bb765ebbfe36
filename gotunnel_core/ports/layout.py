"""Where `gotunnel ports` keeps things: the broker's socket per user and the install records."""

from __future__ import annotations

import sys
from pathlib import Path

#: Standard ports the broker hands out.
HTTP_PORT, HTTPS_PORT = 80, 443
#: Root-owned (0755) parent of the per-user broker directories (each 0700, owned by its user).
RUN_ROOT = Path("/Library/Application Support/gotunnel/run" if sys.platform == "darwin" else "/run/gotunnel")
#: What `ports enable` installed for each user, so `ports disable` removes exactly that.
RECORD_DIR = Path("/Library/Application Support/gotunnel/ports" if sys.platform == "darwin"
                  else "/var/lib/gotunnel/ports")


def run_dir(uid: int) -> Path:
    return RUN_ROOT / str(uid)


def broker_socket(uid: int) -> Path:
    return run_dir(uid) / "ports.sock"


def record_file(user: str) -> Path:
    return RECORD_DIR / f"{user}.json"
