"""One test per hook (`test_hook_<name>`, required by test_plugins' meta-test), each through the
core's real call path: every call goes through pluggy (`call_hook`), so a `wrapper=True`
implementation wraps it and GOTUNNEL_TRACE_HOOKS traces it, and a plugin that raises is logged
and skipped while the others still run. The lifecycle hooks run in an in-process daemon manager
(builtin engine, real certificates, real listeners); `gotunnel_request` is tested with the
builtin engine (plugins/builtin_proxy/tests/test_builtin_routing.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click
import pytest

from gotunnel_core.engine import Engine, EngineSpec, collect_engines
from gotunnel_core.hookspecs import hookimpl
from gotunnel_core.plugins import make_plugin_manager
from gotunnel_core.testing import free_port


class Broken:
    """Raises from every hook it implements."""

    @hookimpl
    def gotunnel_register_engines(self, register: Any) -> None:
        raise RuntimeError("broken register_engines")

    @hookimpl
    def gotunnel_register_commands(self, cli: Any) -> None:
        raise RuntimeError("broken register_commands")

    @hookimpl
    def gotunnel_tunnel_created(self, tunnel: Any) -> None:
        raise RuntimeError("broken created")

    @hookimpl
    def gotunnel_tunnel_started(self, tunnel: Any, urls: Any) -> None:
        raise RuntimeError("broken started")

    @hookimpl
    def gotunnel_tunnel_stopped(self, tunnel: Any) -> None:
        raise RuntimeError("broken stopped")

    @hookimpl
    def gotunnel_tunnel_removed(self, tunnel: Any) -> None:
        raise RuntimeError("broken removed")


class Recorder:
    """Records each lifecycle event, and wraps every lifecycle call (`wrapper=True` lives on its own object)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.urls: list[str] = []

    @hookimpl
    def gotunnel_tunnel_created(self, tunnel: Any) -> None:
        self.events.append(("created", tunnel.name))

    @hookimpl
    def gotunnel_tunnel_started(self, tunnel: Any, urls: Any) -> None:
        self.events.append(("started", tunnel.name))
        self.urls = list(urls)

    @hookimpl
    def gotunnel_tunnel_stopped(self, tunnel: Any) -> None:
        self.events.append(("stopped", tunnel.name))

    @hookimpl
    def gotunnel_tunnel_removed(self, tunnel: Any) -> None:
        self.events.append(("removed", tunnel.name))


class Wrapper:
    def __init__(self) -> None:
        self.wrapped: list[str] = []

    def _wrap(self, name: str) -> Any:
        self.wrapped.append(name)  # before the call: the broken plugin's call raises through here
        return (yield)

    @hookimpl(wrapper=True)
    def gotunnel_tunnel_created(self, tunnel: Any) -> Any:
        return (yield from self._wrap("created"))

    @hookimpl(wrapper=True)
    def gotunnel_tunnel_started(self, tunnel: Any, urls: Any) -> Any:
        return (yield from self._wrap("started"))

    @hookimpl(wrapper=True)
    def gotunnel_tunnel_stopped(self, tunnel: Any) -> Any:
        return (yield from self._wrap("stopped"))

    @hookimpl(wrapper=True)
    def gotunnel_tunnel_removed(self, tunnel: Any) -> Any:
        return (yield from self._wrap("removed"))


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Recorder, Wrapper, list[str]]:
    """Start tunnel `web` in an in-process daemon manager, then stop it; record the hook calls."""
    from gotunnel_core.config import resolve
    from gotunnel_core.daemon.manager import TunnelManager
    from gotunnel_core.paths import state_layout

    root = tmp_path_factory.mktemp("gt")
    env = {"GOTUNNEL_STATE_DIR": str(root / "state"), "GOTUNNEL_HTTP_PORT": str(free_port()),
           "GOTUNNEL_HTTPS_PORT": str(free_port()), "GOTUNNEL_BIND": "127.0.0.1", "GOTUNNEL_MDNS": "0",
           "XDG_CONFIG_HOME": str(root / "config")}
    settings = resolve({}, env=env, cwd=root)
    recorder, wrapper = Recorder(), Wrapper()
    plugins = make_plugin_manager(load_entrypoints=False, extra_plugins=[
        ("recorder", recorder), ("broken", Broken()), ("wrapper", wrapper)])
    traced: list[str] = []
    plugins.pm.trace.root.setwriter(traced.append)
    plugins.pm.enable_tracing()
    manager = TunnelManager(state_layout(settings["state_dir"]).ensure(), settings.values, plugins)

    async def scenario() -> None:
        await manager.startup()
        try:
            await manager.start_tunnels([{"name": "web", "backends": ["http://127.0.0.1:9"]}])
            await manager.stop_tunnels(["web"])
        finally:
            await manager.shutdown()

    asyncio.run(scenario())
    return recorder, wrapper, traced


def _check(lifecycle: Any, hook: str) -> None:
    """What every lifecycle hook's test checks (each hook has its own named test below)."""
    recorder, wrapper, traced = lifecycle
    assert recorder.events.count((hook, "web")) == 1, recorder.events  # the broken plugin did not stop it
    assert wrapper.wrapped.count(hook) == 2  # once around the recorder's call, once around the broken one's
    assert any(f"gotunnel_tunnel_{hook} " in line for line in traced), "not traced through pluggy"


def test_hook_gotunnel_tunnel_created(lifecycle: Any) -> None:
    _check(lifecycle, "created")
    assert lifecycle[0].events.index(("created", "web")) < lifecycle[0].events.index(("started", "web"))


def test_hook_gotunnel_tunnel_started(lifecycle: Any) -> None:
    _check(lifecycle, "started")
    assert any(url.startswith("https://web.localhost:") for url in lifecycle[0].urls)


def test_hook_gotunnel_tunnel_stopped(lifecycle: Any) -> None:
    _check(lifecycle, "stopped")


def test_hook_gotunnel_tunnel_removed(lifecycle: Any) -> None:
    _check(lifecycle, "removed")
    assert lifecycle[0].events == [("created", "web"), ("started", "web"), ("stopped", "web"), ("removed", "web")]


def test_hook_gotunnel_register_engines(monkeypatch: pytest.MonkeyPatch) -> None:
    class Toy(Engine):
        name = "toy"

        def render(self, table: Any) -> dict[str, str]:
            return {}

        async def start(self, table: Any) -> None: ...
        async def apply(self, table: Any) -> None: ...
        async def stop(self) -> None: ...

    class Provider:
        @hookimpl
        def gotunnel_register_engines(self, register: Any) -> None:
            register(EngineSpec("toy", Toy, "a toy"))

    class Around:
        calls = 0

        @hookimpl(wrapper=True)
        def gotunnel_register_engines(self, register: Any) -> Any:
            Around.calls += 1
            return (yield)

    monkeypatch.setenv("GOTUNNEL_TRACE_HOOKS", "1")
    manager = make_plugin_manager(load_entrypoints=False, blocked=(), extra_plugins=[
        ("provider", Provider()), ("broken", Broken()), ("around", Around())])
    traced: list[str] = []
    manager.pm.trace.root.setwriter(traced.append)
    specs = collect_engines(manager.pm)
    assert specs["toy"].plugin == "provider" and specs["toy"].engine_class is Toy
    assert "builtin" in specs  # the broken plugin was skipped, not fatal
    plain = len(manager.pm.hook.gotunnel_register_engines.get_hookimpls()) - 1  # all but the wrapper
    assert Around.calls == plain >= 6  # one wrapped call per plugin: builtin, nginx, caddy, envoy, provider, broken
    assert any("gotunnel_register_engines" in line for line in traced)


def test_hook_gotunnel_register_commands(tmp_path: Path) -> None:
    from gotunnel_core.cli.app import CliState, GotunnelGroup

    class Greeter:
        @hookimpl
        def gotunnel_register_commands(self, cli: click.Group) -> None:
            @cli.command()
            def greet() -> None:
                """Say hi."""
                click.echo("hi")

            @cli.command("list")
            def impostor() -> None:
                """Tries to replace a core command."""

    state = CliState()
    state._plugins = make_plugin_manager(load_entrypoints=False, load_defaults=False,
                                         extra_plugins=[("greeter", Greeter()), ("broken", Broken())])
    group = GotunnelGroup(name="gotunnel")
    with click.Context(group, obj=state) as ctx:
        assert group.get_command(ctx, "greet") is not None  # an unknown name asks the plugins
        assert group.get_command(ctx, "list").help != "Tries to replace a core command."  # type: ignore[union-attr]
        assert "start" in group.list_commands(ctx)  # the core's commands are all there
