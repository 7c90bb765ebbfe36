"""Finding, spawning and stopping the user's daemon for a command: the CLI side of the daemon's life.

`connect` returns a client for the running daemon. With saved tunnels and no daemon, it spawns
one that restores them with the settings saved alongside (`gotunnel daemon --restore`), never
with this invocation's; `start` (`spawn=True`) spawns a fresh one with this invocation's
effective settings when nothing is saved. A setting this command sets explicitly (flag,
environment, config file) that contradicts the running daemon's or the saved one is refused
with both values named (exit 2). Kept free of heavy imports.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Mapping

from ..errors import RuntimeFailure, UsageError
from ..paths import StateLayout
from .client import DaemonClient, daemon_alive, ensure_daemon, serving

#: Saved settings a later command may differ in without a conflict (they change no routing).
UNCOMPARED = frozenset({"log_level", "engines"})


def daemon_argv(settings: Any, layout: StateLayout, *, with_config: bool = True) -> list[str]:
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
    if with_config and s.config_file is not None:
        argv += ["--config", str(s.config_file.absolute())]
    return argv + ["daemon"]


def restore_argv(layout: StateLayout) -> list[str]:
    """The command that starts a daemon restoring the saved tunnels with the saved settings."""
    return [sys.executable, "-m", "gotunnel_core", "--state-dir", str(layout.root), "daemon", "--restore"]


def connect(settings: Any, layout: StateLayout, *, spawn: bool) -> DaemonClient:
    """A client for the serving daemon; spawns one when `spawn`, or when tunnels wait to be restored."""
    from ..state import read_saved

    layout.ensure()
    client = DaemonClient(layout)
    for _ in range(3):
        info = client.ping()
        if serving(info):
            assert info is not None
            if spawn:
                check_matches(settings, info.get("settings") or {}, "the running daemon (pid %d) uses" % info["pid"],
                              "stop it first with `gotunnel stop --all` (that stops its tunnels), or drop the setting")
            return client
        if info is not None:  # shutting down (`stop --all`): let it finish, then go on without it
            wait_gone(layout)
        saved, count = read_saved(layout.tunnels_file)
        if count and saved is not None:
            if spawn:
                check_matches(settings, saved, f"the {count} saved tunnel(s) were started with",
                              "drop the setting to restore them as they were, or forget them with "
                              "`gotunnel stop --all`")
            argv = restore_argv(layout)
        elif spawn or count:
            argv = daemon_argv(settings, layout, with_config=spawn)
        else:
            return client
        client = ensure_daemon(layout, argv)
    raise RuntimeFailure("could not reach a serving daemon (it kept stopping)", hint="see `gotunnel logs`")


def check_matches(settings: Any, theirs: Mapping[str, Any], whose: str, hint: str) -> None:
    """Refuse a setting this command sets explicitly that differs from `theirs`; exit 2."""
    for key, value in theirs.items():
        if key in UNCOMPARED or key not in settings.values or settings.sources.get(key, "default") == "default":
            continue
        if settings[key] != value:
            raise UsageError(f"{whose} {key} {value!r}, but {_source_label(settings, key)} asks for {settings[key]!r}",
                             hint=hint)


def _source_label(settings: Any, key: str) -> str:
    source = settings.sources[key]
    if source == "flag":
        return "--" + key.replace("_", "-")
    if source == "env":
        return "GOTUNNEL_" + key.upper()
    if source.startswith("file:"):
        return f"the config file {source[5:]}"
    return source


def wait_gone(layout: StateLayout, deadline: float = 30.0) -> None:
    """Wait until no daemon holds this state directory's daemon lock."""
    end = time.monotonic() + deadline
    while daemon_alive(layout):
        if time.monotonic() > end:
            raise RuntimeFailure(f"the daemon did not exit within {deadline:g} s", hint="see `gotunnel logs`")
        time.sleep(0.05)


def stop_daemon(layout: StateLayout, deadline: float = 30.0) -> dict[str, Any] | None:
    """Ask the running daemon to stop every tunnel and exit; wait until it is gone.

    Returns the daemon's answer (`{"pid", "stopped"}`), or None when no daemon was running.
    """
    from .protocol import DaemonStopping

    client = DaemonClient(layout)
    if client.ping() is None:
        return None
    try:
        result: dict[str, Any] = client.request("stop_all")
    except DaemonStopping:  # another `stop --all` got there first
        wait_gone(layout, deadline)
        return None
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
