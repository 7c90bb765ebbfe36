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


def test_write_rendered_writes_links_and_never_writes_through_one(tmp_path: Any) -> None:
    """A `RenderedLink` becomes a symbolic link (a key is never copied); a second render replaces
    links and files in place and never writes into the file an old link names."""
    import os

    import pytest

    from gotunnel_core.engine import RenderedLink, write_rendered
    from gotunnel_core.errors import RuntimeFailure

    secret = tmp_path / "key.pem"
    secret.write_text("KEY")
    out = tmp_path / "out"
    write_rendered({"certs/a.pem.key": RenderedLink(str(secret)), "conf": "one"}, out)
    assert os.readlink(out / "certs" / "a.pem.key") == str(secret)
    write_rendered({"certs/a.pem.key": "plain text now", "conf": RenderedLink(str(secret))}, out)
    assert secret.read_text() == "KEY"  # the old link was replaced, not written through
    assert not (out / "certs" / "a.pem.key").is_symlink() and (out / "certs" / "a.pem.key").read_text() == "plain text now"
    assert os.readlink(out / "conf") == str(secret)
    for bad in ("../x", "certs/../../x", "/etc/x", "certs/.."):
        with pytest.raises(RuntimeFailure):
            write_rendered({bad: "x"}, out)
    with pytest.raises(ValueError):
        RenderedLink("relative/key.pem")


def test_template_environments_are_kept_until_an_override_changes(tmp_path: Any) -> None:
    """A route change reuses the compiled template; a new or edited override is used at once."""
    import os

    from gotunnel_core.templating import render_template, template_environment

    packaged, overrides = tmp_path / "packaged", tmp_path / "overrides"
    packaged.mkdir()
    overrides.mkdir()
    (packaged / "main.j2").write_text("packaged {{ x | q }}")
    filters = {"q": lambda v: f"<{v}>"}
    first = template_environment(packaged, str(overrides), filters)
    assert template_environment(packaged, str(overrides), filters) is first
    assert render_template(first, "main.j2", {"x": 1}, engine="e", quote_errors=()) == "packaged <1>"
    (overrides / "main.j2").write_text('{% extends "default:main.j2" %}')  # a new override file
    second = template_environment(packaged, str(overrides), filters)
    assert second is not first
    (overrides / "main.j2").write_text("override {{ x | q }}")
    os.utime(overrides / "main.j2", ns=(1, 1))  # an edit, whatever the clock's resolution
    third = template_environment(packaged, str(overrides), filters)
    assert render_template(third, "main.j2", {"x": 2}, engine="e", quote_errors=()) == "override <2>"
