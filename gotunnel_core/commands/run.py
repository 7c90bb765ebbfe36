"""`run`: start a dev server on a free port, tunnel its name to it while it runs, remove it after.

    gotunnel run -- npm run dev        ->  https://myapp.localhost:8443 while `npm run dev` runs

The command's output reaches the terminal unchanged; gotunnel's own lines go to stderr, prefixed
`gotunnel:`. `run` exits with the command's exit code (128+N when a signal ended it).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import click

from ..cli.app import CliState, pass_state
from ..errors import GotunnelError, UsageError
from ..hookspecs import hookimpl
from .tunnels import HOST_HEADER_HELP, INSPECT_HELP, tunnels_from_flags, warn_host_refusals

#: Default seconds to wait for the command to listen (a cold `npm run dev` may bundle first).
READY_TIMEOUT = 60.0


def say(message: str) -> None:
    click.echo(f"gotunnel: {message}", err=True)


def free_port() -> int:
    """A TCP port nothing listens on right now, on either loopback address."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _check_name_free(state: CliState, name: str, force: bool) -> None:
    """Refuse early (before the command starts) a name a running daemon already serves."""
    from ..daemon.client import DaemonClient

    client = DaemonClient(state.layout.ensure())
    if force or client.ping() is None:
        return
    for item in client.request("list"):
        if item["name"] == name:
            backends = ", ".join(b["url"] for b in item["backends"])
            raise UsageError(f"tunnel {name!r} is already served by {backends}",
                                 hint=f"--force replaces it; or choose another name with -d NAME (`gotunnel stop {name}` frees it)")


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--domain", "-d", metavar="NAME", help="Tunnel name (default: the project's name; BRANCH.NAME in a linked git worktree).")
@click.option("--port", "-p", metavar="PORT", help="Port for the command (default: a free one).")
@click.option("--https/--no-https", "https", default=None, help="Serve HTTPS too (default on).")
@click.option("--redirect-https", is_flag=True, help="Redirect plain HTTP to HTTPS.")
@click.option("--health-path", metavar="PATH", help="Active health check path, e.g. /health.")
@click.option("--host-header", metavar="MODE", help=HOST_HEADER_HELP)
@click.option("--inspect", is_flag=True, help=INSPECT_HELP)
@click.option("--force", is_flag=True, help="Replace a tunnel of that name that another command started.")
@click.option("--ready-timeout", metavar="SECONDS", type=click.FloatRange(0.1, 3600), default=READY_TIMEOUT,
              show_default=True, help="How long the command may take to listen.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_state
def run(state: CliState, domain: str | None, port: str | None, https: bool | None, redirect_https: bool,
        health_path: str | None, host_header: str | None, inspect: bool, force: bool, ready_timeout: float,
        command: tuple[str, ...]) -> None:
    """Run a dev server with a tunnel to it: gotunnel run [OPTIONS] -- CMD ARGS...

    \b
    The command gets PORT and HOST=127.0.0.1, plus its framework's own port flag (Vite, Astro,
    Next.js, Django, uvicorn, Flask, gunicorn, Rails; also through `npm run`/`pnpm`/`yarn`/`bun`).
    The tunnel is removed when the command exits, and gotunnel exits with its exit code.
    """
    from ..devloop.frameworks import prepare
    from ..devloop.project import project_name
    from ..models import parse_port, parse_tunnel_name

    argv = [a for a in command]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        raise UsageError("missing the command to run", hint="gotunnel run -- npm run dev")
    if shutil.which(argv[0]) is None:
        raise UsageError(f"command not found: {argv[0]!r}", hint="check the command after `gotunnel run --`")
    cwd = Path.cwd()
    if domain is not None:
        name, source = parse_tunnel_name(domain), "-d"
    else:
        picked = project_name(cwd)
        name, source = picked.name, picked.source
    chosen_port = parse_port(port, "--port") if port is not None else free_port()
    # Validate every tunnel option before anything starts (bad input: exit 2, nothing running).
    tunnels_from_flags(name, str(chosen_port), (), https, redirect_https, health_path, state, host_header=host_header,
                       inspect=inspect)
    settings = state.settings
    _check_name_free(state, name, force)
    prepared = prepare(argv, chosen_port, cwd)
    say(f"tunnel {name} (from {source}); the command gets port {prepared.port}")
    for note in prepared.notes:
        say(note)
    code = _run_with_tunnel(state, name, prepared, dict(https=https, redirect_https=redirect_https,
                                                        health_path=health_path, host_header=host_header,
                                                        inspect=inspect),
                            force, ready_timeout, settings)
    sys.stdout.flush()
    sys.exit(code)


def _run_with_tunnel(state: CliState, name: str, prepared: Any, options: dict[str, Any], force: bool,
                     ready_timeout: float, settings: Any) -> int:
    """Start the child, wait for its port, add the tunnel, wait for the child; always clean up."""
    from ..devloop.child import Child, exit_status
    from ..devloop.readiness import ChildExited, wait_listening

    child = Child(prepared.argv, {**os.environ, **prepared.env})
    added: dict[str, Any] | None = None
    try:
        try:
            listening = wait_listening(prepared.port, child.pid, child.poll, ready_timeout)
        except ChildExited as exc:
            say(exc.message)
            return exit_status(exc.code)
        if listening.discovered:
            say(f"the command did not listen on port {prepared.port} but on {listening.port} "
                f"(found among the ports its processes listen on); tunnelling to {listening.port}")
        added = _add_tunnel(state, name, listening.url, options, force)
        code = child.wait()
        return exit_status(code)
    except GotunnelError as exc:
        if child.poll() is None:
            child.stop()
        raise exc
    except BaseException:
        child.stop()
        raise
    finally:
        if added is not None:
            _remove_tunnel(state, name, added)
        child.close()


def _add_tunnel(state: CliState, name: str, backend_url: str, options: dict[str, Any], force: bool) -> dict[str, Any]:
    """Ask the daemon (spawning one) to serve the tunnel; print its URLs and any Host refusal."""
    tunnel = tunnels_from_flags(name, None, (backend_url,), options["https"], options["redirect_https"],
                                options["health_path"], state, host_header=options["host_header"],
                                inspect=options["inspect"])[0]
    client = state.client(spawn=True)
    started = client.request("start", tunnels=[tunnel.to_dict()], force=force)
    item = started[0]
    say(f"{item['name']} -> {backend_url}")
    for url in item["urls"]:
        click.echo(f"  {url}", err=True)
    warn_host_refusals(started, client)
    return item


def _remove_tunnel(state: CliState, name: str, item: dict[str, Any]) -> None:
    """Stop the tunnel we added, unless another command replaced it meanwhile."""
    from ..daemon.client import DaemonClient

    try:
        stopped = DaemonClient(state.layout).request(
            "stop", names=[name], if_backends={name: [b["url"] for b in item["backends"]]})
    except GotunnelError as exc:
        say(f"could not remove tunnel {name}: {exc.message}")
        return
    if stopped:
        say(f"removed tunnel {name}")


@hookimpl
def gotunnel_register_commands(cli: click.Group) -> None:
    cli.add_command(run)
