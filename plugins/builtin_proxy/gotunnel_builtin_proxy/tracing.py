"""Request spans on the builtin engine (HTTP/1.1), when the daemon traces (`gotunnel_core.tracing`).

A proxied request gets a SERVER span, child of the client's `traceparent` when it sent one, and
sampled by the configured sampler; a sampled span replaces `traceparent`/`tracestate` towards the
backend with its own, so the backend's spans hang under the proxy's. An unsampled request keeps
the client's headers untouched (propagation never breaks). With tracing off none of this runs:
`ProxyState.tracer` is None and the hot path skips it in one check.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .protocol import Req
    from .router import Route
    from .state import ProxyState

_TRACE_HEADERS = (b"traceparent", b"tracestate")
CRLF = b"\r\n"


def start_request_span(st: "ProxyState", req: "Req", route: "Route", out: list[bytes], https: bool) -> None:
    """Open the request's span; when sampled, rewrite the trace headers in `out` (name, ": ", value,
    CRLF groups of four) to carry it."""
    from opentelemetry.propagate import get_global_textmap
    from opentelemetry.trace import SpanKind, set_span_in_context

    carrier = {name.lower().decode("latin-1"): value.decode("latin-1")
               for name, value in req.headers if name.lower() in _TRACE_HEADERS}
    propagator = get_global_textmap()
    parent = propagator.extract(carrier)
    started = time.time_ns() - int((time.monotonic() - req.t0) * 1e9)
    method = req.method.decode("latin-1")
    span = st.tracer.start_span(
        f"{method} {route.name}", context=parent, kind=SpanKind.SERVER, start_time=started,
        attributes={"http.request.method": method, "gotunnel.tunnel": route.name,
                    "url.scheme": "https" if https else "http",
                    "url.path": req.url.split(b"?", 1)[0].decode("latin-1", "replace")})
    if not span.is_recording():
        return
    req.span = span
    headers: dict[str, str] = {}
    propagator.inject(headers, context=set_span_in_context(span))
    kept = [part for i in range(0, len(out), 4) if out[i].lower() not in _TRACE_HEADERS for part in out[i:i + 4]]
    out[:] = kept
    for name, value in headers.items():
        out += (name.encode("latin-1"), b": ", value.encode("latin-1"), CRLF)


def end_request_span(req: "Req") -> None:
    """Close the request's span with its status (5xx: an error)."""
    from opentelemetry.trace import Status, StatusCode

    span: Any = req.span
    req.span = None
    status = req.status or 499
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))
    span.end()
