"""Engine options: declared by each engine class with a parser, a default and help (like tox's
`ConfigSet.add_config`), validated like core settings, and shown by `gotunnel config show`.

An option `drain_time` of engine `envoy` is set, highest first, by:

- `--engine-bin` (only the option `bin`, only for the selected engine);
- the environment, `GOTUNNEL_ENVOY_DRAIN_TIME`;
- the config file, `[engines.envoy] drain_time = 5`;
- for options declared `legacy=True`, the old top-level key / `GOTUNNEL_<OPTION>` variable
  (`workers = 2`, `GOTUNNEL_WORKERS`; see `config.LEGACY_ENGINE_KEYS`);
- the declared default.

A bad value fails with one line naming the key (or variable), the value and the reason, exit 2;
an unknown key in `[engines.<engine>]` fails naming the key and listing the engine's options.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping

from .errors import UsageError, ValidationError
from .values import Parser


@dataclass(frozen=True)
class EngineOption:
    """One option of an engine: its name, parser (see `gotunnel_core.values`), default and help."""

    name: str
    parse: Parser
    default: Any
    help: str
    #: Also read the top-level setting of the same name, below the others: an older key now an
    #: engine option (`workers`, `via`, ...), or a setting for every engine (`runtime`).
    legacy: bool = False


def option_env(engine: str, option: str) -> str:
    """`GOTUNNEL_<ENGINE>_<OPTION>`, with anything but letters and digits written as `_`."""
    return re.sub(r"[^A-Z0-9]", "_", f"GOTUNNEL_{engine}_{option}".upper())


@dataclass(frozen=True)
class OptionValue:
    """An option's effective value and where it came from (`default`, `env`, `file:<path>`, ...)."""

    value: Any
    source: str
    env: str


class EngineOptions(Mapping[str, Any]):
    """The effective options of one engine: a read-only mapping name -> value, plus sources."""

    def __init__(self, engine: str, values: Mapping[str, OptionValue]) -> None:
        self.engine = engine
        self.entries = dict(values)

    def __getitem__(self, name: str) -> Any:
        try:
            return self.entries[name].value
        except KeyError:
            raise KeyError(f"engine {self.engine!r} declares no option {name!r}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def as_json(self) -> dict[str, dict[str, Any]]:
        """{name: {value, source, env}} for `config show --json`."""
        return {name: {"value": v.value, "source": v.source, "env": v.env} for name, v in self.entries.items()}


def resolve_options(engine: str, declared: Iterable[EngineOption], settings: Mapping[str, Any],
                    env: Mapping[str, str] | None = None) -> EngineOptions:
    """Parse and check the options of `engine` from `settings` (the resolved settings: `engines`
    tables, `engine_bin`, legacy top-level keys) and the environment."""
    env = os.environ if env is None else env
    options = {option.name: option for option in declared}
    table = (settings.get("engines") or {}).get(engine) or {}
    where = settings.get("config_file")
    file_label = f"config file {where!r}" if where else "the config file"
    if not isinstance(table, Mapping):
        raise UsageError(f"{file_label}: [engines.{engine}] must be a table")
    unknown = sorted(set(table) - set(options))
    if unknown:
        raise UsageError(f"{file_label}: [engines.{engine}] has no option {unknown[0]!r}",
                         hint=f"options of engine {engine!r}: {', '.join(sorted(options)) or 'none'}")
    values: dict[str, OptionValue] = {}
    for name, option in options.items():
        variable = option_env(engine, name)
        if name == "bin" and settings.get("engine") == engine and settings.get("engine_bin"):
            raw, source, label = settings["engine_bin"], "flag", "--engine-bin"
        elif env.get(variable) not in (None, ""):
            raw, source, label = env[variable], "env", variable
        elif name in table:
            raw, source, label = table[name], f"file:{where}" if where else "file", f"[engines.{engine}] {name}"
        elif option.legacy and settings.get(name) is not None:
            raw, source, label = settings[name], "setting", f"{name} (GOTUNNEL_{name.upper()} or top-level key)"
        else:
            values[name] = OptionValue(option.default, "default", variable)
            continue
        try:
            value = option.parse(raw)
        except ValueError as exc:
            error = ValidationError(label, raw, str(exc))
            if source.startswith("file"):
                error.message = f"{file_label}: {error.message}"
            raise error from None
        values[name] = OptionValue(value, source, variable)
    return EngineOptions(engine, values)


__all__ = ["EngineOption", "EngineOptions", "OptionValue", "option_env", "resolve_options"]
