"""`gotunnel sync`: keep a proxy you run in step with the config file (see `gotunnel_core.sync`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import click

from ..cli.app import CliState, pass_state
from ..errors import GotunnelError, UsageError
from ..hookspecs import hookimpl

if TYPE_CHECKING:
    from ..docker.address import ContainerView
    from ..models import Tunnel
    from ..sync import SyncTarget


def _sync_step(state: CliState, engine_name: str | None, target: "SyncTarget",
               containers: Callable[[], Iterable["ContainerView"]] | None = None) -> list[Path]:
    """One render + sync from a fresh read of the config file (plus the labelled containers
    `containers` returns, with --docker); returns the files it depends on."""
    from ..sync import config_sources, sync_once
    from .engines import existing_engine_and_table

    def container_tunnels(file_names: list[str]) -> Sequence["Tunnel"]:
        from ..docker.routes import container_routes

        assert containers is not None
        routes = container_routes(containers(), file_names)
        for warning in routes.warnings:
            click.echo(f"warning: {warning}", err=True)
        return routes.tunnels

    fresh = CliState(flags=dict(state.flags))  # re-resolves: the config file may have changed
    engine, table = existing_engine_and_table(fresh, engine_name or fresh.settings["engine"],
                                              container_tunnels if containers is not None else None)
    files = engine.render_existing(table, target.fmt)
    result = sync_once(engine, files, target)
    where = ", ".join(str(p) for p in result.files)
    if result.changed:
        how = ("--reload-cmd" if target.reload_cmd else
               f"{engine.name} reads the files" if engine.existing_applies_on_write else f"{engine.name} reload")
        click.echo(f"synced {where}: validated, applied ({how})")
    else:
        click.echo(f"unchanged {where}")
    sys.stdout.flush()
    tls_files: Iterable[str] = (p for site in table.sites for p in (site.tls.cert, site.tls.key))
    return config_sources(fresh.settings.config_file, tls_files)


def _docker_once() -> list["ContainerView"]:
    """The labelled running containers, for a one-shot sync; Docker unreachable: one line, exit 2."""
    from ..docker.client import connect, labelled_containers

    try:
        client = connect()
    except GotunnelError as exc:
        fix = f"{exc.hint}, or sync without --docker" if exc.hint else "or sync without --docker"
        raise UsageError(f"--docker: {exc.message}; {fix}") from None
    try:
        return list(labelled_containers(client).values())
    finally:
        client.close()


@click.command()
@click.option("--engine", "engine_name", metavar="NAME", help="Engine of the proxy (default: the global --engine).")
@click.option("--out", "out", metavar="PATH", required=True,
              help="File to write (e.g. /etc/nginx/conf.d/gotunnel.conf); a directory for several files.")
@click.option("--main-config", metavar="PATH", help="The proxy's whole config to validate with (e.g. /etc/nginx/nginx.conf).")
@click.option("--reload-cmd", metavar="CMD", help="Command that reloads the proxy instead of its usual means "
              "(split like a shell would, not run by one).")
@click.option("--format", "fmt", metavar="FORMAT", help="Output format (nginx: fragment, full); default: the first.")
@click.option("--docker/--no-docker", "docker", default=None,
              help="Add the tunnels of running containers labelled gotunnel.name (as the daemon's Docker provider "
                   "does; default: on when the providers setting has docker). DOCKER_HOST picks the engine.")
@click.option("--watch", is_flag=True, help="Keep running: sync again whenever the config file or a certificate "
              "changes, or (with --docker) a container starts, stops or is renamed.")
@click.option("--interval", type=click.FloatRange(0.05, 60), default=0.2, show_default=True,
              help="With --watch: seconds between checks of the sources.")
@pass_state
def sync(state: CliState, engine_name: str | None, out: str, main_config: str | None, reload_cmd: str | None,
         fmt: str | None, docker: bool | None, watch: bool, interval: float) -> None:
    """Render for a proxy you run, write it atomically, validate with the proxy, reload it.

    A configuration the proxy refuses puts the previous file back; the proxy is not reloaded.
    With --docker, labelled containers are routes too (a docker-gen/nginx-proxy replacement)."""
    from ..sync import SyncTarget, config_sources
    from ..sync import watch as watch_sources

    main = Path(main_config).resolve() if main_config else None
    if main is not None and not main.is_file():
        raise UsageError(f"--main-config {main_config!r} does not exist")
    target = SyncTarget(Path(out).resolve(), main, reload_cmd, fmt)
    if docker is None:
        docker = "docker" in state.settings["providers"]
    if not watch:
        _sync_step(state, engine_name, target, _docker_once if docker else None)
        return

    def say(line: str) -> None:
        click.echo(line, err=True)
        sys.stderr.flush()

    def report(exc: GotunnelError) -> None:
        say(f"error: {exc.message}")
        if exc.hint:
            say(f"hint: {exc.hint}")

    follower = None
    if docker:
        from ..docker.follow import ContainerFollower

        follower = ContainerFollower(say).start()
        follower.first_attempt.wait(timeout=30)  # connect() itself gives up after 10 s
    try:
        watch_sources(lambda: _sync_step(state, engine_name, target, follower.views if follower else None),
                      config_sources(state.settings.config_file), report, interval,
                      marker=(lambda: follower.generation) if follower else None)
    except KeyboardInterrupt:
        pass
    finally:
        if follower is not None:
            follower.close()


@hookimpl
def gotunnel_register_commands(cli: click.Group) -> None:
    cli.add_command(sync)
