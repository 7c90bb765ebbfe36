"""`gotunnel dashboard`: print (and open) the URL of the daemon's dashboard and request inspector."""

from __future__ import annotations

import click

from ..cli.app import CliState, emit_json, pass_state
from ..errors import RuntimeFailure
from ..hookspecs import hookimpl


@click.command()
@click.option("--open/--no-open", "open_browser", default=True,
              help="Open it in the browser ($BROWSER, else the desktop's default); --no-open only prints it.")
@click.option("--json", "as_json", is_flag=True,
              help="Print {url, port, engine_url, dedicated_url} as JSON (implies --no-open).")
@pass_state
def dashboard(state: CliState, open_browser: bool, as_json: bool) -> None:
    """The local dashboard: tunnels, and the requests of tunnels started with --inspect.

    The URL is https://gotunnel.localhost[:https_port]/ while the engine serves (this machine only),
    else the daemon's own port on 127.0.0.1 (setting `dashboard_port`); a daemon is started if none runs.
    """
    info = (state.client(spawn=True).ping() or {}).get("dashboard")
    if not info:
        raise RuntimeFailure("the daemon serves no dashboard", hint="it is off: set dashboard = true "
                             "(GOTUNNEL_DASHBOARD=1) and restart the daemon (`gotunnel stop --all`, then start your tunnels)")
    if not info.get("url"):
        raise RuntimeFailure(f"the dashboard is not served: {info.get('error')}",
                             hint="choose a free port: dashboard_port = N (GOTUNNEL_DASHBOARD_PORT), then restart the daemon")
    url = info["url"]
    if info.get("error"):
        click.echo(f"note: the dashboard's own port is not served: {info['error']}", err=True)
    if as_json:
        emit_json({"url": url, "port": info["port"], "engine_url": info.get("engine_url"),
                   "dedicated_url": info.get("dedicated_url")})
        return
    click.echo(url)
    if open_browser:
        import webbrowser

        if not webbrowser.open(url):
            click.echo("no browser found: open the URL above yourself", err=True)


@hookimpl
def gotunnel_register_commands(cli: click.Group) -> None:
    cli.add_command(dashboard)
