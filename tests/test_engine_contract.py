"""The daemon's side of the engine contract: a route change is one `apply` (which validates it);
the manager never calls `validate` first. Checked with a real in-process daemon manager and a
counting engine registered through `gotunnel_register_engines`."""

from __future__ import annotations

import asyncio
from typing import Any

from gotunnel_core.engine import Engine, EngineSpec
from gotunnel_core.hookspecs import hookimpl
from gotunnel_core.plugins import make_plugin_manager
from gotunnel_core.testing import free_port


class Counting(Engine):
    name = "counting"
    calls: list[str] = []

    def render(self, table: Any) -> dict[str, str]:
        return {}

    async def validate(self, table: Any) -> None:
        Counting.calls.append("validate")

    async def start(self, table: Any) -> None:
        Counting.calls.append("start")

    async def apply(self, table: Any) -> None:
        Counting.calls.append(f"apply:{len(table.tunnels)}")

    async def stop(self) -> None:
        Counting.calls.append("stop")


class Provider:
    @hookimpl
    def gotunnel_register_engines(self, register: Any) -> None:
        register(EngineSpec("counting", Counting))


def test_a_route_change_is_one_apply_and_no_separate_validate(tmp_path: Any) -> None:
    from gotunnel_core.config import resolve
    from gotunnel_core.daemon.manager import TunnelManager
    from gotunnel_core.paths import state_layout

    env = {"GOTUNNEL_STATE_DIR": str(tmp_path / "state"), "GOTUNNEL_ENGINE": "counting", "GOTUNNEL_MDNS": "0",
           "GOTUNNEL_HTTP_PORT": str(free_port()), "GOTUNNEL_HTTPS_PORT": str(free_port()),
           "GOTUNNEL_BIND": "127.0.0.1", "XDG_CONFIG_HOME": str(tmp_path / "config")}
    settings = resolve({}, env=env, cwd=tmp_path)
    plugins = make_plugin_manager(load_entrypoints=False, load_defaults=False, extra_plugins=[("provider", Provider())])
    manager = TunnelManager(state_layout(settings["state_dir"]).ensure(), settings.values, plugins)
    Counting.calls = []

    async def scenario() -> None:
        await manager.startup()
        await manager.start_tunnels([{"name": "web", "backends": ["http://127.0.0.1:9"]}])
        await manager.stop_tunnels(["web"])
        await manager.shutdown()

    asyncio.run(scenario())
    assert Counting.calls == ["start", "apply:1", "apply:0", "stop"]
