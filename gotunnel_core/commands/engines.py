"""`engines`, `plugins`, `render` and `validate`: what is installed, and engine configs without a daemon."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import click

from ..cli.app import CliState, emit_json, pass_state
from ..errors import UsageError
from ..hookspecs import hookimpl


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
def engines(state: CliState, as_json: bool) -> None:
    """Installed engines, whether their program is found, and its version."""
    from ..inspect.service import INSPECT_MODE

    rows = []
    state.note_ignored()
    for name, spec in sorted(state.engine_specs().items()):
        probe = spec.engine_class.probe(state.settings.values)
        rows.append({"name": name, "description": spec.description, "plugin": spec.plugin,
                     "binary": {"found": probe.found, "path": probe.path, "version": probe.version, "hint": probe.hint},
                     "inspect": dict(INSPECT_MODE)})
    if as_json:
        emit_json({"engines": rows})
        return
    for row in rows:
        binary = row["binary"]
        where = "in-process" if binary["found"] and not binary["path"] else (binary["path"] or "missing")
        click.echo(f"{row['name']:<10} {'found' if binary['found'] else 'MISSING':<8} {where} {binary['version'] or ''}".rstrip())
        if not binary["found"] and binary["hint"]:
            click.echo(f"           {binary['hint']}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
def plugins(state: CliState, as_json: bool) -> None:
    """Installed plugins, where they come from, their hooks, and any that failed to load."""
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


def engine_and_table(state: CliState, engine_name: str) -> tuple[Any, Any]:
    """The engine and the route table for the config file's tunnels (the ops use case)."""
    from ..certservice import CertService, table_options
    from ..engine import EngineContext, find_engine
    from ..loops import check_not_own_listener
    from ..models import Listen

    settings = state.settings
    if not settings.file_tunnels:
        where = settings.config_file or "no config file found"
        raise UsageError(f"nothing to render: no [[tunnels]] in the config file ({where})")
    tunnels = state.file_tunnels()
    spec = find_engine(state.engine_specs(), engine_name)
    state.engine_options()  # bad engine options fail here, naming the key
    listen = Listen(settings["bind"], settings["http_port"], settings["https_port"])
    check_not_own_listener(tunnels, listen)
    layout = state.layout.ensure()
    table = CertService(layout, settings.values).route_table(listen, tunnels, table_options(settings.values, layout.root))
    context = EngineContext(work_dir=layout.engine_dir(spec.name), settings=settings.values, hook=None)
    return spec.engine_class(context), table


def existing_engine_and_table(state: CliState, engine_name: str,
                              containers: Callable[[list[str]], Sequence[Any]] | None = None) -> tuple[Any, Any]:
    """The engine and the `ExistingTable` for the config file's tunnels under their real names
    (`hosts`, `domain_template`) and TLS (`tls`). The state directory and the local CA are not
    touched: these names are never signed by it. `containers` (sync --docker) adds tunnels: it
    gets the file's tunnel names and returns those not already taken."""
    from ..engine import EngineContext, find_engine
    from ..existing import existing_table
    from ..models import Listen

    settings = state.settings
    if not settings.file_tunnels and containers is None:
        where = settings.config_file or "no config file found"
        raise UsageError(f"nothing to render: no [[tunnels]] in the config file ({where})")
    tunnels = state.file_tunnels() if settings.file_tunnels else []
    if containers is not None:
        tunnels = [*tunnels, *containers([t.name for t in tunnels])]
    spec = find_engine(state.engine_specs(), engine_name)
    state.engine_options()
    listen = Listen(settings["bind"], settings["http_port"], settings["https_port"])
    base_dir = Path(settings.config_file).resolve().parent if settings.config_file else Path.cwd()
    table = existing_table(tunnels, listen, settings.values, base_dir)
    context = EngineContext(work_dir=state.layout.engine_dir(spec.name), settings=settings.values, hook=None)
    engine = spec.engine_class(context)
    if not engine.existing_formats:
        raise UsageError(f"engine {spec.name!r} cannot render for an existing proxy")
    return engine, table


@click.command()
@click.option("--engine", "engine_name", metavar="NAME", help="Engine to render for (default: the global --engine).")
@click.option("--out", "out_dir", metavar="DIR", help="Write the files into DIR instead of printing them.")
@click.option("--format", "fmt", metavar="FORMAT",
              help="Config format, when the engine offers several (caddy: json, caddyfile; for an existing "
                   "nginx: fragment, full); default: the first one.")
@click.option("--for", "target", type=click.Choice(["engine", "existing"]), default="engine", show_default=True,
              help="engine: the config of gotunnel's own supervised engine; existing: for a proxy you run "
                   "(real names from hosts/domain_template, tls, nothing from the local CA).")
@pass_state
def render(state: CliState, engine_name: str | None, out_dir: str | None, fmt: str | None, target: str) -> None:
    """Render the engine config for the config file's tunnels, without starting anything."""
    from ..engine import RenderedLink, write_rendered

    if target == "existing":
        engine, existing = existing_engine_and_table(state, engine_name or state.settings["engine"])
        files = engine.render_existing(existing, fmt)
    else:
        engine, table = engine_and_table(state, engine_name or state.settings["engine"])
        files = engine.render_format(table, fmt)
    if out_dir:
        for path in write_rendered(files, Path(out_dir)):
            click.echo(str(path))
        return
    for name, content in sorted(files.items()):
        if len(files) > 1:
            click.echo(f"# ---- {name}")
        if isinstance(content, RenderedLink):
            content = f"-> {content}\n"  # a link to an existing file (a key): its target, never its content
        click.echo(content, nl=not content.endswith("\n"))


@click.command()
@click.option("--engine", "engine_name", metavar="NAME", help="Engine to validate for (default: the global --engine).")
@pass_state
def validate(state: CliState, engine_name: str | None) -> None:
    """Render the config file's tunnels, then run the engine's own validator."""
    import asyncio

    engine, table = engine_and_table(state, engine_name or state.settings["engine"])
    asyncio.run(engine.validate(table))
    click.echo(f"ok: {len(table.tunnels)} tunnel(s) valid for engine {engine.name or engine_name}")


@hookimpl
def gotunnel_register_commands(cli: click.Group) -> None:
    for command in (engines, plugins, render, validate):
        cli.add_command(command)
