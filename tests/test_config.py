"""Config layering: flag > env > file > default, with the source of every value, and clear file errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from gotunnel_core.config import resolve
from gotunnel_core.errors import UsageError


def test_layers_in_order(tmp_path: Path) -> None:
    (tmp_path / "gotunnel.toml").write_text('http_port = 9001\nhttps_port = 9002\nbind = "127.0.0.1"\n')
    env = {"GOTUNNEL_HTTPS_PORT": "9102", "GOTUNNEL_MDNS": "false", "XDG_CONFIG_HOME": str(tmp_path / "none")}
    resolved = resolve({"bind": "127.0.0.2"}, env=env, cwd=tmp_path)
    assert resolved["http_port"] == 9001 and resolved.sources["http_port"].startswith("file:")
    assert resolved["https_port"] == 9102 and resolved.sources["https_port"] == "env"
    assert resolved["bind"] == "127.0.0.2" and resolved.sources["bind"] == "flag"
    assert resolved["mdns"] is False
    assert resolved["engine"] == "builtin" and resolved.sources["engine"] == "default"


def test_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "gotunnel.toml"
    path.write_text("htp_port = 1\n")
    with pytest.raises(UsageError) as info:
        resolve({}, env={}, cwd=tmp_path)
    assert str(path) in info.value.message and "'htp_port'" in info.value.message


def test_type_error_names_file_key_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "gotunnel.toml"
    path.write_text('http_port = "eighty"\n')
    with pytest.raises(UsageError) as info:
        resolve({}, env={}, cwd=tmp_path)
    assert str(path) in info.value.message and "'http_port'" in info.value.message and "1 to 65535" in info.value.message


def test_http2_is_on_by_default_and_follows_flag_env_and_file(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "none")}
    assert resolve({}, env=env, cwd=tmp_path)["http2"] is True
    assert resolve({}, env={**env, "GOTUNNEL_HTTP2": "0"}, cwd=tmp_path)["http2"] is False
    assert resolve({"http2": True}, env={**env, "GOTUNNEL_HTTP2": "0"}, cwd=tmp_path)["http2"] is True
    (tmp_path / "gotunnel.toml").write_text("http2 = false\n")
    resolved = resolve({}, env=env, cwd=tmp_path)
    assert resolved["http2"] is False and resolved.sources["http2"].startswith("file:")
    with pytest.raises(UsageError, match="GOTUNNEL_HTTP2"):
        resolve({}, env={**env, "GOTUNNEL_HTTP2": "sometimes"}, cwd=tmp_path)


def test_bad_env_boolean_names_variable(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="GOTUNNEL_MDNS"):
        resolve({}, env={"GOTUNNEL_MDNS": "maybe"}, cwd=tmp_path)


def test_explicit_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        resolve({"config": str(tmp_path / "nope.toml")}, env={}, cwd=tmp_path)


def test_user_config_dir_is_used(tmp_path: Path) -> None:
    user = tmp_path / "xdg" / "gotunnel"
    user.mkdir(parents=True)
    (user / "config.toml").write_text("http_port = 7000\n")
    resolved = resolve({}, env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")}, cwd=tmp_path)
    assert resolved["http_port"] == 7000
