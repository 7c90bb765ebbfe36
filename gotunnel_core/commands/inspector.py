"""`gotunnel inspect ...`: the request inspector from the command line (`inspect verify`: webhook signatures).

It asks the daemon's dashboard API (loopback, like the page does), so the CLI and the page give
the same answers. A secret is read from an environment variable or stdin, never from an argument
(arguments are visible to every user in `ps`), and is sent only to the loopback dashboard.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
from typing import Any

import click

from ..cli.app import CliState, emit_json, pass_state
from ..errors import RuntimeFailure, UsageError
from ..hookspecs import hookimpl
from .observe import running_client


@click.group()
def inspect() -> None:
    """The request inspector of tunnels started with --inspect (see also `gotunnel dashboard`)."""


@inspect.command()
@click.argument("record_id", metavar="ID", type=click.IntRange(1))
@click.option("--provider", type=click.Choice(["auto", "stripe", "github", "slack"]), default="auto", show_default=True,
              help="Whose signature scheme to check; auto reads it from the request's headers.")
@click.option("--secret-env", metavar="VAR",
              help="Read the signing secret from environment variable VAR (default: read it from stdin).")
@click.option("--tolerance", type=click.IntRange(0), default=None,
              help="Seconds a signed timestamp may be off the recording time (Stripe and Slack: 300).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_state
def verify(state: CliState, record_id: int, provider: str, secret_env: str | None, tolerance: int | None,
           as_json: bool) -> None:
    """Check the webhook signature (Stripe, GitHub, Slack) of recorded request ID, and say why it fails.

    Exit 0 when the signature matches, 1 when not, 2 for bad input. The secret never goes on the
    command line: `--secret-env STRIPE_WEBHOOK_SECRET`, or pipe it to stdin (a terminal prompts).
    """
    secret = _read_secret(secret_env)
    body: dict[str, Any] = {"provider": provider, "secret": secret}
    if tolerance is not None:
        body["tolerance"] = tolerance
    result = _dashboard_post(state, f"/api/requests/{record_id}/verify", body)
    if as_json:
        emit_json(result)
    else:
        click.echo(("verified: " if result["ok"] else f"not verified ({result['reason']}): ") + result["detail"])
        for note in result.get("notes", []):
            click.echo(f"note: {note}")
    if not result["ok"]:
        sys.exit(1)


def _read_secret(variable: str | None) -> str:
    """The secret from $VARIABLE, or stdin (one line; a terminal gets a hidden prompt)."""
    if variable is not None:
        secret = os.environ.get(variable)
        if secret is None:
            raise UsageError(f"--secret-env {variable!r}: no such environment variable is set")
        if not secret:
            raise UsageError(f"--secret-env {variable!r}: the variable is empty")
        return secret
    if sys.stdin is None:
        raise UsageError("no secret: give --secret-env VAR or pipe the secret to stdin")
    if sys.stdin.isatty():
        return str(click.prompt("signing secret", hide_input=True, err=True))
    secret = sys.stdin.readline().rstrip("\r\n")
    if not secret:
        raise UsageError("no secret on stdin: pipe the signing secret, or give --secret-env VAR")
    return secret


def _dashboard_post(state: CliState, path: str, body: dict[str, Any]) -> Any:
    """POST JSON to the running daemon's dashboard API; its 4xx answers are the user's bad input."""
    info = (running_client(state).ping() or {}).get("dashboard") or {}
    if not info.get("url"):
        raise RuntimeFailure(f"the daemon's dashboard is not served: {info.get('error') or 'it is off'}",
                             hint="the inspector's API lives there: set dashboard = true and a free dashboard_port")
    port = int(info["port"])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", path, body=json.dumps(body).encode(),
                     headers={"Host": f"gotunnel.localhost:{port}", "Content-Type": "application/json"})
        response = conn.getresponse()
        status, data = response.status, response.read()
    except OSError as exc:
        raise RuntimeFailure(f"cannot reach the dashboard at 127.0.0.1:{port}: {exc}") from None
    finally:
        conn.close()
    try:
        answer = json.loads(data)
    except ValueError:
        raise RuntimeFailure(f"the dashboard answered {status} with no JSON") from None
    if status in (400, 404):
        raise UsageError(answer.get("error", f"refused ({status})"))
    if status != 200:
        raise RuntimeFailure(answer.get("error", f"the dashboard answered {status}"))
    return answer


@hookimpl
def gotunnel_register_commands(cli: click.Group) -> None:
    cli.add_command(inspect)
