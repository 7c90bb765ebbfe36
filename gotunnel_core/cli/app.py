"""The `gotunnel` click group: global flags, the shared command state, and the error contract.

Exit codes: 0 ok, 1 runtime failure, 2 usage or validation error. Errors are one
`error: ...` line plus an optional `hint: ...` line on stderr; tracebacks only with --debug.

The group itself holds no commands. The core's commands live in `gotunnel_core.commands`, one
module per topic, and are registered the way a plugin's are: through the
`gotunnel_register_commands` hook, on a small plugin manager holding only those modules (so
`--help` and `list` stay fast). A name the core does not know asks the installed plugins.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, NoReturn

import click

from .. import __version__
from ..errors import GotunnelError, UsageError

#: The core's command modules, each an internal plugin implementing `gotunnel_register_commands`.
CORE_COMMAND_MODULES: tuple[str, ...] = (
    "gotunnel_core.commands.tunnels",
    "gotunnel_core.commands.engines",
    "gotunnel_core.commands.sync",
    "gotunnel_core.commands.config",
    "gotunnel_core.commands.allow",
    "gotunnel_core.commands.certs",
    "gotunnel_core.commands.trust",
    "gotunnel_core.commands.daemon",
    "gotunnel_core.commands.hosts",
    "gotunnel_core.commands.doctor",
    "gotunnel_core.commands.observe",
    "gotunnel_core.commands.docker",
    "gotunnel_core.commands.run",
    "gotunnel_core.commands.urls",
    "gotunnel_core.commands.ports",
    "gotunnel_core.commands.team",
    "gotunnel_core.commands.dashboard",
    "gotunnel_core.commands.inspector",
)


#: Commands that act on a config file's programs and templates (run engines, render templates):
#: they honour such keys from a project's config file once it is allowed (`gotunnel config
#: allow`). Every other command is an information command and never does.
ACTION_COMMANDS = frozenset({"start", "run", "render", "validate", "daemon"})
#: Commands that must work with a broken project config file (they skip it with a warning):
#: seeing and stopping what runs never depends on the current directory's file.
LENIENT_COMMANDS = frozenset({"list", "status", "stop", "logs"})


@dataclass
class CliState:
    """Global flags as given on the command line (None = not given), resolved lazily."""

    flags: dict[str, Any] = field(default_factory=dict)
    command: str | None = None
    _resolved: Any = None
    _plugins: Any = None

    @property
    def settings(self) -> Any:
        """The effective settings (`config.Resolved`); configures CLI logging on first use."""
        if self._resolved is None:
            from ..config import resolve
            from ..logs import configure

            self._resolved = resolve(self.flags, honour_programs=self.command in ACTION_COMMANDS,
                                     lenient=self.command in LENIENT_COMMANDS)
            if self._resolved.skipped_file:
                click.echo(f"warning: ignoring the config file: {self._resolved.skipped_file}", err=True)
            from ..ports.client import standard_port_defaults

            standard_port_defaults(self._resolved.values, self._resolved.sources)
            # The CLI shows warnings and errors; info lines belong in the daemon's log.
            wanted = "debug" if self._resolved["debug"] else self._resolved["log_level"]
            configure(self._resolved["log_format"], wanted if wanted in ("debug", "error") else "warning")
        return self._resolved

    def note_ignored(self) -> None:
        """Say which keys of a project's config file this information command left out."""
        settings = self.settings
        if settings.ignored:
            click.echo(f"note: {', '.join(settings.ignored)} from {settings.config_file} not used: information "
                       "commands never run a project's programs or templates", err=True)

    def file_tunnels(self) -> list[Any]:
        """The config file's `[[tunnels]]`, validated; errors name the file and the table."""
        from ..models import Tunnel

        from ..config import check_file_tunnel
        from ..dashboard.route import refuse_reserved

        settings = self.settings
        tunnels = []
        for index, raw in enumerate(settings.file_tunnels, start=1):
            try:
                check_file_tunnel(raw)
                tunnel = Tunnel.from_raw(raw)
                refuse_reserved(tunnel.name)
                tunnels.append(tunnel)
            except UsageError as exc:
                raise UsageError(f"config file {str(settings.config_file)!r}: [[tunnels]] #{index}: {exc.message}",
                                 exc.hint) from None
        return tunnels

    @property
    def layout(self) -> Any:
        """The state directory's layout (`paths.StateLayout`)."""
        from ..paths import state_layout

        return state_layout(self.settings["state_dir"])

    @property
    def plugins(self) -> Any:
        """The full plugin manager (defaults and entry points), built on first use."""
        if self._plugins is None:
            from ..plugins import make_plugin_manager

            self._plugins = make_plugin_manager()
        return self._plugins

    def engine_specs(self) -> dict[str, Any]:
        """Every installed engine by name."""
        from ..engine import collect_engines

        return collect_engines(self.plugins.pm)

    def engine_options(self) -> dict[str, Any]:
        """Every installed engine's effective options (`options.EngineOptions`), checked: a bad
        value or an unknown key in any `[engines.<name>]` table is a usage error (exit 2)."""
        settings = self.settings.values
        return {name: spec.engine_class.resolve_options(settings) for name, spec in sorted(self.engine_specs().items())}

    def client(self, *, spawn: bool) -> Any:
        """A client for this state directory's daemon, spawning one when `spawn` (see `launcher.connect`)."""
        from ..daemon.launcher import connect

        return connect(self.settings, self.layout, spawn=spawn)

    def ask_running_daemon(self, op: str) -> Any:
        """The answer of this state directory's daemon to `op`, or None when no daemon runs (none is spawned)."""
        client = self.client(spawn=False)
        return client.request(op) if client.ping() is not None else None


pass_state = click.make_pass_decorator(CliState)


def emit_json(data: Any) -> None:
    """Print `data` as the stable, sorted JSON every `--json` flag prints."""
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


class GotunnelGroup(click.Group):
    """Core commands come from `CORE_COMMAND_MODULES` through the command hook; a name the core does
    not know asks the installed plugins for their commands."""

    _core_loaded = False
    _plugins_loaded = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        self.load_core_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self.load_core_commands()
        command = super().get_command(ctx, cmd_name)
        if command is None and not self._plugins_loaded:
            self.load_plugin_commands(ctx)
            command = super().get_command(ctx, cmd_name)
        return command

    def load_core_commands(self) -> None:
        """Register the core's command modules through the same hook plugins use."""
        if self._core_loaded:
            return
        self._core_loaded = True
        from ..plugins import make_plugin_manager

        manager = make_plugin_manager(load_entrypoints=False, load_defaults=False,
                                      extra_plugins=[(name, _import(name)) for name in CORE_COMMAND_MODULES])
        manager.hook.gotunnel_register_commands(cli=self)

    def load_plugin_commands(self, ctx: click.Context) -> None:
        """Let plugins add commands (core names are never replaced)."""
        self.load_core_commands()
        self._plugins_loaded = True
        from ..plugins import call_hook

        state = ctx.find_object(CliState) or CliState()
        core = dict(self.commands)
        call_hook(state.plugins.pm, "gotunnel_register_commands", {"cli": self})  # a broken plugin is skipped
        self.commands.update(core)


def _import(module_name: str) -> Any:
    import importlib

    return importlib.import_module(module_name)


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
@click.option("--runtime", metavar="NAME", help="How nginx/Caddy/Envoy run: process (default) or docker. [GOTUNNEL_RUNTIME]")
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
    ctx.obj = CliState(flags={**flags, "config": config, "mdns_interface": list(mdns_interface) or None},
                       command=ctx.invoked_subcommand)


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
    from ..logs import configure

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
        ctx = getattr(exc, "ctx", None)
        path = ctx.command_path if ctx is not None else ""
        command = f"gotunnel {path.split(' ', 1)[1]} --help" if " " in path else "gotunnel --help"
        _fail(exc.format_message().replace("\n", " "), f"see `{command}`", 2)
    except KeyboardInterrupt:
        _fail("interrupted", None, 1)
    except Exception as exc:  # noqa: BLE001 - last resort: one line, traceback only with --debug
        if _wants_debug(args):
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc}", "run again with --debug for the traceback", 1)
    sys.exit(0)
