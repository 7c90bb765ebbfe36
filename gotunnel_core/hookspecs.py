"""pluggy hook specifications for gotunnel plugins.

The set is deliberately small: engines are classes behind `gotunnel_core.engine.Engine`, and
the hooks only announce them, add CLI commands, observe the tunnel lifecycle, and let a plugin
inspect or answer requests on the builtin engine. An implementation may accept fewer arguments
than its spec, so specs can grow without breaking plugins.

Every call goes through pluggy, so `wrapper=True` implementations wrap it and
GOTUNNEL_TRACE_HOOKS traces it. The registration and lifecycle hooks are called once per plugin
(`gotunnel_core.plugins.call_hook`): an implementation that raises is logged and skipped, and the
other plugins still run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import pluggy

if TYPE_CHECKING:
    import click

    from .engine import EngineSpec
    from .http import HookRequest, HookResponse
    from .models import Tunnel

PROJECT = "gotunnel"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def gotunnel_register_engines(register: "Callable[[EngineSpec], None]") -> None:
    """Announce proxy engines.

    Called once when the engine registry is built (by `start`, `render`, `validate`, `engines`
    and the daemon). Call `register(EngineSpec(...))` for each engine the plugin provides; two
    engines with the same name are refused with an error naming both plugins. The engine class
    declares its options and capabilities itself (`gotunnel_core.engine.Engine`).

    :param register: callback that adds one engine spec to the registry.
    :return: nothing.
    """


@hookspec
def gotunnel_register_commands(cli: "click.Group") -> None:
    """Add CLI commands.

    Called when the CLI needs plugin commands: for a command name the core does not know, and
    by `gotunnel plugins`. Add commands with `cli.add_command(...)`; a name the core already
    uses is not replaced.

    :param cli: the top-level `gotunnel` click group.
    :return: nothing.
    """


@hookspec
def gotunnel_tunnel_created(tunnel: "Tunnel") -> None:
    """A tunnel was added to (or replaced in) the daemon's desired state.

    Called in the daemon after the tunnel was validated and persisted, before the engine serves
    it. Exceptions are logged and ignored.

    :param tunnel: the validated tunnel.
    :return: nothing.
    """


@hookspec
def gotunnel_tunnel_started(tunnel: "Tunnel", urls: "list[str]") -> None:
    """The engine now serves the tunnel.

    Called in the daemon after the engine applied a route table that contains the tunnel
    (also for tunnels restored at daemon start). Exceptions are logged and ignored.

    :param tunnel: the tunnel now served.
    :param urls: every URL it answers on, e.g. `https://myapp.localhost:8443`.
    :return: nothing.
    """


@hookspec
def gotunnel_tunnel_stopped(tunnel: "Tunnel") -> None:
    """The engine no longer serves the tunnel (it was stopped, or the daemon is shutting down).

    Called in the daemon after the engine applied a route table without it. A tunnel stopped
    by daemon shutdown stays in the desired state and is restored at the next daemon start.

    :param tunnel: the tunnel no longer served.
    :return: nothing.
    """


@hookspec
def gotunnel_tunnel_removed(tunnel: "Tunnel") -> None:
    """The tunnel was deleted from the desired state (`gotunnel stop NAME` or `stop --all`).

    Called in the daemon after `gotunnel_tunnel_stopped`, once the state file no longer holds it.

    :param tunnel: the removed tunnel.
    :return: nothing.
    """


@hookspec(firstresult=True)
def gotunnel_request(request: "HookRequest") -> "HookResponse | None":
    """Inspect, modify or answer a request on the builtin engine, before it is proxied.

    Called by the builtin engine for every request once its head is parsed, only when at least
    one plugin implements this hook (otherwise the engine skips it entirely: no cost). The
    plugin may change `request.headers` and `request.path` in place. The first non-None result
    wins and is sent to the client instead of proxying. Runs on the event loop: do not block.

    :param request: the parsed request (method, path, headers, tunnel name, client address).
    :return: a `HookResponse` to answer the request directly, or None to let it through.
    """
