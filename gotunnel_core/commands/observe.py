"""`metrics`, `top` and `audit`: what the daemon's engine counted (Prometheus text, whichever engine
runs), a live view of it, and who did what to the daemon (the audit log)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

import click

from ..cli.app import CliState, pass_state
from ..errors import RuntimeFailure
from ..hookspecs import hookimpl


def running_client(state: CliState):  # type: ignore[no-untyped-def]
    """A client for the running daemon, or a one-line error when none runs (never spawns one)."""
    client = state.client(spawn=False)
    if client.ping() is None:
        raise RuntimeFailure("no gotunnel daemon is running", hint="start a tunnel first: gotunnel start -d NAME -p PORT")
    return client


@click.command()
@pass_state
def metrics(state: CliState) -> None:
    """Print the daemon's metrics once (the text its metrics_port endpoint serves)."""
    click.echo(running_client(state).request("metrics")["text"], nl=False)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON lines.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new entries.")
@click.option("--lines", "-n", default=100, show_default=True, help="Entries of history to show.")
@pass_state
def audit(state: CliState, as_json: bool, follow: bool, lines: int) -> None:
    """Show the audit log: every control operation, who asked (uid, pid) and how it ended."""
    from ..audit import audit_files, format_entry

    path = state.layout.audit_log

    def show(line: str) -> None:
        try:
            entry = json.loads(line)
        except ValueError:
            return  # a torn or foreign line
        click.echo(json.dumps(entry, sort_keys=True) if as_json else format_entry(entry))

    # The current file stays open: following goes on exactly where the history ended.
    current = _open(path)
    history: list[str] = []
    for older in audit_files(path)[:-1] if current is not None else audit_files(path):
        history += older.read_text(errors="replace").splitlines()
    if current is not None:
        history += current[0].read().splitlines()
    for line in history[-lines:] if lines > 0 else []:
        show(line)
    if follow:
        _follow(path, show, current)


def _open(path: Path) -> tuple[Any, int] | None:
    try:
        fh = path.open("r", errors="replace")
    except FileNotFoundError:
        return None
    return fh, os.fstat(fh.fileno()).st_ino


def _follow(path: Path, show: Callable[[str], None], current: tuple[Any, int] | None) -> None:
    """Print lines appended to `path`, moving to the new file when it is rotated (a new inode)."""
    while True:
        line = current[0].readline() if current is not None else ""
        if line.endswith("\n"):
            show(line)
            continue
        if line and current is not None:  # half a line: wait for the rest
            current[0].seek(current[0].tell() - len(line))
        try:
            inode: int | None = os.stat(path).st_ino
        except FileNotFoundError:
            inode = None
        if current is None or inode != current[1]:
            if current is not None:
                for rest in current[0]:  # the old file's last lines
                    show(rest)
                current[0].close()
            current = _open(path)
            continue
        time.sleep(0.2)


@click.command()
@click.option("--interval", "-i", default=2.0, show_default=True, type=click.FloatRange(0.1, 3600),
              help="Seconds between refreshes.")
@click.option("--once", is_flag=True, help="Print one view (over one interval) and exit.")
@pass_state
def top(state: CliState, interval: float, once: bool) -> None:
    """Live view of the tunnels: req/s, error rate, p99 latency, backends up, certificate expiry."""
    from rich.console import Console
    from rich.live import Live

    from ..top import Sample, rows, table

    client = running_client(state)

    def sample() -> Sample:
        return Sample.parse(client.request("metrics")["text"])

    before = sample()
    if once:
        time.sleep(interval)
        after = sample()
        Console().print(table(rows(before, after), after.engine, interval))
        return
    # Ctrl-C sets a flag instead of raising KeyboardInterrupt wherever the main thread happens to
    # be: raised inside rich's `with self._lock`, it could leave the lock held, and Live's exit then
    # waited forever for its refresh thread (seen as `top` not exiting after SIGINT).
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    try:
        with Live(table([], before.engine, interval), refresh_per_second=4, screen=False) as live:
            while not stop.wait(interval):
                after = sample()
                live.update(table(rows(before, after), after.engine, interval))
                before = after
    finally:
        signal.signal(signal.SIGINT, previous)


@hookimpl
def gotunnel_register_commands(cli: click.Group) -> None:
    cli.add_command(metrics)
    cli.add_command(top)
    cli.add_command(audit)
