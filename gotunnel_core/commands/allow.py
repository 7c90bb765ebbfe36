"""`config allow` and `config deny`: let a project's config file name programs, or take that back."""

from __future__ import annotations

from pathlib import Path

import click

from ..cli.app import CliState, pass_state
from ..errors import UsageError
from ..hookspecs import hookimpl
from .config import config


def _target(path: str | None) -> Path:
    """The file named, else the config file a command here would read (`./gotunnel.toml` first)."""
    from ..config import check_regular_file, find_config_file

    if path is not None:
        target = Path(path)
        if not target.exists():
            raise UsageError(f"config file {path!r} does not exist")
        check_regular_file(target)
        return target
    found = find_config_file(None)
    if found is None:
        raise UsageError("no config file here (./gotunnel.toml) to allow", hint="name it: gotunnel config allow PATH")
    return found


@config.command("allow")
@click.argument("path", required=False)
@pass_state
def config_allow(state: CliState, path: str | None) -> None:
    """Let this config file (its current content) name programs and template directories."""
    from .. import allow
    from ..config import parse_config_bytes, read_config_bytes

    target = _target(path)
    data = read_config_bytes(target)
    parse_config_bytes(target, data)  # a file that does not parse is not worth allowing
    allow.allow_file(target, data)
    click.echo(f"allowed {target.resolve()} (sha256 {allow.digest(data)[:16]}...); any edit needs a new allow")


@config.command("deny")
@click.argument("path", required=False)
@pass_state
def config_deny(state: CliState, path: str | None) -> None:
    """Take back `config allow` for this config file."""
    from .. import allow

    target = _target(path)
    if allow.revoke_file(target):
        click.echo(f"no longer allowed: {target.resolve()}")
    else:
        click.echo(f"was not allowed: {target.resolve()}")


@hookimpl
def gotunnel_register_commands(cli: click.Group) -> None:
    """The subcommands hang on the `config` group registered by `commands.config`."""
