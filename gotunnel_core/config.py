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
from .models import TlsPolicy, parse_bind, parse_domain_template, parse_port
from .values import (boolean, choice, email_address, from_model, https_url, integer, number, optional, optional_path,
                     optional_text, str_list, text)


def _file_str_list(raw: object) -> list[str]:
    """The config file's form of a list setting: a TOML array, never a bare string."""
    if not isinstance(raw, list):
        raise ValueError('must be a list of strings, e.g. ["a", "b"]')
    return str_list(raw)


@dataclass(frozen=True)
class Setting:
    """One configuration key: its parser, default and one-line help."""

    name: str
    parse: Callable[[object], Any]
    default: Any
    help: str
    secret: bool = False
    #: Names a program or template directory (or widens what the CA signs): honoured from a
    #: project's config file only once the user allowed the file (`gotunnel config allow`).
    sensitive: bool = False

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
    Setting("hosts_file", optional_path, None, "hosts file to manage (default: the system's)", sensitive=True),
    Setting("log_format", choice("auto", "console", "json"), "auto", "log format: auto (console on a TTY), console or json"),
    Setting("log_level", choice("debug", "info", "warning", "error"), "info", "log level"),
    Setting("debug", boolean, False, "show tracebacks for errors"),
    Setting("template_dir", optional_path, None, "directory with engine template overrides", sensitive=True),
    Setting("engine_bin", optional_path, None, "program of the selected external engine (default: found on PATH)",
            sensitive=True),
    Setting("runtime", choice("process", "docker"), None,
            "how external engines run: process (a child of the daemon) or docker (their official image); "
            "unset: each engine's option `runtime` (process)"),
    Setting("upstream_timeout", number(0.1, 86400), 60.0,
            "seconds a backend may take to its first response byte before the client gets 504 (per tunnel too)"),
    Setting("cert_validity_days", integer(1, 397), 90, "validity of tunnel certificates, days"),
    Setting("cert_renew_days", integer(1, 396), 30, "renew a tunnel certificate this many days before it expires"),
    Setting("cert_keep_days", integer(0, 3650), 7,
            "keep a removed tunnel's certificate this many days (reused if it comes back), then delete it"),
    Setting("metrics_port", integer(0, 65535), 0, "serve Prometheus metrics on 127.0.0.1:PORT (0: off)"),
    Setting("sentry_dsn", optional_text, None,
            "send unexpected daemon errors to this Sentry DSN (default: none, nothing is sent)", secret=True,
            sensitive=True),
    Setting("providers", _providers, [],
            "tunnel sources the daemon follows besides you: docker (containers by label); also sync's --docker default"),
    Setting("dashboard", boolean, True, "serve the local dashboard and inspector API (through the engine at "
            "https://gotunnel.localhost, and on 127.0.0.1:dashboard_port)"),
    Setting("dashboard_port", from_model(parse_port), 7373, "port of the dashboard (loopback only)"),
    Setting("inspect_body_limit", integer(0, 64 * 1024 * 1024), 1024 * 1024,
            "bytes of each request and response body the inspector keeps (the rest is cut and marked)"),
    Setting("inspect_max_requests", integer(1, 100000), 500, "requests the inspector keeps (a ring buffer, oldest dropped)"),
    Setting("ca_extra_suffixes", str_list, [], "extra DNS suffixes the local CA may sign (set before the CA is created)",
            sensitive=True),
    Setting("domain_template", optional(from_model(parse_domain_template)), None,
            "real names for a proxy you run (render --for existing, sync), e.g. '{name}.dev.example.com'"),
    Setting("etcd_ca", optional_path, None, "team mode: CA certificate that signed etcd's certificate (https:// etcd)"),
    Setting("etcd_cert", optional_path, None, "team mode: client certificate for etcd (etcd --client-cert-auth)"),
    Setting("etcd_key", optional_path, None, "team mode: the etcd client certificate's private key (owner-only)"),
    Setting("tls", optional(from_model(lambda raw: TlsPolicy.parse(raw).to_raw())), None,
            "default TLS of those names: 'acme', 'off' or {cert = PATH, key = PATH} (file only)"),
    Setting("acme_ca", optional(https_url), None,
            "ACME directory URL for tls = 'acme' (default: the engine's, Let's Encrypt production for Caddy)"),
    Setting("acme_ca_root", optional_path, None,
            "PEM file of the CA that serves acme_ca over HTTPS (a private ACME server: step-ca, Pebble)"),
    Setting("acme_email", optional(email_address), None, "contact email of the ACME account for tls = 'acme'"),
)
SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
#: Settings whose config-file form is a TOML array (a bare string there is a mistake).
LIST_SETTINGS = frozenset({"mdns_interface", "ca_extra_suffixes", "providers"})
#: Settings that do not shape what a daemon serves; every other one is saved with the tunnels
#: and reused when a daemon restores them (`state.TunnelStore`).
NOT_SAVED = frozenset({"state_dir", "log_format", "debug"})
#: The largest config file read (a config is a few KiB; this keeps a stray huge file harmless).
MAX_CONFIG_BYTES = 1 << 20
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
    #: Keys of a project's config file left out (programs/templates for an information command).
    ignored: list[str] = field(default_factory=list)
    #: Why the config file was skipped altogether (a lenient command and a broken file), if it was.
    skipped_file: str | None = None

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
        if not path.exists():
            raise UsageError(f"config file {explicit!r} does not exist")
        check_regular_file(path)
        return path
    local = (cwd or Path.cwd()) / "gotunnel.toml"
    if local.exists():
        check_regular_file(local)
        return local
    from .paths import user_config_dir

    user = user_config_dir(env) / "config.toml"
    if user.exists():
        check_regular_file(user)
        return user
    return None


def check_regular_file(path: Path) -> None:
    """A config file must be a regular file: a directory or a device (`/dev/null`) is a mistake."""
    if path.is_dir():
        raise UsageError(f"config file {str(path)!r} is a directory, not a TOML file")
    if not path.is_file():
        raise UsageError(f"config file {str(path)!r} is not a regular file (a device, socket or pipe)")


def read_config_bytes(path: Path) -> bytes:
    """The config file's bytes (at most MAX_CONFIG_BYTES); read errors name the file."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"config file {str(path)!r} cannot be read: {exc.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise UsageError(f"config file {str(path)!r} is larger than {MAX_CONFIG_BYTES >> 20} MiB; is it a config file?")
    return data


def parse_config_bytes(path: Path, data: bytes) -> dict[str, Any]:
    """Parse a TOML config file's bytes; every failure is one line naming the file."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"config file {str(path)!r} is not UTF-8 text (byte {exc.start}: "
                         f"{data[exc.start:exc.start + 1]!r}); TOML files are UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {str(path)!r}: {exc}") from None
    except RecursionError:
        raise UsageError(f"config file {str(path)!r} nests arrays or tables too deeply") from None


def load_config_file(path: Path) -> dict[str, Any]:
    """Parse a TOML config file; errors name the file."""
    return parse_config_bytes(path, read_config_bytes(path))


def resolve(
    cli_values: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    *,
    honour_programs: bool = True,
    lenient: bool = False,
) -> Resolved:
    """Merge the layers. `cli_values` holds only flags given on the command line (None = not given).

    A config file other than the user's own (`./gotunnel.toml`, `--config PATH`) may set keys
    that name programs or template directories only once the user allowed it (`allow.py`):
    with `honour_programs` such a key in a file not allowed is an error, without it (information
    commands) those keys are left out whatever the file. With `lenient`, a config file that
    cannot be used is skipped (`Resolved.skipped_file` says why) instead of failing the command.
    """
    env = os.environ if env is None else env
    try:
        return _resolve(cli_values, env, cwd, honour_programs, use_file=True)
    except ConfigFileError as exc:
        if not lenient:
            raise
        resolved = _resolve(cli_values, env, cwd, honour_programs, use_file=False)
        resolved.skipped_file = exc.message
        return resolved


class ConfigFileError(UsageError):
    """The config file itself is unusable (syntax, unknown key, bad value, not allowed)."""


def _resolve(cli_values: Mapping[str, Any], env: Mapping[str, str], cwd: Path | None, honour_programs: bool,
             use_file: bool) -> Resolved:
    explicit_config = cli_values.get("config") or env.get("GOTUNNEL_CONFIG") or None
    config_path: Path | None = None
    file_data: dict[str, Any] = {}
    ignored: list[str] = []
    if use_file:
        try:
            config_path = find_config_file(explicit_config, cwd, env)
            if config_path is not None:
                file_data, ignored = _load_checked(config_path, env, honour_programs)
        except ConfigFileError:
            raise
        except UsageError as exc:
            raise ConfigFileError(exc.message, exc.hint) from None

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for setting in SETTINGS:
        from_file = False
        if cli_values.get(setting.name) is not None:
            raw, source, label = cli_values[setting.name], "flag", "--" + setting.name.replace("_", "-")
        elif env.get(setting.env) not in (None, ""):
            raw, source, label = env[setting.env], "env", setting.env
        elif setting.name in file_data:
            raw, source, label = file_data[setting.name], f"file:{config_path}", f"{config_path}: key {setting.name!r}"
            from_file = True
        else:
            values[setting.name], sources[setting.name] = setting.default, "default"
            continue
        try:
            parse = _file_str_list if from_file and setting.name in LIST_SETTINGS else setting.parse
            values[setting.name] = parse(raw)
        except ValueError as exc:
            if from_file:
                raise ConfigFileError(f"config file {str(config_path)!r}: key {setting.name!r} = {raw!r}: {exc}") from None
            raise UsageError(f"invalid value {raw!r} for {label}: {exc}") from None
        sources[setting.name] = source
    _check_combinations(values, sources, config_path)

    tunnels = file_data.get("tunnels", [])
    if not isinstance(tunnels, list):
        raise ConfigFileError(f"config file {str(config_path)!r}: key 'tunnels' must be an array of tables ([[tunnels]])")
    engines = file_data.get("engines", {})
    if not isinstance(engines, dict):
        raise ConfigFileError(f"config file {str(config_path)!r}: key 'engines' must be a table")
    for name, table in engines.items():
        if not isinstance(table, dict):
            raise ConfigFileError(f"config file {str(config_path)!r}: [engines.{name}] must be a table")
    values["engines"] = engines  # per-engine tables ([engines.nginx] ...), parsed by each engine's options
    values["config_file"] = str(config_path) if config_path else None
    for key in LEGACY_ENGINE_KEYS:  # parsed (and validated) by the engines that still read them
        legacy_env = "GOTUNNEL_" + key.upper()
        if env.get(legacy_env) not in (None, ""):
            values[key] = env[legacy_env]
        elif key in file_data:
            values[key] = file_data[key]
    return Resolved(values, sources, config_path, tunnels, engines, ignored)


def _load_checked(path: Path, env: Mapping[str, str], honour_programs: bool) -> tuple[dict[str, Any], list[str]]:
    """Parse the config file, refuse unknown keys, and apply the project-file rule for programs."""
    from . import allow

    data = read_config_bytes(path)
    file_data = parse_config_bytes(path, data)
    for key in file_data:
        if key not in SETTINGS_BY_NAME and key not in FILE_TABLES and key not in LEGACY_ENGINE_KEYS:
            raise ConfigFileError(
                f"config file {str(path)!r}: unknown key {key!r}",
                hint="known keys: " + ", ".join(sorted([*SETTINGS_BY_NAME, *FILE_TABLES])),
            )
    sensitive = allow.sensitive_keys(file_data)
    if not sensitive or allow.is_user_config(path, env) or allow.is_allowed(path, data, env):
        return file_data, []
    if not honour_programs:
        return allow.without_keys(file_data, sensitive), sensitive
    raise ConfigFileError(
        f"config file {str(path)!r} sets {', '.join(sensitive)}, which name programs or template "
        "directories; gotunnel uses them from a project's config file only once you allow that file",
        hint=f"read the file, then run `gotunnel config allow {path}`",
    )


def _check_combinations(values: Mapping[str, Any], sources: Mapping[str, str], config_path: Path | None) -> None:
    """Settings that are fine alone but not together (a file's mistake is a ConfigFileError)."""

    def error(keys: tuple[str, ...]) -> type[UsageError]:
        return ConfigFileError if any(sources[k].startswith("file:") for k in keys) else UsageError

    if values["http_port"] == values["https_port"]:
        raise error(("http_port", "https_port"))(f"http_port and https_port are both {values['http_port']}: "
                         "HTTP and HTTPS need a port each (--http-port, --https-port)")
    renew, validity = values["cert_renew_days"], values["cert_validity_days"]
    if renew >= validity:
        raise error(("cert_renew_days", "cert_validity_days"))(
            f"cert_renew_days = {renew} is not less than cert_validity_days = {validity}: a certificate valid for "
            f"{validity} days would be due for renewal {renew} days before it expires, that is from the moment "
            "it is issued; pick a renewal lead shorter than the validity (the default is 30 of 90 days)")


def saved_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """What a daemon records with its tunnels: every setting that shapes serving, and the engine tables."""
    saved = {s.name: values[s.name] for s in SETTINGS if s.name not in NOT_SAVED}
    saved["engines"] = values.get("engines") or {}
    saved.update({key: values[key] for key in LEGACY_ENGINE_KEYS if key in values})
    return saved


def restore_settings(saved: Mapping[str, Any], state_dir: str) -> Resolved:
    """The settings of a daemon restoring saved tunnels: exactly the saved ones (validated again,
    as the state file is input too); a setting newer than the file gets its default."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for setting in SETTINGS:
        if setting.name in saved and setting.name not in NOT_SAVED:
            try:
                raw = saved[setting.name]
                # an unset optional setting (`runtime`, `sentry_dsn`, ...) is saved as null
                values[setting.name] = None if raw is None and setting.default is None else setting.parse(raw)
            except ValueError as exc:
                raise UsageError(f"saved daemon setting {setting.name} = {saved[setting.name]!r}: {exc}",
                                 hint="`gotunnel stop --all` forgets the saved tunnels and settings") from None
            sources[setting.name] = "saved"
        else:
            values[setting.name], sources[setting.name] = setting.default, "default"
    values["state_dir"], sources["state_dir"] = state_dir, "flag"
    values["log_format"] = "json"
    engines: dict[str, Any] = saved["engines"] if isinstance(saved.get("engines"), dict) else {}
    values["engines"] = engines
    values["config_file"] = None
    # Legacy top-level engine keys stay raw, as `resolve` passes them (each engine parses its own).
    values.update({key: saved[key] for key in LEGACY_ENGINE_KEYS if key in saved})
    return Resolved(values, sources, None, [], engines)


def check_file_tunnel(raw: object) -> None:
    """What a `[[tunnels]]` table must spell as TOML arrays (the API also takes one bare value)."""
    if isinstance(raw, Mapping) and "backends" in raw and not isinstance(raw["backends"], list):
        raise ValidationError("backends", raw["backends"],
                              'must be a list, e.g. backends = ["http://127.0.0.1:3000"]')
