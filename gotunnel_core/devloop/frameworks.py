"""Telling a dev server which port to use: `PORT`/`HOST` for every command, plus the framework's own
flag where one is known (many servers ignore `PORT`).

The framework is read from the command itself (`vite`, `next dev`, `python manage.py runserver`,
`uvicorn app:app`, `bin/rails server`, ...) or, for `npm run X` / `pnpm X` / `yarn X` / `bun run X`,
from the package.json script it runs (the last command of a `a && b` script, which is where the
package manager appends extra arguments). npm passes extra arguments to a script only after `--`.
A port the command already sets (`--port 3000`, `-p 3000`, `--bind host:3000`, a runserver
address) is kept, and is the port `run` waits for.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

#: Prefixes that run the next word as the command (`npx vite`, `poetry run uvicorn`, `python -m flask`).
_RUNNERS: tuple[tuple[str, ...], ...] = (
    ("npx",), ("bunx",), ("pnpm", "exec"), ("pnpm", "dlx"), ("yarn", "exec"), ("npm", "exec"),
    ("uv", "run"), ("poetry", "run"), ("pipenv", "run"), ("pdm", "run"), ("hatch", "run"), ("bundle", "exec"),
)
_PACKAGE_MANAGERS = ("npm", "pnpm", "yarn", "bun")
#: pnpm/yarn/bun words that are their own commands, not scripts (`pnpm install`, `yarn add`).
_PM_BUILTINS = frozenset({"install", "i", "add", "remove", "rm", "up", "update", "upgrade", "exec", "dlx", "create",
                          "init", "link", "unlink", "outdated", "audit", "publish", "pack", "why", "list", "ls",
                          "info", "config", "x", "build"})
_SHELL_OPERATORS = frozenset({"&&", "||", ";", "|", "&"})
_ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Framework:
    """A dev server gotunnel knows how to put on a port."""

    name: str
    #: Extra arguments that make it listen on the port (appended to the command).
    flags: Callable[[int], list[str]]
    #: The port the command already sets, if it does (then nothing is added).
    own_port: Callable[[Sequence[str]], int | None]
    #: The one-line fix when it refuses a Host it does not know (see `hostcheck`).
    fix: str = ""


@dataclass
class Prepared:
    """The command to run and what `run` tells the user about it."""

    argv: list[str]
    env: dict[str, str]
    port: int
    framework: str | None = None
    notes: list[str] = field(default_factory=list)


def _flag_value(args: Sequence[str], *names: str) -> str | None:
    """The value of `--name V`, `--name=V` or `-pV` (for a one-letter `-p`) in `args`."""
    for index, arg in enumerate(args):
        for name in names:
            if arg == name and index + 1 < len(args):
                return args[index + 1]
            if arg.startswith(name + "="):
                return arg[len(name) + 1:]
            if len(name) == 2 and arg.startswith(name) and arg[2:].isdigit():
                return arg[2:]
    return None


def _port_of(value: str | None) -> int | None:
    """A port from `3000`, `127.0.0.1:3000`, `[::1]:3000` or `0.0.0.0:3000`."""
    if value is None:
        return None
    tail = value.rpartition(":")[2]
    return int(tail) if tail.isdigit() and 0 < int(tail) < 65536 else None


def _flag_port(*names: str) -> Callable[[Sequence[str]], int | None]:
    return lambda args: _port_of(_flag_value(args, *names))


def _runserver_port(args: Sequence[str]) -> int | None:
    """Django's `runserver [addrport]`: the first positional argument after `runserver`."""
    rest = list(args)[list(args).index("runserver") + 1:] if "runserver" in args else []
    positional = [a for a in rest if not a.startswith("-")]
    return _port_of(positional[0]) if positional else None


VITE_FIX = "in vite.config.*: server: { allowedHosts: ['.localhost', '.local'] }"
DJANGO_FIX = "in settings.py: ALLOWED_HOSTS = ['.localhost', '.local', '127.0.0.1']"
RAILS_FIX = "in config/environments/development.rb: config.hosts << '.localhost' << '.local'"

FRAMEWORKS: dict[str, Framework] = {
    "vite": Framework("Vite", lambda p: ["--port", str(p), "--strictPort"], _flag_port("--port"), VITE_FIX),
    # Astro has no --strictPort: if the port were taken it would move, and port discovery finds it.
    "astro": Framework("Astro", lambda p: ["--port", str(p)], _flag_port("--port"),
                       "in astro.config.*: vite: { server: { allowedHosts: ['.localhost', '.local'] } }"),
    "next": Framework("Next.js", lambda p: ["-p", str(p)], _flag_port("-p", "--port")),
    "django": Framework("Django", lambda p: [f"127.0.0.1:{p}"], _runserver_port, DJANGO_FIX),
    "uvicorn": Framework("uvicorn", lambda p: ["--port", str(p)], _flag_port("--port")),
    "flask": Framework("Flask", lambda p: ["--port", str(p)], _flag_port("--port", "-p")),
    "gunicorn": Framework("gunicorn", lambda p: ["--bind", f"127.0.0.1:{p}"], _flag_port("--bind", "-b")),
    "rails": Framework("Rails", lambda p: ["-p", str(p)], _flag_port("-p", "--port"), RAILS_FIX),
}


def _strip_runners(words: list[str]) -> list[str]:
    """`npx vite` -> `vite`; `python -m flask run` -> `flask run`; `FOO=1 cross-env X=2 vite` -> `vite`."""
    while words:
        if _ENV_ASSIGNMENT.match(words[0]):
            words = words[1:]
            continue
        base = os.path.basename(words[0])
        if base in ("cross-env", "env", "dotenv"):
            words = words[1:]
            continue
        if re.fullmatch(r"python[0-9.]*", base) and len(words) > 2 and words[1] == "-m":
            return [words[2], *words[3:]]
        for runner in _RUNNERS:
            if tuple(os.path.basename(w) for w in words[:len(runner)]) == runner and len(words) > len(runner):
                words = words[len(runner):]
                break
        else:
            return words
    return words


def detect(words: Sequence[str]) -> str | None:
    """The framework key of a (runner-stripped) command, or None."""
    words = _strip_runners(list(words))
    if not words:
        return None
    tool = os.path.basename(words[0])
    sub = words[1] if len(words) > 1 else ""
    if re.fullmatch(r"python[0-9.]*", tool) and sub.endswith("manage.py") and "runserver" in words:
        return "django"
    if tool == "django-admin" and "runserver" in words:
        return "django"
    if tool == "vite" and (sub in ("", "dev", "serve", "preview") or sub.startswith("-")):
        return "vite"
    if tool == "astro" and sub in ("dev", "preview"):
        return "astro"
    if tool == "next" and sub in ("dev", "start"):
        return "next"
    if tool == "flask" and sub == "run":
        return "flask"
    if tool in ("uvicorn", "gunicorn"):
        return tool
    if tool == "rails" and sub in ("server", "s"):
        return "rails"
    return None


def _last_command(script: str) -> list[str]:
    """The last command of a package.json script (`a && b` -> `b`): where appended arguments go."""
    try:
        words = shlex.split(script, posix=True)
    except ValueError:
        return []
    last: list[str] = []
    for word in words:
        if word in _SHELL_OPERATORS:
            last = []
        else:
            last.append(word)
    return last


def npm_script(argv: Sequence[str], cwd: Path) -> tuple[str, str, int] | None:
    """(package manager, script text, index after the script name) for `npm run dev`, `pnpm dev`,
    `yarn dev`, `bun run dev`, `npm start`; None for any other command."""
    manager = os.path.basename(argv[0]) if argv else ""
    if manager not in _PACKAGE_MANAGERS or len(argv) < 2:
        return None
    if manager == "npm" and argv[1] in ("start", "test"):
        name, after = argv[1], 2
    elif argv[1] in ("run", "run-script"):
        if len(argv) < 3:
            return None
        name, after = argv[2], 3
    elif manager != "npm" and argv[1] not in _PM_BUILTINS and not argv[1].startswith("-"):
        name, after = argv[1], 2
    else:
        return None
    try:
        scripts = json.loads((cwd / "package.json").read_text(encoding="utf-8")).get("scripts") or {}
    except (OSError, ValueError, AttributeError):
        return None
    script = scripts.get(name) if isinstance(scripts, dict) else None
    return (manager, script, after) if isinstance(script, str) else None


def prepare(argv: Sequence[str], port: int, cwd: Path) -> Prepared:
    """The command with the framework's port flag added (when known and not already set) and the
    environment `PORT`/`HOST` for it."""
    argv = list(argv)
    env = {"PORT": str(port), "HOST": "127.0.0.1"}
    script = npm_script(argv, cwd)
    words = _last_command(script[1]) if script is not None else argv
    extra = argv[script[2]:] if script is not None else []  # what the package manager appends
    key = detect(words)
    prepared = Prepared(argv, env, port)
    if key is None:
        prepared.notes.append(f"no known framework in the command; it gets PORT={port} and HOST=127.0.0.1")
        return prepared
    framework = FRAMEWORKS[key]
    prepared.framework = framework.name
    own = framework.own_port([*words, *[a for a in extra if a != "--"]])
    if own is not None:
        prepared.port = own
        prepared.env["PORT"] = str(own)
        prepared.notes.append(f"{framework.name}: the command sets port {own} itself")
        return prepared
    flags = framework.flags(port)
    if script is not None and script[0] == "npm" and "--" not in extra:
        flags = ["--", *flags]  # npm hands a script only the arguments after `--`
    prepared.argv = argv + flags
    prepared.notes.append(f"{framework.name}: added {' '.join(flags)}")
    return prepared


def framework_by_name(name: str) -> Framework | None:
    """A framework by its display name (`Vite`), for the fix hints of `hostcheck`."""
    return next((f for f in FRAMEWORKS.values() if f.name == name), None)
