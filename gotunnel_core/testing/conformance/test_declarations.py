"""Checks of the suite itself, run with every engine selection: each selected engine's capability
declarations name behaviours the suite has, and each behaviour is one marked test."""

from __future__ import annotations

import importlib

import pytest

from ...supervisor.runtime import RUNTIME_NAMES
from . import load_rows


def test_capability_declarations_name_known_behaviours(request: pytest.FixtureRequest) -> None:
    from ..plugin import engine_selection

    behaviours = load_rows()
    selection = engine_selection(request.config)
    checked = 0
    for name in selection.names:
        spec = selection.specs.get(name)
        if spec is None:
            continue
        unknown = sorted(set(spec.engine_class.capabilities) - set(behaviours))
        assert not unknown, f"engine {name!r} declares capabilities for unknown behaviours: {unknown}"
        for runtime, declared in spec.engine_class.runtime_capabilities.items():
            assert runtime in RUNTIME_NAMES, f"engine {name!r} declares capabilities for unknown runtime {runtime!r}"
            unknown = sorted(set(declared) - set(behaviours))
            assert not unknown, f"engine {name!r} declares {runtime} capabilities for unknown behaviours: {unknown}"
        checked += 1
    assert checked or not selection.names


def test_every_behaviour_is_one_marked_test() -> None:
    for key, row in load_rows().items():
        module, _, function = row.test.partition(":")
        fn = getattr(importlib.import_module(module), function)
        marks = [m.args[0] for m in getattr(fn, "pytestmark", []) if m.name == "behaviour"]
        assert marks == [key], (key, row.test, marks)


def test_given_sockets_switch_agrees_with_the_capability(request: pytest.FixtureRequest) -> None:
    """`Engine.serves_given_sockets` is what the daemon reads; an engine without it says why in its
    `given_sockets` capability (the daemon's refusal and the README matrix quote that reason)."""
    from ..plugin import engine_selection

    selection = engine_selection(request.config)
    for name in selection.names:
        spec = selection.specs.get(name)
        if spec is None:
            continue
        engine_class = spec.engine_class
        declared_unsupported = engine_class.capability("given_sockets").kind == "unsupported"
        assert engine_class.serves_given_sockets != declared_unsupported, (
            f"engine {name!r}: serves_given_sockets is {engine_class.serves_given_sockets} but the given_sockets "
            f"capability is {engine_class.capability('given_sockets').kind!r}; set one to match the other")
