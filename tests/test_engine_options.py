"""Engine options: declared by each engine (type, default, help), validated like core settings with
one-line errors and exit 2, shown with their source by `config show`, each also an environment
variable `GOTUNNEL_<ENGINE>_<OPTION>`; the old top-level keys of builtin settings still work."""

from __future__ import annotations

from typing import Any

import pytest

from gotunnel_core.errors import UsageError, ValidationError
from gotunnel_core.options import EngineOption, option_env, resolve_options
from gotunnel_core.testing import Gotunnel
from gotunnel_core.values import integer, number


def write_config(g: Gotunnel, text: str) -> None:
    (g.state_dir.parent / "gotunnel.toml").write_text(text)


def test_unknown_engine_option_key_is_refused_naming_it(gotunnel: Gotunnel) -> None:
    write_config(gotunnel, "[engines.nginx]\nbogus = 1\n")
    for args in (["config", "show"], ["start", "-d", "web", "-p", "3000"]):
        result = gotunnel(*args)
        assert result.code == 2, result.err
        first = result.err.splitlines()[0]
        assert first.startswith("error: ") and "[engines.nginx]" in first and "'bogus'" in first
        assert "keepalive" in result.err  # the hint lists the engine's options
    assert gotunnel.daemon_pid() is None  # refused before a daemon was spawned


def test_out_of_range_engine_option_names_value_and_range(gotunnel: Gotunnel) -> None:
    write_config(gotunnel, "[engines.envoy]\ndrain_time = -5\n")
    result = gotunnel("config", "show")
    assert result.code == 2
    assert result.err.splitlines()[0] == (f"error: config file '{gotunnel.state_dir.parent / 'gotunnel.toml'}': "
                                          "invalid [engines.envoy] drain_time -5: must be an integer from 0 to 3600")
    bad_env = gotunnel("config", "show", extra_env={"GOTUNNEL_CADDY_GRACE_PERIOD": "soon"})
    assert bad_env.code == 2 and "GOTUNNEL_CADDY_GRACE_PERIOD 'soon'" in bad_env.err.splitlines()[0]


def test_config_show_lists_engine_options_with_their_source(gotunnel: Gotunnel) -> None:
    write_config(gotunnel, "workers = 2\n[engines.nginx]\nkeepalive = 64\n[engines.lighttpd]\nmaxconn = 10\n")
    shown = gotunnel.json("config", "show")
    engines = shown["engines"]
    assert engines["nginx"]["keepalive"] == {"value": 64, "source": engines["nginx"]["keepalive"]["source"],
                                             "env": "GOTUNNEL_NGINX_KEEPALIVE"}
    assert engines["nginx"]["keepalive"]["source"].startswith("file:")
    assert engines["nginx"]["workers"]["source"] == "default"
    assert engines["builtin"]["workers"] == {"value": 2, "source": "setting", "env": "GOTUNNEL_BUILTIN_WORKERS"}
    assert engines["envoy"]["workers"]["value"] == 2  # Envoy honours the old top-level key too
    assert shown["uninstalled_engine_tables"] == ["lighttpd"]
    text = gotunnel("config", "show", extra_env={"GOTUNNEL_BUILTIN_WORKERS": "3"}, check=True).out
    assert "[engines.builtin]" in text
    line = next(row for row in text.splitlines() if row.strip().startswith("workers") and "GOTUNNEL_BUILTIN" in row)
    assert line.split()[1:4] == ["3", "env", "GOTUNNEL_BUILTIN_WORKERS"]
    assert "[engines.lighttpd]  (engine not installed here; ignored)" in text


def test_precedence_env_file_legacy_default() -> None:
    declared = [EngineOption("workers", integer(1, 64), 1, "w", legacy=True),
                EngineOption("grace", number(0, 10), 5.0, "g")]
    settings: dict[str, Any] = {"engines": {"toy": {"workers": 4}}, "workers": "2", "config_file": "/c.toml"}
    resolved = resolve_options("toy", declared, settings, env={})
    assert resolved["workers"] == 4 and resolved.entries["workers"].source == "file:/c.toml"
    assert resolved["grace"] == 5.0 and resolved.entries["grace"].source == "default"
    resolved = resolve_options("toy", declared, {"workers": "2"}, env={})
    assert resolved["workers"] == 2 and resolved.entries["workers"].source == "setting"
    resolved = resolve_options("toy", declared, settings, env={"GOTUNNEL_TOY_WORKERS": "9"})
    assert resolved["workers"] == 9 and resolved.entries["workers"].source == "env"
    with pytest.raises(ValidationError, match=r"GOTUNNEL_TOY_GRACE '11': must be a number from 0 to 10"):
        resolve_options("toy", declared, {}, env={"GOTUNNEL_TOY_GRACE": "11"})
    with pytest.raises(UsageError, match=r"\[engines.toy\] has no option 'typo'"):
        resolve_options("toy", declared, {"engines": {"toy": {"typo": 1}}}, env={})
    assert option_env("my-engine", "max_conn") == "GOTUNNEL_MY_ENGINE_MAX_CONN"


def test_every_engine_option_is_declared_with_help_and_a_valid_default() -> None:
    from gotunnel_core.testing.matrix import installed_engines

    for name, spec in installed_engines().items():
        for option in spec.engine_class.declared_options().values():
            assert option.help, (name, option.name)
            if option.default is not None:
                assert option.parse(option.default) == option.default, (name, option.name)


def test_runtime_and_image_are_declared_options_of_every_supervised_engine(gotunnel: Gotunnel) -> None:
    """`runtime` (process | docker) and `image` (a pinned official image per engine) are validated
    options shown by `config show`; the setting `runtime` (--runtime, GOTUNNEL_RUNTIME) applies to
    every engine below its own option."""
    engines = gotunnel.json("config", "show")["engines"]
    pinned = {"nginx": "nginx:1.28.0", "caddy": "caddy:2.11.7", "envoy": "envoyproxy/envoy:v1.40.0"}
    for name, image in pinned.items():
        assert engines[name]["runtime"] == {"value": "process", "source": "default", "env": option_env(name, "runtime")}
        assert engines[name]["image"] == {"value": image, "source": "default", "env": option_env(name, "image")}
    assert "runtime" not in engines["builtin"] and "image" not in engines["builtin"]

    write_config(gotunnel, '[engines.caddy]\nruntime = "process"\nimage = "registry.local:5000/team/caddy:2"\n')
    # an image is a program to run: honoured from a project's config file once the user allows it
    assert gotunnel.json("config", "show")["engines"]["caddy"]["image"]["value"] == "caddy:2.11.7"
    gotunnel("config", "allow", str(gotunnel.state_dir.parent / "gotunnel.toml"), check=True)
    engines = gotunnel.json("--runtime", "docker", "config", "show")["engines"]
    assert engines["nginx"]["runtime"]["value"] == "docker" and engines["nginx"]["runtime"]["source"] == "setting"
    assert engines["caddy"]["runtime"]["value"] == "process"  # the engine's own table wins over the setting
    assert engines["caddy"]["image"]["value"] == "registry.local:5000/team/caddy:2"
    gotunnel.env.update(GOTUNNEL_RUNTIME="docker", GOTUNNEL_CADDY_RUNTIME="docker")
    engines = gotunnel.json("config", "show")["engines"]
    assert engines["envoy"]["runtime"]["value"] == "docker" and engines["caddy"]["runtime"]["source"] == "env"


@pytest.mark.parametrize(("env", "message"), [
    ({"GOTUNNEL_NGINX_RUNTIME": "podman"}, "invalid GOTUNNEL_NGINX_RUNTIME 'podman': must be one of process, docker"),
    ({"GOTUNNEL_RUNTIME": "vm"}, "invalid value 'vm' for GOTUNNEL_RUNTIME: must be one of process, docker"),
    ({"GOTUNNEL_ENVOY_IMAGE": "Envoy Latest"},
     "invalid GOTUNNEL_ENVOY_IMAGE 'Envoy Latest': must be a Docker image reference, e.g. nginx:1.28.0"),
])
def test_bad_runtime_or_image_fails_in_one_line_before_a_daemon(gotunnel: Gotunnel, env: dict[str, str],
                                                                message: str) -> None:
    for args in (["config", "show"], ["--engine", "nginx", "start", "-d", "web", "-p", "3000"]):
        result = gotunnel(*args, extra_env=env)
        assert result.code == 2 and result.out == ""
        assert result.err.splitlines()[0] == f"error: {message}", result.err
    assert gotunnel.daemon_pid() is None


@pytest.mark.parametrize("reference", ["nginx:1.28.0", "envoyproxy/envoy:v1.40.0", "gotunnel-test/nginx:dfcadd1ea1dcbf19",
                                       "localhost:5000/team/caddy", "registry.example.com/a/b:c", "reg:5000/x",
                                       "caddy@sha256:" + "a" * 64])
def test_image_reference_accepts_docker_references(reference: str) -> None:
    from gotunnel_core.values import image_reference

    assert image_reference(reference) == reference
    assert image_reference("") is None


@pytest.mark.parametrize("reference", ["Nginx", "Nginx/x", "nginx:", "a b", " nginx", "nginx;rm -rf /", "-x",
                                       "nginx:1\n", "a//b", "x" * 300, 7])
def test_image_reference_refuses_anything_else(reference: Any) -> None:
    from gotunnel_core.values import image_reference

    with pytest.raises(ValueError, match="must be a Docker image reference"):
        image_reference(reference)
