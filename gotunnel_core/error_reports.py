"""Errors to Sentry (extra `gotunnel-core[sentry]`): only with a DSN the user configured, never by default.

The DSN comes from the `sentry_dsn` setting (`GOTUNNEL_SENTRY_DSN`, or the config file); nothing
is ever built in (the original tool shipped its author's DSN: every user's crashes went to a
stranger). Without a DSN, or without the SDK, `configure` does nothing at all: no client exists.
With one, reports carry no request data: every event loses its `request` (URLs, headers, cookies,
bodies), user and server name, frames carry no local variables, and the SDK's own collection of
personal data stays at its default: off.
"""

from __future__ import annotations

from typing import Any, Mapping

from . import __version__

#: Event keys that can carry what a user's browser or backend sent: dropped from every report.
_SCRUBBED_KEYS = ("request", "user", "server_name", "modules")


def scrub(event: dict[str, Any], hint: Any = None) -> dict[str, Any]:
    """`before_send`: drop request data and identities, and HTTP data from breadcrumbs."""
    for key in _SCRUBBED_KEYS:
        event.pop(key, None)
    crumbs = event.get("breadcrumbs")
    values = crumbs.get("values") if isinstance(crumbs, dict) else crumbs
    for crumb in values or ():
        if isinstance(crumb, dict):
            crumb.pop("data", None)
    for exception in (event.get("exception") or {}).get("values") or ():
        for frame in (exception.get("stacktrace") or {}).get("frames") or ():
            frame.pop("vars", None)
    return event


def configure(settings: Mapping[str, Any]) -> bool:
    """Start the Sentry client when a DSN is configured; returns whether one was created."""
    dsn = settings.get("sentry_dsn")
    if not dsn:
        return False
    try:
        import sentry_sdk
    except ImportError:
        return False
    before_send: Any = scrub  # the SDK types events as its own TypedDict; `scrub` takes any dict
    sentry_sdk.init(
        dsn=dsn,
        release=f"gotunnel@{__version__}",
        include_local_variables=False,
        max_request_body_size="never",
        traces_sample_rate=0.0,
        before_send=before_send,
        default_integrations=False,  # no automatic hooks into logging, threads or HTTP libraries
    )
    return True


def capture(exc: BaseException) -> None:
    """Report an unexpected exception when a client exists (a no-op otherwise)."""
    try:
        import sentry_sdk
    except ImportError:
        return
    if sentry_sdk.get_client().is_active():
        sentry_sdk.capture_exception(exc)
