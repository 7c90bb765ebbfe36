"""Layered configuration: CLI flag > environment `GOTUNNEL_*` > config file (TOML) > defaults.

Every setting is declared once in `SETTINGS`; resolution records where each effective value
came from so `gotunnel config show` can say so. A config file with an unknown key or a value
of the wrong type fails with the file, the key and the reason.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import UsageError
from .models import TlsPolicy, parse_bind, parse_domain_template, parse_port
from .values import boolean, choice, from_model, integer, optional, optional_path, optional_text, str_list, text

@dataclass(frozen=True)
class Setting:
    """One configuration key: its parser, default and one-line help."""

    name: str
    parse: Callable[[object], Any]
    default: Any
    help: str
    secret: bool = False

    @property
    def env(self) -> str:
        return "GOTUNNEL_" + self.name.upper()


def _providers(raw: object) -> list[str]:
    from .providers import PROVIDERS

    names = str_list(raw)
    unknown = [name for name in names if name not in PROVIDERS]
    if unknown:
        raise ValueError(f"unknown provider {unknown[0]!r}; available: {', '.join(sorted(PROVIDERS))}")
    return sorted(set(names))


SETTINGS: tuple[Setting, ...] = (
    Setting("engine", text, "builtin", "proxy engine: builtin, nginx, caddy, envoy, or a plugin's"),
    Setting("state_dir", optional_path, None, "directory for the daemon socket, state, certificates and logs"),
    Setting("http_port", from_model(parse_port), 8080, "port of the HTTP listener"),
    Setting("https_port", from_model(parse_port), 8443, "port of the HTTPS listener"),
    Setting("bind", from_model(parse_bind), "0.0.0.0", "address the listeners bind to"),
    Setting("http2", boolean, True, "offer HTTP/2 (ALPN h2) besides HTTP/1.1 on the HTTPS listener"),
    Setting("mdns", boolean, True, "advertise NAME.local on the LAN with mDNS"),
    Setting("mdns_interface", str_list, [], "interfaces (names or addresses) to announce on; default: private LAN interfaces"),
    Setting("hosts", boolean, False, "also write NAME.local entries into the hosts file"),
    Setting("hosts_file", optional_path, None, "hosts file to manage (default: the system's)"),
    Setting("log_format", choice("auto", "console", "json"), "auto", "log format: auto (console on a TTY), console or json"),
    Setting("log_level", choice("debug", "info", "warning", "error"), "info", "log level"),
    Setting("debug", boolean, False, "show tracebacks for errors"),
    Setting("template_dir", optional_path, None, "directory with engine template overrides"),
    Setting("engine_bin", optional_path, None, "program of the selected external engine (default: found on PATH)"),
    Setting("runtime", choice("process", "docker"), None,
            "how external engines run: process (a child of the daemon) or docker (their official image); "
            "unset: each engine's option `runtime` (process)"),
    Setting("cert_validity_days", integer(1, 397), 90, "validity of tunnel certificates, days"),
    Setting("cert_renew_days", integer(1, 396), 30, "renew a tunnel certificate this many days before it expires"),
    Setting("metrics_port", integer(0, 65535), 0, "serve Prometheus metrics on 127.0.0.1:PORT (0: off)"),
    Setting("sentry_dsn", optional_text, None,
            "send unexpected daemon errors to this Sentry DSN (default: none, nothing is sent)", secret=True),
    Setting("providers", _providers, [], "tunnel sources the daemon follows besides you: docker (containers by label)"),
    Setting("dashboard", boolean, True, "serve the local dashboard and inspector API on 127.0.0.1:dashboard_port"),
    Setting("dashboard_port", from_model(parse_port), 7373, "port of the dashboard (loopback only)"),
    Setting("inspect_body_limit", integer(0, 64 * 1024 * 1024), 1024 * 1024,
            "bytes of each request and response body the inspector keeps (the rest is cut and marked)"),
    Setting("inspect_max_requests", integer(1, 100000), 500, "requests the inspector keeps (a ring buffer, oldest dropped)"),
    Setting("ca_extra_suffixes", str_list, [], "extra DNS suffixes the local CA may sign (set before the CA is created)"),
    Setting("domain_template", optional(from_model(parse_domain_template)), None,
            "real names for a proxy you run (render --for existing, sync), e.g. '{name}.dev.example.com'"),
    Setting("tls", optional(from_model(lambda raw: TlsPolicy.parse(raw).to_raw())), None,
            "default TLS of those names: 'acme', 'off' or {cert = PATH, key = PATH} (file only)"),
)
SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
#: Tables allowed in the config file besides the settings above.
FILE_TABLES = {"tunnels", "engines"}
#: Top-level keys (and GOTUNNEL_<KEY> variables) of older versions, now engine options: still
#: accepted, passed on unparsed, and read by every engine that declares the option with
#: `legacy=True` (builtin, and Envoy/Caddy for those they honour). `[engines.<engine>]` wins.
LEGACY_ENGINE_KEYS = ("workers", "max_header_size", "header_timeout", "idle_timeout", "max_connections", "via")


@dataclass
class Resolved:
    """The effective settings, where each came from, and the tunnels declared in the config file."""

    values: dict[str, Any]
    sources: dict[str, str]
    config_file: Path | None
    file_tunnels: list[Any] = field(default_factory=list)
    engine_tables: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def as_json(self) -> dict[str, Any]:
        """Stable schema of `config show --json`: {config_file, settings: {name: {value, source, env}}}."""
        return {
            "config_file": str(self.config_file) if self.config_file else None,
            "settings": {
                s.name: {"value": "<hidden>" if s.secret and self.values[s.name] else self.values[s.name],
                         "source": self.sources[s.name], "env": s.env} for s in SETTINGS
            },
        }


def find_config_file(explicit: str | None, cwd: Path | None = None, env: Mapping[str, str] | None = None) -> Path | None:
    """`--config PATH` (must exist), else `./gotunnel.toml`, else `<user config dir>/gotunnel/config.toml`."""
    if explicit:
        path = Path(os.path.expanduser(explicit))
        if not path.is_file():
            raise UsageError(f"config file {explicit!r} does not exist")
        return path
    local = (cwd or Path.cwd()) / "gotunnel.toml"
    if local.is_file():
        return local
    from .paths import user_config_dir

    user = user_config_dir(env) / "config.toml"
    return user if user.is_file() else None


def load_config_file(path: Path) -> dict[str, Any]:
    """Parse a TOML config file; syntax errors name the file."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {str(path)!r}: {exc}") from None
    except OSError as exc:
        raise UsageError(f"config file {str(path)!r} cannot be read: {exc.strerror}") from None


def resolve(
    cli_values: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Resolved:
    """Merge the layers. `cli_values` holds only flags given on the command line (None = not given)."""
    env = os.environ if env is None else env
    explicit_config = cli_values.get("config") or env.get("GOTUNNEL_CONFIG") or None
    config_path = find_config_file(explicit_config, cwd, env)
    file_data = load_config_file(config_path) if config_path else {}

    for key in file_data:
        if key not in SETTINGS_BY_NAME and key not in FILE_TABLES and key not in LEGACY_ENGINE_KEYS:
            raise UsageError(
                f"config file {str(config_path)!r}: unknown key {key!r}",
                hint="known keys: " + ", ".join(sorted([*SETTINGS_BY_NAME, *FILE_TABLES])),
            )

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for setting in SETTINGS:
        if cli_values.get(setting.name) is not None:
            raw, source, label = cli_values[setting.name], "flag", "--" + setting.name.replace("_", "-")
        elif env.get(setting.env) not in (None, ""):
            raw, source, label = env[setting.env], "env", setting.env
        elif setting.name in file_data:
            raw, source, label = file_data[setting.name], f"file:{config_path}", f"{config_path}: key {setting.name!r}"
        else:
            values[setting.name], sources[setting.name] = setting.default, "default"
            continue
        try:
            values[setting.name] = setting.parse(raw)
        except ValueError as exc:
            if source.startswith("file:"):
                message = f"config file {str(config_path)!r}: key {setting.name!r} = {raw!r}: {exc}"
            else:
                message = f"invalid value {raw!r} for {label}: {exc}"
            raise UsageError(message) from None
        sources[setting.name] = source

    tunnels = file_data.get("tunnels", [])
    if not isinstance(tunnels, list):
        raise UsageError(f"config file {str(config_path)!r}: key 'tunnels' must be an array of tables ([[tunnels]])")
    engines = file_data.get("engines", {})
    if not isinstance(engines, dict):
        raise UsageError(f"config file {str(config_path)!r}: key 'engines' must be a table")
    for name, table in engines.items():
        if not isinstance(table, dict):
            raise UsageError(f"config file {str(config_path)!r}: [engines.{name}] must be a table")
    values["engines"] = engines  # per-engine tables ([engines.nginx] ...), parsed by each engine's options
    values["config_file"] = str(config_path) if config_path else None
    for key in LEGACY_ENGINE_KEYS:  # parsed (and validated) by the engines that still read them
        legacy_env = "GOTUNNEL_" + key.upper()
        if env.get(legacy_env) not in (None, ""):
            values[key] = env[legacy_env]
        elif key in file_data:
            values[key] = file_data[key]
    return Resolved(values, sources, config_path, tunnels, engines)
