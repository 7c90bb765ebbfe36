"""Jinja2 for engines that render their configuration from templates (nginx, HAProxy, third-party ones).

Templates are found through a `ChoiceLoader`: the user's `template_dir` first, then the
templates packaged with the engine, which are also reachable as `default:NAME` so an override
can `{% extends "default:haproxy.cfg.j2" %}`. `StrictUndefined` makes a typo in a template an
error, and autoescape is off (a proxy config is not HTML): every value from the route table goes
through one of the engine's own quoting filters, which raise on a value they cannot write.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Callable, Mapping

from .engine import EngineValidationError
from .errors import UsageError


def template_environment(packaged: Path, template_dir: str | None, filters: Mapping[str, Callable[..., str]]) -> Any:
    """A Jinja2 environment over `template_dir` (optional, the user's overrides) and the engine's
    `packaged` templates, with the engine's quoting `filters`. An environment is kept while the
    files in `template_dir` stay the same, so a route change does not compile the template again
    (a compile costs as much as the render); adding or editing an override takes effect at once."""
    if template_dir and not os.path.isdir(template_dir):
        raise UsageError(f"template_dir {template_dir!r} is not a directory")
    return _environment(str(packaged), template_dir or None, _stamp(template_dir), tuple(sorted(filters.items())))


def _stamp(template_dir: str | None) -> tuple[tuple[str, int], ...]:
    """The override files and their modification times (what invalidates a kept environment)."""
    if not template_dir:
        return ()
    found = []
    for root, _, names in os.walk(template_dir):
        for name in names:
            path = os.path.join(root, name)
            try:
                found.append((path, os.stat(path).st_mtime_ns))
            except OSError:
                continue
    return tuple(sorted(found))


@functools.lru_cache(maxsize=32)
def _environment(packaged: str, template_dir: str | None, stamp: tuple[tuple[str, int], ...],
                 filters: tuple[tuple[str, Callable[..., str]], ...]) -> Any:
    import jinja2

    default = jinja2.FileSystemLoader(packaged)
    loaders: list[Any] = [jinja2.FileSystemLoader(template_dir)] if template_dir else []
    loaders += [jinja2.PrefixLoader({"default": default}, delimiter=":"), default]
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=False,
        lstrip_blocks=False,
    )
    env.filters.update(dict(filters))
    return env


def render_template(env: Any, name: str, context: Mapping[str, Any], *, engine: str,
                    quote_errors: tuple[type[Exception], ...]) -> str:
    """Render template `name`; a value a quoting filter refuses (one of `quote_errors`) or an error
    in a user's template becomes `EngineValidationError` naming the engine (exit 2)."""
    import jinja2

    try:
        text: str = env.get_template(name).render(context)
    except quote_errors as exc:
        raise EngineValidationError(f"{engine}: {exc}") from None
    except jinja2.TemplateError as exc:
        lineno = getattr(exc, "lineno", None)
        where = f" ({getattr(exc, 'filename', None)}:{lineno})" if lineno else ""
        raise EngineValidationError(f"{engine} template error{where}: {exc}") from None
    return text


__all__ = ["render_template", "template_environment"]
