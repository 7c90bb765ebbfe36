"""`trust`: install gotunnel's CA into the trust stores found here (and --uninstall, --check, --env)."""

from __future__ import annotations

from typing import Any

import click

from ..cli.app import CliState, emit_json, pass_state
from ..errors import UsageError
from ..hookspecs import hookimpl


def _print_rows(rows: list[Any]) -> None:
    if not rows:
        click.echo("nothing recorded: gotunnel installed its CA nowhere")
        return
    width = max(len(r.store) for r in rows)
    status_width = max(len(r.status) for r in rows)
    for row in rows:
        click.echo(f"{row.store:<{width}}  {row.status:<{status_width}}  {row.detail}".rstrip())


@click.command()
@click.option("--uninstall", is_flag=True, help="Remove the CA from every store gotunnel installed it into.")
@click.option("--check", is_flag=True, help="Report per store: trusted / not trusted / store missing.")
@click.option("--env", "env_vars", is_flag=True, help="Print SSL_CERT_FILE etc. for a bundle of system roots + the CA.")
@click.option("--store", "stores", multiple=True, metavar="NAME",
              help="Limit to this store (repeatable): system, system-debian, system-fedora, system-arch, nss, "
                   "macos, windows, java.")
@click.option("--check-url", metavar="URL", help="With --check: handshake with this https URL (default: the daemon).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
def trust(state: CliState, uninstall: bool, check: bool, env_vars: bool, stores: tuple[str, ...],
          check_url: str | None, as_json: bool) -> None:
    """Install gotunnel's CA into the trust stores found here (and --uninstall, --check, --env).

    Stores that need root are left untouched and reported with the exact `sudo` command.
    Everything installed is recorded in the state directory; --uninstall removes exactly that.
    """
    from pathlib import Path

    from ..certservice import CertService
    from ..paths import as_invoking_user
    from ..trust import CA, TrustRecord, TrustService
    from ..trust.outcome import check_target, raise_for_outcome, sudo_command

    if sum((uninstall, check, env_vars)) > 1:
        raise UsageError("use only one of --uninstall, --check and --env")
    if check_url and not check:
        raise UsageError("--check-url needs --check")
    layout = state.layout  # resolved as root: under sudo it already names the invoking user's directory
    with as_invoking_user():  # under sudo, the user's state stays the user's
        layout.ensure()
        certs = CertService(layout, state.settings.values)
        ca = CA.from_path(certs.ca.cert_path)
        target = check_target(layout, Path(certs.default().cert), check_url) if check else None
    service = TrustService(ca, TrustRecord(layout.trust_record), layout.trust_dir)
    names = list(stores)
    if env_vars:
        from ..trust.env_bundle import shell_exports

        info = service.install_env()
        if as_json:
            emit_json({"bundle": info["bundle"], "system_roots": info["system_roots"], "variables": info["variables"]})
        else:
            click.echo(shell_exports(info), nl=False)
        return
    state_dir = layout.root if state.settings.sources["state_dir"] != "default" else None
    sudo = sudo_command(state_dir, ["--uninstall"] if uninstall else [])
    if check:
        assert target is not None
        rows, action = service.check(names, target), "check"
    else:
        from .. import tracing

        tracing.configure()  # a trust change is a control operation: traced when OTEL_* asks for it
        try:
            with tracing.span("trust.uninstall" if uninstall else "trust.install", stores=list(names)):
                if uninstall:
                    rows, action = service.uninstall(names, sudo), "uninstall"
                else:
                    rows, action = service.install(names, sudo), "install"
        finally:
            tracing.shutdown()
    if action != "check":  # a change to trust stores is a control operation: audited by the CLI itself
        from ..audit import AuditLog

        with as_invoking_user():
            AuditLog(layout.audit_log).record(
                f"trust_{action}", {"stores": [f"{r.store}: {r.status}" for r in rows]}, source="cli",
                ok=all(r.status not in ("failed", "error") for r in rows))
    if as_json:
        payload: dict[str, Any] = {"action": action, "ca": {"path": str(ca.path), "sha256_fingerprint": ca.fingerprint},
                                   "record": str(layout.trust_record), "stores": [r.to_dict() for r in rows]}
        if target is not None:
            payload["target"] = None if target.offline else f"{target.server_name}@{target.host}:{target.port}"
        emit_json(payload)
    else:
        _print_rows(rows)
    raise_for_outcome(action, rows, sudo)


@hookimpl
def gotunnel_register_commands(cli: click.Group) -> None:
    cli.add_command(trust)
