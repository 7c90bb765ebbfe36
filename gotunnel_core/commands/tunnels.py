"""`start`, `stop`, `list` and `status`: the tunnel commands, talking to the user's daemon."""

from __future__ import annotations

from typing import Any

import click

from ..cli.app import CliState, emit_json, pass_state
from ..errors import GotunnelError, RuntimeFailure, UsageError
from ..hookspecs import hookimpl


def tunnels_from_flags(domain: str | None, port: str | None, backends: tuple[str, ...], https: bool | None,
                       redirect_https: bool, health_path: str | None, state: CliState, *,
                       redirect_code: int | None = None, upstream_timeout: str | None = None,
                       lan: bool | None = None, host_header: str | None = None,
                       inspect: bool = False) -> list[Any]:
    """Validate the tunnels to start: from flags, or every `[[tunnels]]` table of the config file."""
    from ..models import Tunnel, parse_port, parse_upstream_timeout

    if domain is None:
        if port or backends or host_header or inspect:
            raise UsageError("--port/--backend/--host-header/--inspect need --domain NAME")
        if redirect_code is not None or upstream_timeout is not None or lan is not None:
            raise UsageError("--redirect-code, --upstream-timeout and --lan/--no-lan need --domain NAME; "
                             "in the config file they are keys of [[tunnels]]")
        file_tunnels = state.file_tunnels()
        if not file_tunnels and state.settings["providers"]:
            return []  # serve what the providers (Docker containers) declare
        if not file_tunnels:
            raise UsageError("no --domain given and the config file declares no [[tunnels]]",
                             hint="gotunnel start -d myapp -p 3000")
        return file_tunnels
    if port and backends:
        raise UsageError("give either --port or --backend, not both")
    if port:
        urls: list[Any] = [f"http://127.0.0.1:{parse_port(port)}"]
    elif backends:
        urls = list(backends)
    else:
        raise UsageError(f"tunnel {domain!r} needs a backend: --port PORT or --backend URL")
    raw: dict[str, Any] = {"name": domain, "backends": [_backend_entry(u) for u in urls]}
    if https is not None:
        raw["https"] = https
    if redirect_https:
        raw["redirect_https"] = True
    if redirect_code is not None:
        raw["redirect_code"] = redirect_code
    if health_path:
        raw["health"] = {"path": health_path}
    if upstream_timeout is not None:
        try:
            raw["upstream_timeout"] = parse_upstream_timeout(float(upstream_timeout), "--upstream-timeout")
        except ValueError:
            raise UsageError(f"invalid --upstream-timeout {upstream_timeout!r}: must be a number of seconds") from None
    if lan is not None:
        raw["lan"] = lan
    if host_header is not None:
        raw["host_header"] = host_header
    if inspect:
        raw["inspect"] = True
    from ..dashboard.route import refuse_reserved

    tunnel = Tunnel.from_raw(raw)
    refuse_reserved(tunnel.name)
    return [tunnel]


#: `--inspect` help, shared by `start` and `run`.
INSPECT_HELP = "Record this tunnel's requests for the dashboard's inspector (`gotunnel dashboard`)."
#: `--host-header` help, shared by `start` and `run`.
HOST_HEADER_HELP = ("Host the backend sees: preserve (the client's, default), backend (the backend's host:port) "
                    "or a literal host[:port].")


def _backend_entry(raw: str) -> Any:
    """A `--backend` value as the tunnel table holds it: a URL, or `{url, weight}` for `URL,weight=N`."""
    from ..models import Backend

    backend = Backend.parse(raw)
    return backend.url if "," not in raw else {"url": backend.url, "weight": backend.weight}


@click.command()
@click.option("--domain", "-d", metavar="NAME", help="Tunnel name: NAME.localhost and NAME.local.")
@click.option("--port", "-p", metavar="PORT", help="Backend port on 127.0.0.1.")
@click.option("--backend", "backends", multiple=True, metavar="URL",
              help="Backend (repeatable): a URL, host:port or a port; optionally URL,weight=N.")
@click.option("--https/--no-https", "https", default=None, help="Serve HTTPS too (default on).")
@click.option("--redirect-https", is_flag=True, help="Redirect plain HTTP to HTTPS.")
@click.option("--redirect-code", type=click.Choice(["307", "308"]), default=None,
              help="Status of that redirect: 307 temporary (default), 308 permanent (browsers cache it).")
@click.option("--health-path", metavar="PATH", help="Active health check path, e.g. /health.")
@click.option("--upstream-timeout", metavar="SECONDS",
              help="Time the backend may take to its first response byte (default: the upstream_timeout setting).")
@click.option("--lan/--no-lan", "lan", default=None,
              help="Answer LAN clients on NAME.local (default on); --no-lan keeps the tunnel to this machine.")
@click.option("--host-header", metavar="MODE", help=HOST_HEADER_HELP)
@click.option("--force", is_flag=True, help="Replace a tunnel of the same name that has other backends.")
@click.option("--inspect", is_flag=True, help=INSPECT_HELP)
@click.option("--foreground", is_flag=True, help="Run in this terminal; Ctrl-C stops and cleans up.")
@click.option("--json", "as_json", is_flag=True, help="Print the started tunnels as JSON.")
@pass_state
def start(state: CliState, domain: str | None, port: str | None, backends: tuple[str, ...], https: bool | None,
          redirect_https: bool, redirect_code: str | None, health_path: str | None, upstream_timeout: str | None,
          lan: bool | None, host_header: str | None, force: bool, inspect: bool, foreground: bool, as_json: bool) -> None:
    """Start a tunnel (or every tunnel of the config file) and print its URLs."""
    from ..daemon.protocol import DaemonStopping
    from ..engine import find_engine

    settings = state.settings
    tunnels = tunnels_from_flags(domain, port, backends, https, redirect_https, health_path, state,
                                 redirect_code=int(redirect_code) if redirect_code else None,
                                 upstream_timeout=upstream_timeout, lan=lan, host_header=host_header,
                                 inspect=inspect)
    spec = find_engine(state.engine_specs(), settings["engine"])
    options = state.engine_options()  # a bad engine option fails here, before a daemon is spawned
    binary = spec.engine_class.probe(settings.values)
    if not binary.found:
        docker = options.get(spec.name, {}).get("runtime") == "docker"
        what = "its Docker image is not usable" if docker else "its program was not found"
        raise RuntimeFailure(f"engine {spec.name!r} cannot start: {what}", hint=binary.hint)
    payload = [t.to_dict() for t in tunnels]
    if foreground:
        _run_foreground(state, payload)
        return
    client = state.client(spawn=True)
    try:
        started = client.request("start", tunnels=payload, force=force)
    except DaemonStopping:  # `stop --all` raced this start: a fresh daemon takes it
        client = state.client(spawn=True)
        started = client.request("start", tunnels=payload, force=force)
    if as_json:
        emit_json({"tunnels": started})
    else:
        print_started(started)
    warn_host_refusals(started, client)
    warn_if_nothing_listens(tunnels)


def print_started(started: list[dict[str, Any]]) -> None:
    """`NAME -> backends` and the tunnel's URLs, as `start` prints them."""
    for item in started:
        click.echo(f"{item['name']} -> {', '.join(b['url'] for b in item['backends'])}")
        for url in item["urls"]:
            click.echo(f"  {url}")


def warn_host_refusals(described: list[Any], client: Any) -> None:
    """On stderr: each backend that refuses the Host it gets through the tunnel, with the fix."""
    from ..hostcheck import check_described, warning_lines

    try:
        lines = warning_lines(check_described(described, client.ping() or {}))
    except (GotunnelError, KeyError, ValueError):
        return
    for line in lines:
        click.echo(line, err=True)


def warn_if_nothing_listens(tunnels: list[Any], timeout: float = 0.5) -> None:
    """Say so when a backend refuses connections yet: the tunnel serves anyway (502 until the
    server is up, then it just works), but a typo in the port is easier to see now."""
    import socket
    from concurrent.futures import ThreadPoolExecutor

    backends = {b.url: b for t in tunnels for b in t.backends}

    def problem(backend: Any) -> str | None:
        try:
            socket.create_connection((backend.host, backend.port), timeout=timeout).close()
        except socket.timeout:
            return "no answer"
        except OSError as exc:
            return exc.strerror or str(exc)
        return None

    with ThreadPoolExecutor(max_workers=min(16, len(backends) or 1)) as pool:
        results = dict(zip(backends, pool.map(problem, backends.values())))
    for url, reason in results.items():
        if reason is not None:
            click.echo(f"warning: nothing listens on {url} yet ({reason}); the tunnel serves and "
                       "reaches it as soon as it is up", err=True)


def _run_foreground(state: CliState, payload: list[Any]) -> None:
    from ..daemon.client import DaemonClient
    from ..daemon.server import run_daemon
    from ..logs import configure
    from ..models import Tunnel

    layout = state.layout.ensure()
    if DaemonClient(layout).ping() is not None:
        raise RuntimeFailure("a gotunnel daemon is already running",
                             hint="use `gotunnel start` without --foreground, or `gotunnel stop --all`")
    configure(state.settings["log_format"], state.settings["log_level"])

    def ready(served: list[dict[str, Any]]) -> None:
        print_started(served)
        warn_if_nothing_listens([Tunnel.from_raw(t) for t in payload])
        click.echo("gotunnel running in the foreground; Ctrl-C stops and removes its tunnels", err=True)
        import sys

        sys.stdout.flush()

    run_daemon(layout, state.settings.values, state.plugins, initial_tunnels=payload, forget_on_exit=True,
               on_ready=ready)


@click.command()
@click.argument("names", nargs=-1)
@click.option("--all", "stop_all", is_flag=True, help="Stop every tunnel and the daemon.")
@pass_state
def stop(state: CliState, names: tuple[str, ...], stop_all: bool) -> None:
    """Stop tunnels by name, or everything with --all."""
    from ..daemon.client import DaemonNotRunning
    from ..models import parse_tunnel_name

    if stop_all == bool(names):
        raise UsageError("name the tunnels to stop, or use --all")
    parsed = [parse_tunnel_name(n) for n in names]
    if stop_all:
        _stop_all(state)
        return
    try:
        stopped = state.client(spawn=False).request("stop", names=parsed)
    except DaemonNotRunning:
        raise RuntimeFailure(f"no tunnel named {parsed[0]!r}: no gotunnel daemon is running") from None
    for name in stopped:
        click.echo(f"stopped {name}")


def _stop_all(state: CliState) -> None:
    from ..daemon.client import DaemonClient
    from ..daemon.launcher import stop_daemon
    from ..errors import GotunnelError
    from ..state import TunnelStore, read_saved

    layout = state.layout.ensure()
    saved, count = read_saved(layout.tunnels_file)
    if saved is not None and count and DaemonClient(layout).ping() is None:
        # A daemon died with tunnels: its engine may still serve them. Restoring it (as `list`
        # would) stops that orphan; then it is stopped like any running daemon.
        try:
            state.client(spawn=False)
        except GotunnelError as exc:
            click.echo(f"warning: could not restore the saved daemon to stop it: {exc.message}", err=True)
    result = stop_daemon(layout)
    if result is None:
        TunnelStore(layout.tunnels_file, layout.tunnels_lock).clear()
        click.echo("no daemon running; cleared the saved tunnels")
        return
    for name in result["stopped"]:
        click.echo(f"stopped {name}")
    click.echo(f"daemon (pid {result['pid']}) stopped")


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
def list_(state: CliState, as_json: bool) -> None:
    """List running tunnels."""
    tunnels = state.ask_running_daemon("list") or []
    if as_json:
        emit_json({"tunnels": tunnels})
        return
    if not tunnels:
        click.echo("no tunnels running")
    for item in tunnels:
        backends = _backends_text(item) if not item.get("problem") else "unreachable"
        click.echo(f"{item['name']:<24} {backends}  {' '.join(item['urls'])}")
        if item.get("source", "user") != "user":
            click.echo(f"{'':<24} from {item['source']}: {item['origin']}")
        if item.get("problem"):
            click.echo(f"{'':<24} why: {item['problem']}")
            click.echo(f"{'':<24} fix: {item['fix']}")


def _backends_text(item: dict[str, Any]) -> str:
    """A tunnel's backends, each followed by `(down: ...)` or `(unhealthy: ...)` when it does not serve."""
    return ", ".join(b["url"] + (f" ({b['problem']})" if b.get("problem") else "") for b in item["backends"])


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
def status(state: CliState, as_json: bool) -> None:
    """Daemon pid, engine, ports, tunnels and certificate expiry (and the team agent's hub and names)."""
    from ..team.status import agent_status

    info = state.ask_running_daemon("status")
    team_agent = agent_status(state.layout.root)
    if as_json:
        emit_json({"running": info is not None, "pid": info["pid"] if info else None, **(info or {}), "agent": team_agent})
        return
    if team_agent is not None:
        click.echo(f"team agent: {'connected to ' + team_agent['hub'] if team_agent['connected'] else 'not connected'}, "
                   f"publishing {', '.join(team_agent['published']) or 'nothing'}")
    if info is None:
        click.echo("daemon: not running")
        return
    engine = info["engine"]
    listen = info["listen"]
    click.echo(f"daemon: running (pid {info['pid']}), state {info['state_dir']}")
    click.echo(f"engine: {engine['name']} ({'running' if engine['running'] else 'not running'}) {engine['detail']}".rstrip())
    click.echo(f"listen: {listen['bind']} http {listen['http_port']} https {listen['https_port']}")
    click.echo(f"tunnels: {len(info['tunnels'])}")
    for item in info["tunnels"]:
        source = "" if item.get("source", "user") == "user" else f"  <- {item['origin']}"
        click.echo(f"  {item['name']}: {' '.join(item['urls'])} -> {_backends_text(item)}{source}")
        if item.get("problem"):
            click.echo(f"    unreachable: {item['problem']}")
            click.echo(f"    fix: {item['fix']}")
    for name, provider in sorted(info.get("providers", {}).items()):
        state_text = "connected" if provider["connected"] else f"not connected: {provider['error']} (retrying)"
        click.echo(f"provider {name}: {state_text}")
    for problem in info.get("problems", []):
        click.echo(f"  problem: {problem['origin']}: {problem['problem']}")
    for cert in info["certificates"]:
        click.echo(f"  certificate {cert['name']}: expires {cert['not_after']}")


@hookimpl
def gotunnel_register_commands(cli: click.Group) -> None:
    for command in (start, stop, list_, status):
        cli.add_command(command)
