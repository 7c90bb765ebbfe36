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

from .errors import UsageError, ValidationError
from .models import parse_bind, parse_port

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse_bool(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
        return raw.strip().lower() in _TRUE
    raise ValueError("must be a boolean (1/0/true/false)")


def _parse_str(raw: object) -> str:
    if not isinstance(raw, str):
        raise ValueError("must be a string")
    return raw


def _parse_opt_path(raw: object) -> str | None:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or "\0" in raw:
        raise ValueError("must be a path")
    return os.path.expanduser(raw)


def _choice(*allowed: str) -> Callable[[object], str]:
    def parse(raw: object) -> str:
        if not isinstance(raw, str) or raw.lower() not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return raw.lower()

    return parse


def _int_range(low: int, high: int) -> Callable[[object], int]:
    def parse(raw: object) -> int:
        if isinstance(raw, str) and raw.strip().isdigit():
            raw = int(raw)
        if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
            raise ValueError(f"must be an integer from {low} to {high}")
        return raw

    return parse


def _float_range(low: float, high: float) -> Callable[[object], float]:
    def parse(raw: object) -> float:
        if isinstance(raw, str):
            try:
                raw = float(raw)
            except ValueError:
                raise ValueError(f"must be a number from {low:g} to {high:g}") from None
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not low <= raw <= high:
            raise ValueError(f"must be a number from {low:g} to {high:g}")
        return float(raw)

    return parse


def _str_list(raw: object) -> list[str]:
    if isinstance(raw, str):
        return [part.strip() for part in raw.split(",") if part.strip()]
    if isinstance(raw, (list, tuple)) and all(isinstance(item, str) for item in raw):
        return [item.strip() for item in raw if item.strip()]
    raise ValueError("must be a list of strings (comma-separated in the environment)")


def _wrap(parser: Callable[[object], Any]) -> Callable[[object], Any]:
    """Adapt model parsers (which raise ValidationError) to the ValueError protocol here."""

    def parse(raw: object) -> Any:
        try:
            return parser(raw)
        except ValidationError as exc:
            raise ValueError(exc.reason) from None

    return parse


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

    names = _str_list(raw)
    unknown = [name for name in names if name not in PROVIDERS]
    if unknown:
        raise ValueError(f"unknown provider {unknown[0]!r}; available: {', '.join(sorted(PROVIDERS))}")
    return sorted(set(names))


SETTINGS: tuple[Setting, ...] = (
    Setting("engine", _parse_str, "builtin", "proxy engine: builtin, nginx, caddy, envoy, or a plugin's"),
    Setting("state_dir", _parse_opt_path, None, "directory for the daemon socket, state, certificates and logs"),
    Setting("http_port", _wrap(parse_port), 8080, "port of the HTTP listener"),
    Setting("https_port", _wrap(parse_port), 8443, "port of the HTTPS listener"),
    Setting("bind", _wrap(parse_bind), "0.0.0.0", "address the listeners bind to"),
    Setting("mdns", _parse_bool, True, "advertise NAME.local on the LAN with mDNS"),
    Setting("mdns_interface", _str_list, [], "interfaces (names or addresses) to announce on; default: private LAN interfaces"),
    Setting("hosts", _parse_bool, False, "also write NAME.local entries into the hosts file"),
    Setting("hosts_file", _parse_opt_path, None, "hosts file to manage (default: the system's)"),
    Setting("log_format", _choice("auto", "console", "json"), "auto", "log format: auto (console on a TTY), console or json"),
    Setting("log_level", _choice("debug", "info", "warning", "error"), "info", "log level"),
    Setting("debug", _parse_bool, False, "show tracebacks for errors"),
    Setting("template_dir", _parse_opt_path, None, "directory with engine template overrides"),
    Setting("engine_bin", _parse_opt_path, None, "program of the selected external engine (default: found on PATH)"),
    Setting("runtime", _choice("process", "docker"), "process",
            "how external engines run: process (a child of the daemon) or docker (their official image)"),
    Setting("workers", _int_range(1, 64), 1, "builtin engine: worker processes"),
    Setting("max_header_size", _int_range(1024, 1 << 20), 65536, "builtin engine: largest request head in bytes (431 above)"),
    Setting("header_timeout", _float_range(0.1, 3600), 10.0, "builtin engine: absolute deadline for a request head, seconds"),
    Setting("idle_timeout", _float_range(0.1, 86400), 75.0, "builtin engine: idle timeout of connections and bodies, seconds"),
    Setting("max_connections", _int_range(1, 1_000_000), 10000, "builtin engine: most concurrent client connections"),
    Setting("via", _parse_bool, False, "builtin engine: add a Via header"),
    Setting("cert_validity_days", _int_range(1, 397), 90, "validity of tunnel certificates, days"),
    Setting("cert_renew_days", _int_range(1, 396), 30, "renew a tunnel certificate this many days before it expires"),
    Setting("providers", _providers, [], "tunnel sources the daemon follows besides you: docker (containers by label)"),
    Setting("ca_extra_suffixes", _str_list, [], "extra DNS suffixes the local CA may sign (set before the CA is created)"),
)
SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
#: Tables allowed in the config file besides the settings above.
FILE_TABLES = {"tunnels", "engines"}


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
                s.name: {"value": self.values[s.name], "source": self.sources[s.name], "env": s.env} for s in SETTINGS
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
        if key not in SETTINGS_BY_NAME and key not in FILE_TABLES:
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
    values["engines"] = engines  # per-engine tables ([engines.nginx] ...), read through engine_option()
    return Resolved(values, sources, config_path, tunnels, engines)
