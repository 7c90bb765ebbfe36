"""Capabilities that only a runtime changes (`Engine.runtime_capabilities`): the suite picks the
declaration for the runtime a run selects, the matrix shows it, and a declaration naming an
unknown runtime is caught."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from gotunnel_core.engine import SUPPORTED, Capability, Engine, EngineSpec
from gotunnel_core.testing.matrix import matrix_markdown
from gotunnel_core.testing.plugin import EngineSelection


class _ContainerShy(Engine):
    """An engine whose reloads lose requests only in a container."""

    name = "shy"
    capabilities = {"health_ejection": Capability.variant("passive checks only")}
    runtime_capabilities = {
        "docker": {"reload_under_load": Capability.unsupported("rebinds its sockets in a container")},
    }

    def render(self, table: Any) -> dict[str, str]:
        return {}


def test_a_runtime_declaration_replaces_the_engines_own_only_under_that_runtime() -> None:
    assert _ContainerShy.capability("reload_under_load") is SUPPORTED
    assert _ContainerShy.capability("reload_under_load", "process") is SUPPORTED
    assert _ContainerShy.capability("reload_under_load", "docker").kind == "unsupported"
    # what the runtime does not mention stays the engine's own declaration
    assert _ContainerShy.capability("health_ejection", "docker").kind == "variant"


def test_the_matrix_shows_a_runtime_declaration_next_to_the_engines_own() -> None:
    table = matrix_markdown({"shy": EngineSpec("shy", _ContainerShy)})
    row = next(line for line in table.splitlines() if line.startswith("| Route add/remove under load"))
    assert row.endswith("| yes; docker: no [2] |"), row
    assert "[2] shy in the docker runtime, route add/remove under load, no failed request: " \
           "rebinds its sockets in a container" in table


def test_the_suite_resolves_each_engines_runtime_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from gotunnel_core.engine import collect_engines
    from gotunnel_core.plugins import make_plugin_manager

    specs = collect_engines(make_plugin_manager().pm)
    selection = EngineSelection(["builtin", "caddy", "nginx"], specs, True)
    monkeypatch.delenv("GOTUNNEL_RUNTIME", raising=False)
    monkeypatch.setenv("GOTUNNEL_NGINX_RUNTIME", "docker")
    assert selection.runtime("builtin") is None  # runs inside the daemon
    assert selection.runtime("caddy") == "process"
    assert selection.runtime("nginx") == "docker"
    monkeypatch.setenv("GOTUNNEL_RUNTIME", "docker")
    assert selection.runtime("caddy") == "docker"
    monkeypatch.setenv("GOTUNNEL_RUNTIME", "podman")  # a bad setting: the engine's start says so
    assert selection.runtime("caddy") is None


def test_caddy_in_the_docker_runtime_skips_reload_under_load_with_its_reason(tmp_path: Any) -> None:
    """A real pytest run of the row: required (so a missing Docker does not skip it first), the
    row is skipped with Caddy's docker-runtime reason, and nothing runs."""
    env = {**os.environ, "GOTUNNEL_RUNTIME": "docker", "GOTUNNEL_REQUIRE_ENGINES": "caddy"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "--gotunnel-engine", "caddy",
         "-k", "concurrent_load", "--pyargs", "gotunnel_core.testing.conformance"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "1 skipped" in run.stdout, run.stdout[-2000:]
    assert "caddy does not support this: a container cannot inherit the daemon's listening sockets" in run.stdout
