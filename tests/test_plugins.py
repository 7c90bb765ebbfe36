"""Plugin manager: explicit defaults, entry points, broken plugins skipped, blocking, misspelled hooks,
and a real third-party plugin installed from a throwaway package."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator

import pluggy
import pytest

from gotunnel_core.testing import Gotunnel
from gotunnel_core import hookspecs
from gotunnel_core.engine import Engine, EngineSpec, collect_engines, find_engine
from gotunnel_core.errors import RuntimeFailure, UsageError
from gotunnel_core.hookspecs import hookimpl
from gotunnel_core.plugins import make_plugin_manager


def test_every_hook_is_prefixed_typed_and_documented() -> None:
    names = [n for n in dir(hookspecs) if n.startswith("gotunnel_")]
    assert names, "no hooks found"
    for name in names:
        fn = getattr(hookspecs, name)
        assert fn.__doc__ and ":return:" in fn.__doc__, name
        assert "return" in fn.__annotations__, name


def test_builtin_engine_is_registered_explicitly() -> None:
    manager = make_plugin_manager(load_entrypoints=False, blocked=())
    specs = collect_engines(manager.pm)
    assert "builtin" in specs
    assert any(r.name == "builtin" and r.source == "default" for r in manager.records)


def test_disable_env_blocks_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOTUNNEL_DISABLE_PLUGINS", "builtin")
    manager = make_plugin_manager(load_entrypoints=True)
    assert "builtin" not in collect_engines(manager.pm)
    assert any(r.name == "builtin" and r.status == "blocked" for r in manager.records)


def test_misspelled_hook_is_caught() -> None:
    class Typo:
        @hookimpl
        def gotunnel_tunnel_startd(self, tunnel: Any) -> None:  # misspelled on purpose
            pass

    with pytest.raises(pluggy.PluginValidationError):
        make_plugin_manager(load_entrypoints=False, extra_plugins=[("typo", Typo())])


def test_duplicate_engine_names_both_plugins() -> None:
    class Fake(Engine):
        name = "builtin"

        def render(self, table: Any) -> dict[str, str]:
            return {}

        async def start(self, table: Any) -> None: ...
        async def apply(self, table: Any) -> None: ...
        async def stop(self) -> None: ...

    class Clash:
        @hookimpl
        def gotunnel_register_engines(self, register: Any) -> None:
            register(EngineSpec("builtin", Fake, "impostor"))

    manager = make_plugin_manager(load_entrypoints=False, blocked=(), extra_plugins=[("clash", Clash())])
    with pytest.raises(RuntimeFailure, match="'builtin' is registered by both"):
        collect_engines(manager.pm)


def test_unknown_engine_lists_installed() -> None:
    manager = make_plugin_manager(load_entrypoints=False, blocked=())
    installed = r"builtin(, caddy)?(, envoy)?(, nginx)?"
    with pytest.raises(UsageError, match=rf"unknown engine 'x'; installed: {installed} \(is gotunnel-x installed\?\)"):
        find_engine(collect_engines(manager.pm), "x")


HELLO_PLUGIN = '''
"""A third-party gotunnel plugin used by the tests: a CLI command and lifecycle hooks."""
import json, os
import click
from gotunnel_core.hookspecs import hookimpl


def _record(event, tunnel, **extra):
    path = os.environ.get("GOTUNNEL_HELLO_LOG")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"event": event, "name": tunnel.name, **extra}) + "\\n")


@hookimpl
def gotunnel_register_commands(cli):
    @cli.command()
    @click.argument("who", default="world")
    def hello(who):
        """Say hello (from a plugin)."""
        click.echo(f"hello, {who}")


@hookimpl
def gotunnel_tunnel_created(tunnel):
    _record("created", tunnel)


@hookimpl
def gotunnel_tunnel_started(tunnel, urls):
    _record("started", tunnel, urls=urls)


@hookimpl
def gotunnel_tunnel_stopped(tunnel):
    _record("stopped", tunnel)


@hookimpl
def gotunnel_tunnel_removed(tunnel):
    _record("removed", tunnel)
'''


def _package(root: Path, dist: str, module: str, source: str) -> Path:
    pkg = root / dist
    pkg.mkdir()
    (pkg / "pyproject.toml").write_text(textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{dist}"
        version = "1.0"
        [project.entry-points.gotunnel]
        {module.removeprefix("gotunnel_")} = "{module}"
        [tool.setuptools]
        py-modules = ["{module}"]
    """))
    (pkg / f"{module}.py").write_text(source)
    return pkg


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Two throwaway packages installed with pip into a private directory (put on PYTHONPATH)."""
    root = tmp_path_factory.mktemp("plugins")
    site = root / "site"
    hello = _package(root, "gotunnel-hello", "gotunnel_hello", HELLO_PLUGIN)
    broken = _package(root, "gotunnel-broken", "gotunnel_broken", "raise RuntimeError('this plugin is broken on purpose')\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(hello), str(broken)],
                   check=True, capture_output=True, timeout=300)
    yield site


def test_third_party_plugin_command_and_lifecycle(gotunnel: Gotunnel, echo_backend: Any, plugin_site: Path,
                                                  tmp_path: Path) -> None:
    log = tmp_path / "hello.jsonl"
    gotunnel.env.update({"PYTHONPATH": str(plugin_site), "GOTUNNEL_HELLO_LOG": str(log)})

    hello = gotunnel("hello", "plugins")
    assert hello.code == 0 and hello.out.strip() == "hello, plugins", hello.err

    listed = gotunnel.json("plugins")["plugins"]
    by_name = {p["name"]: p for p in listed}
    assert by_name["hello"]["status"] == "loaded" and by_name["hello"]["distribution"] == "gotunnel-hello"
    assert by_name["broken"]["status"] == "failed" and "broken on purpose" in by_name["broken"]["error"]
    human = gotunnel("plugins", check=True).out
    assert "broken" in human and "failed" in human

    backend = echo_backend()
    gotunnel("start", "-d", "hooked", "-p", str(backend.port), check=True)
    gotunnel("stop", "hooked", check=True)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["event"], e["name"]) for e in events] == [
        ("created", "hooked"), ("started", "hooked"), ("stopped", "hooked"), ("removed", "hooked")]
    assert f"http://hooked.localhost:{gotunnel.http_port}" in events[1]["urls"]


def test_broken_plugin_does_not_break_other_commands(gotunnel: Gotunnel, plugin_site: Path) -> None:
    gotunnel.env["PYTHONPATH"] = str(plugin_site)
    for args in (["engines"], ["list"], ["config", "show"], ["status"]):
        result = gotunnel(*args)
        assert result.code == 0, (args, result.err)
    engines = gotunnel.json("engines")["engines"]
    # the broken plugin's engine is not listed; the shipped ones (and the HAProxy example, when installed) are
    assert [e["name"] for e in engines if e["name"] not in ("nginx", "caddy", "envoy", "haproxy")] == ["builtin"]
    missing = gotunnel("no-such-command")
    assert missing.code == 2 and missing.err.startswith("error: ")


def hook_signature(name: str) -> str:
    """A hook's exact signature as the README writes it: `name(arg: Type, ...) -> Return`."""
    import inspect

    sig = inspect.signature(getattr(hookspecs, name))
    params = ", ".join(f"{p.name}: {str(p.annotation).strip(chr(39))}" for p in sig.parameters.values())
    return f"{name}({params}) -> {str(sig.return_annotation).strip(chr(39))}"


def test_every_hook_has_a_test_and_documentation() -> None:
    """Meta-test (datasette's): each hook has a test named `test_hook_<hook>` (in the core's or a
    plugin's tests) and the README documents it with its exact signature."""
    import re

    repo = Path(__file__).resolve().parent.parent
    files = [*repo.glob("tests/test_*.py"), *repo.glob("plugins/*/tests/test_*.py")]
    sources = "\n".join(p.read_text() for p in files if p.name != "test_plugins.py") + HELLO_PLUGIN
    named = set(re.findall(r"^def (test_hook_\w+)\(", "\n".join(p.read_text() for p in files), re.M))
    readme = (repo / "README.md").read_text().replace("\\|", "|")  # a table cell escapes its pipes
    for name in (n for n in dir(hookspecs) if n.startswith("gotunnel_")):
        assert name in sources, f"no test exercises {name}"
        assert f"test_hook_{name}" in named, f"no test named test_hook_{name}"
        assert f"`{name}(" in readme, f"README does not document {name}"
        assert f"`{hook_signature(name)}`" in readme, f"README lacks the exact signature `{hook_signature(name)}`"
