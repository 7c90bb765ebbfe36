"""The `gotunnel` command line (click).

Exit codes: 0 ok, 1 runtime failure, 2 usage or validation error. Errors are one
`error: ...` line plus an optional `hint: ...` line on stderr; tracebacks only with --debug.
Heavy modules (jinja2, cryptography, zeroconf, uvloop) are imported inside the commands that
need them, and entry points are read only by commands that need plugins.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, NoReturn

import click

from . import __version__
from .errors import GotunnelError, RuntimeFailure, UsageError

# ----- shared state ------------------------------------------------------------------------


@dataclass
class CliState:
    """Global flags as given on the command line (None = not given), resolved lazily."""

    flags: dict[str, Any] = field(default_factory=dict)
    _resolved: Any = None
    _plugins: Any = None

    @property
    def settings(self) -> Any:
        if self._resolved is None:
            from .config import resolve
            from .logs import configure

            self._resolved = resolve(self.flags)
            # The CLI shows warnings and errors; info lines belong in the daemon's log.
            wanted = "debug" if self._resolved["debug"] else self._resolved["log_level"]
            configure(self._resolved["log_format"], wanted if wanted in ("debug", "error") else "warning")
        return self._resolved

    def file_tunnels(self) -> list[Any]:
        """The config file's `[[tunnels]]`, validated; errors name the file and the table."""
        from .models import Tunnel

        settings = self.settings
        tunnels = []
        for index, raw in enumerate(settings.file_tunnels, start=1):
            try:
                tunnels.append(Tunnel.from_raw(raw))
            except UsageError as exc:
                raise UsageError(f"config file {str(settings.config_file)!r}: [[tunnels]] #{index}: {exc.message}",
                                 exc.hint) from None
        return tunnels

    @property
    def layout(self) -> Any:
        from .paths import state_layout

        return state_layout(self.settings["state_dir"])

    @property
    def plugins(self) -> Any:
        if self._plugins is None:
            from .plugins import make_plugin_manager

            self._plugins = make_plugin_manager()
        return self._plugins

    def engine_specs(self) -> dict[str, Any]:
        from .engine import collect_engines

        return collect_engines(self.plugins.pm)


pass_state = click.make_pass_decorator(CliState)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


# ----- the group ---------------------------------------------------------------------------


class GotunnelGroup(click.Group):
    """Core commands are known statically; an unknown name asks plugins for their commands."""

    _plugins_loaded = False

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and not self._plugins_loaded:
            self.load_plugin_commands(ctx)
            command = super().get_command(ctx, cmd_name)
        return command

    def load_plugin_commands(self, ctx: click.Context) -> None:
        """Let plugins add commands (core names are never replaced)."""
        self._plugins_loaded = True
        state = ctx.find_object(CliState) or CliState()
        core = dict(self.commands)
        state.plugins.hook.gotunnel_register_commands(cli=self)
        self.commands.update(core)


_GLOBAL_FLAGS = ("engine", "state_dir", "http_port", "https_port", "bind", "http2", "mdns", "hosts", "log_format", "log_level", "debug")


@click.group(
    cls=GotunnelGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Plugins may add commands; `gotunnel plugins` lists them. Every option is also an "
    "environment variable GOTUNNEL_<NAME> and a config-file key.",
)
@click.option("--engine", metavar="NAME", help="Proxy engine: builtin (default), nginx, caddy, envoy. [GOTUNNEL_ENGINE]")
@click.option("--config", "config", metavar="PATH", help="Config file (default ./gotunnel.toml, then the user config dir).")
@click.option("--state-dir", metavar="DIR", help="State directory (socket, tunnels, certificates, logs).")
@click.option("--http-port", metavar="PORT", help="HTTP listener port (default 8080).")
@click.option("--https-port", metavar="PORT", help="HTTPS listener port (default 8443).")
@click.option("--bind", metavar="ADDR", help="Listen address (default 0.0.0.0).")
@click.option("--http2/--no-http2", default=None, help="Offer HTTP/2 on the HTTPS listener (default on).")
@click.option("--mdns/--no-mdns", default=None, help="Advertise NAME.local on the LAN (default on).")
@click.option("--mdns-interface", multiple=True, metavar="IFACE", help="Interface (name or address) for mDNS; repeatable.")
@click.option("--hosts/--no-hosts", default=None, help="Also write NAME.local into the hosts file (default off).")
@click.option("--engine-bin", metavar="PATH", help="Program of the selected external engine (default: from PATH).")
@click.option("--log-format", metavar="FMT", help="auto, console or json.")
@click.option("--log-level", metavar="LEVEL", help="debug, info, warning or error.")
@click.option("--debug/--no-debug", default=None, help="Show tracebacks on errors.")
@click.version_option(__version__, "--version", prog_name="gotunnel")
@click.pass_context
def cli(ctx: click.Context, config: str | None, mdns_interface: tuple[str, ...], **flags: Any) -> None:
    """gotunnel: stable local names with trusted HTTPS for your local servers.

    \b
      gotunnel start -d myapp -p 3000   ->  https://myapp.localhost:8443
    """
    ctx.obj = CliState(flags={**flags, "config": config, "mdns_interface": list(mdns_interface) or None})


# ----- tunnel commands -------------------------------------------------------------------


def _tunnels_from_flags(domain: str | None, port: str | None, backends: tuple[str, ...], https: bool | None,
                        redirect_https: bool, health_path: str | None, state: CliState) -> list[Any]:
    """Validate the tunnels to start: from flags, or every `[[tunnels]]` table of the config file."""
    from .models import Backend, Tunnel, parse_port

    if domain is None:
        if port or backends:
            raise UsageError("--port/--backend need --domain NAME")
        file_tunnels = state.file_tunnels()
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
    raw: dict[str, Any] = {"name": domain, "backends": [Backend.parse(u).url if "," not in u else _backend_table(u) for u in urls]}
    if https is not None:
        raw["https"] = https
    if redirect_https:
        raw["redirect_https"] = True
    if health_path:
        raw["health"] = {"path": health_path}
    return [Tunnel.from_raw(raw)]


def _backend_table(raw: str) -> dict[str, Any]:
    from .models import Backend

    backend = Backend.parse(raw)
    return {"url": backend.url, "weight": backend.weight}


def _daemon_argv(state: CliState) -> list[str]:
    """The command that starts a daemon with this invocation's effective settings."""
    s = state.settings
    argv = [sys.executable, "-m", "gotunnel_core", "--state-dir", str(state.layout.root), "--engine", s["engine"],
            "--http-port", str(s["http_port"]), "--https-port", str(s["https_port"]), "--bind", s["bind"],
            "--http2" if s["http2"] else "--no-http2", "--mdns" if s["mdns"] else "--no-mdns", "--hosts" if s["hosts"] else "--no-hosts",
            "--log-format", "json", "--log-level", s["log_level"]]
    for iface in s["mdns_interface"]:
        argv += ["--mdns-interface", iface]
    if s["engine_bin"]:
        argv += ["--engine-bin", s["engine_bin"]]
    if s.config_file is not None:
        argv += ["--config", str(s.config_file.absolute())]
    return argv + ["daemon"]


def _client(state: CliState, *, spawn: bool) -> Any:
    """A client for the running daemon; spawns one when `spawn` (or when tunnels wait to be restored)."""
    from .daemon.client import DaemonClient, ensure_daemon

    layout = state.layout.ensure()
    client = DaemonClient(layout)
    if spawn or (client.ping() is None and _has_persisted_tunnels(layout)):
        client = ensure_daemon(layout, _daemon_argv(state))
        _check_daemon_matches(state, client)
    return client


def _has_persisted_tunnels(layout: Any) -> bool:
    try:
        return bool(json.loads(layout.tunnels_file.read_text()).get("tunnels"))
    except (OSError, ValueError):
        return False


def _check_daemon_matches(state: CliState, client: Any) -> None:
    """Refuse to silently use a daemon started with other explicitly requested settings."""
    info = client.ping() or {}
    s = state.settings
    for key in ("engine", "bind", "http_port", "https_port", "http2"):
        if s.sources[key] != "default" and info.get(key, s[key]) != s[key]:
            raise RuntimeFailure(
                f"the running daemon uses {key} {info.get(key)!r}, not {s[key]!r}",
                hint="stop it first with `gotunnel stop --all`, then start again",
            )


@cli.command()
@click.option("--domain", "-d", metavar="NAME", help="Tunnel name: NAME.localhost and NAME.local.")
@click.option("--port", "-p", metavar="PORT", help="Backend port on 127.0.0.1.")
@click.option("--backend", "backends", multiple=True, metavar="URL", help="Backend URL (repeatable), optionally URL,weight=N.")
@click.option("--https/--no-https", "https", default=None, help="Serve HTTPS too (default on).")
@click.option("--redirect-https", is_flag=True, help="Redirect plain HTTP to HTTPS.")
@click.option("--health-path", metavar="PATH", help="Active health check path, e.g. /health.")
@click.option("--foreground", is_flag=True, help="Run in this terminal; Ctrl-C stops and cleans up.")
@click.option("--json", "as_json", is_flag=True, help="Print the started tunnels as JSON.")
@pass_state
def start(state: CliState, domain: str | None, port: str | None, backends: tuple[str, ...], https: bool | None,
          redirect_https: bool, health_path: str | None, foreground: bool, as_json: bool) -> None:
    """Start a tunnel (or every tunnel of the config file) and print its URLs."""
    settings = state.settings
    tunnels = _tunnels_from_flags(domain, port, backends, https, redirect_https, health_path, state)
    from .engine import find_engine

    spec = find_engine(state.engine_specs(), settings["engine"])
    binary = spec.engine_class.probe(settings.values)
    if not binary.found:
        raise RuntimeFailure(f"engine {spec.name!r} cannot start: its program was not found", hint=binary.hint)
    payload = [t.to_dict() for t in tunnels]
    if foreground:
        _run_foreground(state, payload)
        return
    client = _client(state, spawn=True)
    started = client.request("start", tunnels=payload)
    if as_json:
        emit_json({"tunnels": started})
        return
    for item in started:
        click.echo(f"{item['name']} -> {', '.join(b['url'] for b in item['backends'])}")
        for url in item["urls"]:
            click.echo(f"  {url}")


def _run_foreground(state: CliState, payload: list[Any]) -> None:
    from .daemon.client import DaemonClient
    from .daemon.server import run_daemon
    from .logs import configure

    layout = state.layout.ensure()
    if DaemonClient(layout).ping() is not None:
        raise RuntimeFailure("a gotunnel daemon is already running", hint="use `gotunnel start` without --foreground, or `gotunnel stop --all`")
    configure(state.settings["log_format"], state.settings["log_level"])
    click.echo("gotunnel running in the foreground; Ctrl-C stops and removes its tunnels", err=True)
    run_daemon(layout, state.settings.values, state.plugins, initial_tunnels=payload, forget_on_exit=True)


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--all", "stop_all", is_flag=True, help="Stop every tunnel and the daemon.")
@pass_state
def stop(state: CliState, names: tuple[str, ...], stop_all: bool) -> None:
    """Stop tunnels by name, or everything with --all."""
    from .models import parse_tunnel_name

    if stop_all == bool(names):
        raise UsageError("name the tunnels to stop, or use --all")
    parsed = [parse_tunnel_name(n) for n in names]
    if stop_all:
        _stop_all(state)
        return
    client = _client(state, spawn=False)
    from .daemon.client import DaemonNotRunning

    try:
        stopped = client.request("stop", names=parsed)
    except DaemonNotRunning:
        raise RuntimeFailure(f"no tunnel named {parsed[0]!r}: no gotunnel daemon is running") from None
    for name in stopped:
        click.echo(f"stopped {name}")


def _stop_all(state: CliState) -> None:
    from .daemon.client import DaemonClient, daemon_alive
    from .state import TunnelStore

    layout = state.layout.ensure()
    client = DaemonClient(layout)
    if client.ping() is None:
        TunnelStore(layout.tunnels_file, layout.tunnels_lock).update(lambda _: [])
        click.echo("no daemon running; cleared the saved tunnels")
        return
    result = client.request("stop_all")
    deadline = time.monotonic() + 30
    while daemon_alive(layout) or _process_alive(result["pid"]):
        if time.monotonic() > deadline:
            raise RuntimeFailure(f"the daemon (pid {result['pid']}) did not exit within 30 s")
        time.sleep(0.05)
    for name in result["stopped"]:
        click.echo(f"stopped {name}")
    click.echo(f"daemon (pid {result['pid']}) stopped")


def _process_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting to be reaped counts as gone)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
def list_(state: CliState, as_json: bool) -> None:
    """List running tunnels."""
    client = _client(state, spawn=False)
    tunnels = client.request("list") if client.ping() is not None else []
    if as_json:
        emit_json({"tunnels": tunnels})
        return
    if not tunnels:
        click.echo("no tunnels running")
    for item in tunnels:
        click.echo(f"{item['name']:<24} {', '.join(b['url'] for b in item['backends'])}  {' '.join(item['urls'])}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
def status(state: CliState, as_json: bool) -> None:
    """Daemon pid, engine, ports, tunnels and certificate expiry."""
    client = _client(state, spawn=False)
    info = client.request("status") if client.ping() is not None else None
    if as_json:
        emit_json({"running": info is not None, "pid": info["pid"] if info else None, **(info or {})})
        return
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
        click.echo(f"  {item['name']}: {' '.join(item['urls'])}")
    for cert in info["certificates"]:
        click.echo(f"  certificate {cert['name']}: expires {cert['not_after']}")


# ----- engines, plugins, render ----------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
def engines(state: CliState, as_json: bool) -> None:
    """Installed engines, whether their program is found, and its version."""
    rows = []
    for name, spec in sorted(state.engine_specs().items()):
        probe = spec.engine_class.probe(state.settings.values)
        rows.append({"name": name, "description": spec.description, "plugin": spec.plugin,
                     "binary": {"found": probe.found, "path": probe.path, "version": probe.version, "hint": probe.hint}})
    if as_json:
        emit_json({"engines": rows})
        return
    for row in rows:
        binary = row["binary"]
        where = "in-process" if binary["found"] and not binary["path"] else (binary["path"] or "missing")
        click.echo(f"{row['name']:<10} {'found' if binary['found'] else 'MISSING':<8} {where} {binary['version'] or ''}".rstrip())
        if not binary["found"] and binary["hint"]:
            click.echo(f"           {binary['hint']}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def plugins(ctx: click.Context, as_json: bool) -> None:
    """Installed plugins, where they come from, their hooks, and any that failed to load."""
    state = ctx.find_object(CliState)
    assert state is not None
    records = state.plugins.records
    if as_json:
        emit_json({"plugins": [r.__dict__ for r in records]})
        return
    for r in records:
        origin = f"{r.distribution} {r.version}" if r.distribution else r.module or ""
        line = f"{r.name:<16} {r.status:<8} {r.source:<12} {origin}"
        click.echo(line.rstrip())
        if r.error:
            click.echo(f"                 error: {r.error}")
        elif r.hooks:
            click.echo(f"                 hooks: {', '.join(r.hooks)}")


def _render_table(state: CliState, engine_name: str) -> tuple[Any, Any]:
    """Build the engine and the route table for the config file's tunnels (the ops use case)."""
    from .certservice import CertService
    from .engine import EngineContext, find_engine
    from .models import Listen, RouteTable

    settings = state.settings
    if not settings.file_tunnels:
        where = settings.config_file or "no config file found"
        raise UsageError(f"nothing to render: no [[tunnels]] in the config file ({where})")
    tunnels = tuple(sorted(state.file_tunnels(), key=lambda t: t.name))
    spec = find_engine(state.engine_specs(), engine_name)
    layout = state.layout.ensure()
    certs = CertService(layout, settings.values)
    table = RouteTable(Listen(settings["bind"], settings["http_port"], settings["https_port"]), tunnels,
                       certs.for_tunnels(t.name for t in tunnels), certs.default())
    context = EngineContext(work_dir=layout.engine_dir(spec.name), settings=settings.values, hook=None)
    return spec.engine_class(context), table


@cli.command()
@click.option("--engine", "engine_name", metavar="NAME", help="Engine to render for (default: the global --engine).")
@click.option("--out", "out_dir", metavar="DIR", help="Write the files into DIR instead of printing them.")
@click.option("--format", "fmt", metavar="FORMAT",
              help="Config format, when the engine offers several (caddy: json, caddyfile); default: its native one.")
@pass_state
def render(state: CliState, engine_name: str | None, out_dir: str | None, fmt: str | None) -> None:
    """Render the engine config for the config file's tunnels, without starting anything."""
    from .engine import write_rendered

    engine, table = _render_table(state, engine_name or state.settings["engine"])
    files = engine.render_format(table, fmt)
    if out_dir:
        for path in write_rendered(files, Path(out_dir)):
            click.echo(str(path))
        return
    for name, content in sorted(files.items()):
        if len(files) > 1:
            click.echo(f"# ---- {name}")
        click.echo(content, nl=not content.endswith("\n"))


@cli.command()
@click.option("--engine", "engine_name", metavar="NAME", help="Engine to validate for (default: the global --engine).")
@pass_state
def validate(state: CliState, engine_name: str | None) -> None:
    """Render the config file's tunnels, then run the engine's own validator."""
    import asyncio

    engine, table = _render_table(state, engine_name or state.settings["engine"])
    asyncio.run(engine.validate(table))
    click.echo(f"ok: {len(table.tunnels)} tunnel(s) valid for engine {engine.name or engine_name}")


# ----- config, certs, logs, daemon -------------------------------------------------------


@cli.group()
def config() -> None:
    """Inspect the effective configuration."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
def config_show(state: CliState, as_json: bool) -> None:
    """Every setting's effective value and where it came from."""
    settings = state.settings
    if as_json:
        emit_json(settings.as_json())
        return
    click.echo(f"config file: {settings.config_file or '(none)'}")
    for name, item in settings.as_json()["settings"].items():
        click.echo(f"{name:<20} {json.dumps(item['value']):<24} {item['source']}")


@cli.group()
def cert() -> None:
    """The local CA and the tunnel certificates."""


def _cert_service(state: CliState) -> Any:
    from .certservice import CertService

    return CertService(state.layout.ensure(), state.settings.values)


@cert.command("ca")
@click.option("--path", "path_only", is_flag=True, help="Print only the CA certificate's path.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
def cert_ca(state: CliState, path_only: bool, as_json: bool) -> None:
    """The local CA certificate (PEM): its path, or its details."""
    service = _cert_service(state)
    if path_only:
        click.echo(str(service.ca.cert_path))
        return
    info = service.ca.info().to_dict()
    if as_json:
        emit_json(info)
        return
    for key, value in info.items():
        click.echo(f"{key:<16} {value}")


@cert.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
def cert_list(state: CliState, as_json: bool) -> None:
    """Every tunnel certificate with its expiry."""
    leaves = [info.to_dict() for info in _cert_service(state).issuer.list_leaves()]
    if as_json:
        emit_json({"certificates": leaves})
        return
    for leaf in leaves:
        due = " (renewal due)" if leaf["due_for_renewal"] else ""
        click.echo(f"{leaf['name']:<24} expires {leaf['not_after']}{due}")


@cert.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
def cert_show(state: CliState, name: str, as_json: bool) -> None:
    """Details of one tunnel certificate."""
    from .models import parse_tunnel_name

    info = _cert_service(state).issuer.leaf_info(parse_tunnel_name(name)).to_dict()
    if as_json:
        emit_json(info)
        return
    for key, value in info.items():
        click.echo(f"{key:<16} {value}")


@cert.command("renew")
@click.argument("names", nargs=-1)
@pass_state
def cert_renew(state: CliState, names: tuple[str, ...]) -> None:
    """Renew certificates now (all due ones, or the named ones); a running engine picks them up."""
    from .daemon.client import DaemonClient
    from .models import parse_tunnel_name

    parsed = [parse_tunnel_name(n) for n in names]
    client = DaemonClient(state.layout.ensure())
    if client.ping() is not None:
        renewed = client.request("renew", names=parsed)
    else:
        service = _cert_service(state)
        targets = parsed or [leaf.name for leaf in service.issuer.list_leaves() if leaf.due_for_renewal]
        renewed = [service.issuer.renew(n).name for n in targets]
    for name in renewed:
        click.echo(f"renewed {name}")
    if not renewed:
        click.echo("nothing to renew")


# ----- trust ---------------------------------------------------------------------------------


def _sudo_command(state: CliState, extra: list[str]) -> Callable[[list[str]], str]:
    """Builds the exact command that finishes the job with root, for the `hint:` line."""
    import shlex
    import shutil

    def build(store_ids: list[str]) -> str:
        found = shutil.which("gotunnel")
        prefix = ["gotunnel"] if found else [sys.executable, "-m", "gotunnel_core"]
        argv = [*prefix]
        if state.settings.sources["state_dir"] != "default":
            argv += ["--state-dir", str(state.layout.root)]  # sudo drops GOTUNNEL_* variables
        argv += ["trust", *extra]
        for store_id in store_ids:
            argv += ["--store", store_id]
        return "sudo " + shlex.join(argv)

    return build


def _check_target(layout: Any, service_certs: Any, url: str | None) -> Any:
    """Where `--check` shakes hands: --check-url, else the running daemon's HTTPS port, else offline."""
    from urllib.parse import urlsplit

    from .daemon.client import DaemonClient
    from .trust import Target

    leaf = Path(service_certs.default().cert)
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


def _print_rows(rows: list[Any]) -> None:
    if not rows:
        click.echo("nothing recorded: gotunnel installed its CA nowhere")
        return
    width = max(len(r.store) for r in rows)
    status_width = max(len(r.status) for r in rows)
    for row in rows:
        click.echo(f"{row.store:<{width}}  {row.status:<{status_width}}  {row.detail}".rstrip())


@cli.command()
@click.option("--uninstall", is_flag=True, help="Remove the CA from every store gotunnel installed it into.")
@click.option("--check", is_flag=True, help="Report per store: trusted / not trusted / store missing.")
@click.option("--env", "env_vars", is_flag=True, help="Print SSL_CERT_FILE etc. for a bundle of system roots + the CA.")
@click.option("--store", "stores", multiple=True, metavar="NAME",
              help="Limit to this store (repeatable): system, system-debian, system-fedora, system-arch, nss, "
                   "macos, windows, java.")
@click.option("--check-url", metavar="URL", help="With --check: handshake with this https URL (default: the daemon).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
def trust(state: CliState, uninstall: bool, check: bool, env_vars: bool, stores: tuple[str, ...],
          check_url: str | None, as_json: bool) -> None:
    """Install gotunnel's CA into the trust stores found here (and --uninstall, --check, --env).

    Stores that need root are left untouched and reported with the exact `sudo` command.
    Everything installed is recorded in the state directory; --uninstall removes exactly that.
    """
    from .certservice import CertService
    from .paths import as_invoking_user
    from .trust import CA, TrustRecord, TrustService

    if sum((uninstall, check, env_vars)) > 1:
        raise UsageError("use only one of --uninstall, --check and --env")
    if check_url and not check:
        raise UsageError("--check-url needs --check")
    layout = state.layout  # resolved as root: under sudo it already names the invoking user's directory
    with as_invoking_user():  # under sudo, the user's state stays the user's
        layout.ensure()
        certs = CertService(layout, state.settings.values)
        ca = CA.from_path(certs.ca.cert_path)
        target = _check_target(layout, certs, check_url) if check else None
    service = TrustService(ca, TrustRecord(layout.trust_record), layout.trust_dir)
    names = list(stores)
    if env_vars:
        from .trust.env_bundle import shell_exports

        info = service.install_env()
        if as_json:
            emit_json({"bundle": info["bundle"], "system_roots": info["system_roots"], "variables": info["variables"]})
        else:
            click.echo(shell_exports(info), nl=False)
        return
    if check:
        rows = service.check(names, target)
        action = "check"
    elif uninstall:
        rows = service.uninstall(names, _sudo_command(state, ["--uninstall"]))
        action = "uninstall"
    else:
        rows = service.install(names, _sudo_command(state, []))
        action = "install"
    if as_json:
        payload: dict[str, Any] = {"action": action, "ca": {"path": str(ca.path), "sha256_fingerprint": ca.fingerprint},
                                   "record": str(layout.trust_record), "stores": [r.to_dict() for r in rows]}
        if target is not None:
            payload["target"] = None if target.offline else f"{target.server_name}@{target.host}:{target.port}"
        emit_json(payload)
    else:
        _print_rows(rows)
    _trust_outcome(state, action, rows)


def _trust_outcome(state: CliState, action: str, rows: list[Any]) -> None:
    """Exit 1 with the reason (and the sudo command) unless every selected, present store is done."""
    from .errors import PermissionProblem

    failed = [r.store for r in rows if r.status == "failed"]
    needs = [r.store for r in rows if r.status == "needs-sudo"]
    if failed:
        raise RuntimeFailure(f"{action} failed for: {', '.join(failed)} (see above; nothing half-done was left)")
    if needs:
        extra = ["--uninstall"] if action == "uninstall" else []
        done = [r.store for r in rows if r.status in ("installed", "removed")]
        raise PermissionProblem(
            f"{', '.join(needs)} need{'s' if len(needs) == 1 else ''} root; done: {', '.join(done) or 'nothing'}",
            hint=_sudo_command(state, extra)(needs),
        )
    if action == "install" and not any(r.status == "installed" for r in rows):
        raise RuntimeFailure("no trust store found to install into",
                             hint="install libnss3-tools (certutil) or ca-certificates, or use `gotunnel trust --env`")
    if action == "check":
        bad = [r.store for r in rows if r.status in ("not trusted", "unknown")]
        if bad:
            raise RuntimeFailure(f"gotunnel's CA is not trusted by: {', '.join(bad)}", hint="run `gotunnel trust`")


@cli.command()
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines.")
@click.option("--lines", "-n", default=200, show_default=True, help="Lines of history to show.")
@pass_state
def logs(state: CliState, follow: bool, lines: int) -> None:
    """Show the daemon's log."""
    path = state.layout.log_file
    if not path.exists():
        click.echo(f"no log yet at {path}", err=True)
        return
    with path.open("r", errors="replace") as fh:
        for line in fh.readlines()[-lines:]:
            click.echo(line, nl=False)
        while follow:
            line = fh.readline()
            if line:
                click.echo(line, nl=False)
            else:
                time.sleep(0.25)


@cli.command()
@pass_state
def daemon(state: CliState) -> None:
    """Run the daemon in the foreground (`gotunnel start` spawns it when needed)."""
    from .daemon.server import run_daemon
    from .logs import configure

    layout = state.layout.ensure()
    log_fh = open(layout.log_file, "a", buffering=1)
    os.chmod(layout.log_file, 0o600)
    configure("json", state.settings["log_level"], stream=log_fh)
    run_daemon(layout, state.settings.values, state.plugins)


@cli.group()
def hosts() -> None:
    """The gotunnel block in the hosts file (NAME.local -> loopback)."""


def _hosts_file(state: CliState) -> Any:
    from .hosts import HostsFile, default_hosts_path

    return HostsFile(Path(state.settings["hosts_file"] or default_hosts_path()))


def _saved_tunnel_names(state: CliState) -> list[str]:
    from .names import base_name
    from .state import TunnelStore

    layout = state.layout
    if not layout.tunnels_file.exists():
        return []
    return sorted({f"{base_name(t)}.local" for t in TunnelStore(layout.tunnels_file, layout.tunnels_lock).load()})


@hosts.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
def hosts_list(state: CliState, as_json: bool) -> None:
    """Names in gotunnel's hosts block."""
    hosts_file = _hosts_file(state)
    names = hosts_file.entries()
    if as_json:
        emit_json({"hosts_file": str(hosts_file.path), "names": names})
        return
    for name in names:
        click.echo(name)


@hosts.command("sync")
@pass_state
def hosts_sync(state: CliState) -> None:
    """Make the block hold exactly the saved tunnels' NAME.local names."""
    names = _saved_tunnel_names(state)
    changed = _hosts_file(state).sync(names)
    click.echo(f"{'updated' if changed else 'unchanged'}: {len(names)} name(s)")


@hosts.command("clean")
@pass_state
def hosts_clean(state: CliState) -> None:
    """Remove gotunnel's block from the hosts file; every other byte stays."""
    changed = _hosts_file(state).clean()
    click.echo("removed the gotunnel block" if changed else "no gotunnel block found")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
def doctor(state: CliState, as_json: bool) -> None:
    """Check this machine: .local resolution, mDNS interfaces, engines, state directory."""
    from dataclasses import asdict

    from .engine import find_engine
    from .mdns.interfaces import select_interfaces, take_snapshot
    from .mdns.resolver_check import check_local_resolution

    settings = state.settings
    resolution = check_local_resolution()
    try:
        chosen = select_interfaces(take_snapshot(), settings["mdns_interface"] or None)
        interfaces: Any = [{"name": i.name, "ipv4": list(i.ipv4), "ipv6": list(i.ipv6)} for i in chosen]
    except GotunnelError as exc:
        interfaces = {"error": exc.message}
    spec = find_engine(state.engine_specs(), settings["engine"])
    probe = spec.engine_class.probe(settings.values)
    report = {
        "local_resolution": asdict(resolution),
        "mdns": {"enabled": settings["mdns"], "interfaces": interfaces},
        "engine": {"name": spec.name, "found": probe.found, "path": probe.path, "version": probe.version, "hint": probe.hint},
        "state_dir": str(state.layout.root),
    }
    if as_json:
        emit_json(report)
        return
    mark = "ok" if resolution.ok else resolution.verdict.upper()
    click.echo(f"[{mark}] this machine resolves .local names: {resolution.verdict}")
    for detail in resolution.details:
        click.echo(f"       {detail}")
    if resolution.hint:
        click.echo(f"       fix: {resolution.hint}")
    if isinstance(interfaces, dict):
        click.echo(f"[ERROR] mDNS interfaces: {interfaces['error']}")
    else:
        names = ", ".join(f"{i['name']} ({', '.join(i['ipv4'] + i['ipv6'])})" for i in interfaces) or "none found"
        click.echo(f"[{'ok' if interfaces else 'WARN'}] mDNS would announce on: {names}")
    click.echo(f"[{'ok' if probe.found else 'MISSING'}] engine {spec.name}: {probe.path or 'in-process'} {probe.version or ''}".rstrip())
    if not probe.found and probe.hint:
        click.echo(f"       fix: {probe.hint}")


# ----- entry point -----------------------------------------------------------------------


def _fail(message: str, hint: str | None, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    if hint:
        click.echo(f"hint: {hint}", err=True)
    sys.exit(code)


def _wants_debug(argv: Iterable[str]) -> bool:
    return "--debug" in argv or os.environ.get("GOTUNNEL_DEBUG", "").lower() in ("1", "true", "yes", "on")


def main(argv: list[str] | None = None) -> None:
    """Run the CLI with gotunnel's error contract."""
    args = list(sys.argv[1:] if argv is None else argv)
    from .logs import configure

    configure("auto", "warning", stream=sys.stderr)  # CLI diagnostics go to stderr, never stdout
    try:
        cli.main(args=args, prog_name="gotunnel", standalone_mode=False)
    except GotunnelError as exc:
        if _wants_debug(args):
            import traceback

            traceback.print_exc()
        _fail(exc.message, exc.hint, exc.exit_code)
    except click.exceptions.Abort:
        _fail("aborted", None, 1)
    except click.ClickException as exc:
        command = f"gotunnel {exc.ctx.command_path.split(' ', 1)[1]} --help" if getattr(exc, "ctx", None) and " " in exc.ctx.command_path else "gotunnel --help"
        _fail(exc.format_message().replace("\n", " "), f"see `{command}`", 2)
    except KeyboardInterrupt:
        _fail("interrupted", None, 1)
    except Exception as exc:  # noqa: BLE001 - last resort: one line, traceback only with --debug
        if _wants_debug(args):
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc}", "run again with --debug for the traceback", 1)
    sys.exit(0)
