"""Finding, spawning and stopping the user's daemon for a command: the CLI side of the daemon's life.

`connect` returns a client for the running daemon and spawns one with this invocation's
effective settings when asked to (or when saved tunnels wait to be restored); it refuses a
running daemon started with other explicitly requested settings. Kept free of heavy imports.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from ..errors import RuntimeFailure
from ..paths import StateLayout
from .client import DaemonClient, daemon_alive, ensure_daemon

#: Settings a running daemon was started with that an explicit flag must not silently contradict.
MATCHED_SETTINGS = ("engine", "bind", "http_port", "https_port", "http2")


def daemon_argv(settings: Any, layout: StateLayout) -> list[str]:
    """The command that starts a daemon with these effective settings (a `config.Resolved`)."""
    s = settings
    argv = [sys.executable, "-m", "gotunnel_core", "--state-dir", str(layout.root), "--engine", s["engine"],
            "--http-port", str(s["http_port"]), "--https-port", str(s["https_port"]), "--bind", s["bind"],
            "--http2" if s["http2"] else "--no-http2", "--mdns" if s["mdns"] else "--no-mdns",
            "--hosts" if s["hosts"] else "--no-hosts", "--log-format", "json", "--log-level", s["log_level"]]
    if s["runtime"]:
        argv += ["--runtime", s["runtime"]]
    for iface in s["mdns_interface"]:
        argv += ["--mdns-interface", iface]
    if s["engine_bin"]:
        argv += ["--engine-bin", s["engine_bin"]]
    if s.config_file is not None:
        argv += ["--config", str(s.config_file.absolute())]
    return argv + ["daemon"]


def connect(settings: Any, layout: StateLayout, *, spawn: bool) -> DaemonClient:
    """A client for the running daemon; spawns one when `spawn` (or when tunnels wait to be restored)."""
    layout.ensure()
    client = DaemonClient(layout)
    if spawn or (client.ping() is None and has_saved_tunnels(layout)):
        client = ensure_daemon(layout, daemon_argv(settings, layout))
        check_daemon_matches(settings, client)
    return client


def has_saved_tunnels(layout: StateLayout) -> bool:
    """Whether the state file holds tunnels a daemon should restore."""
    try:
        return bool(json.loads(layout.tunnels_file.read_text()).get("tunnels"))
    except (OSError, ValueError):
        return False


def check_daemon_matches(settings: Any, client: DaemonClient) -> None:
    """Refuse to silently use a daemon started with other explicitly requested settings."""
    info = client.ping() or {}
    for key in MATCHED_SETTINGS:
        if settings.sources[key] != "default" and info.get(key, settings[key]) != settings[key]:
            raise RuntimeFailure(
                f"the running daemon uses {key} {info.get(key)!r}, not {settings[key]!r}",
                hint="stop it first with `gotunnel stop --all`, then start again",
            )


def stop_daemon(layout: StateLayout, deadline: float = 30.0) -> dict[str, Any] | None:
    """Ask the running daemon to stop every tunnel and exit; wait until it is gone.

    Returns the daemon's answer (`{"pid", "stopped"}`), or None when no daemon was running.
    """
    client = DaemonClient(layout)
    if client.ping() is None:
        return None
    result: dict[str, Any] = client.request("stop_all")
    end = time.monotonic() + deadline
    while daemon_alive(layout) or process_alive(result["pid"]):
        if time.monotonic() > end:
            raise RuntimeFailure(f"the daemon (pid {result['pid']}) did not exit within {deadline:g} s")
        time.sleep(0.05)
    return result


def process_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting to be reaped counts as gone)."""
    import psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
