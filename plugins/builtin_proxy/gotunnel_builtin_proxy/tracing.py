"""Request spans on the builtin engine (HTTP/1.1 and HTTP/2), when the daemon traces
(`gotunnel_core.tracing`).

A proxied request gets a SERVER span, child of the client's `traceparent` when it sent one, and
sampled by the configured sampler; a sampled span replaces `traceparent`/`tracestate` towards the
backend with its own, so the backend's spans hang under the proxy's. An unsampled request keeps
the client's headers untouched (propagation never breaks). With tracing off none of this runs:
`ProxyState.tracer` is None and the hot path skips it in one check.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from .h2_protocol import H2Stream
    from .request import Req
    from .router import Route
    from .state import ProxyState

_TRACE_HEADERS = (b"traceparent", b"tracestate")
CRLF = b"\r\n"


def _open_span(st: "ProxyState", method: bytes, path: bytes, headers: Iterable[tuple[bytes, bytes]], t0: float,
               route: "Route", https: bool) -> tuple[Any, list[tuple[bytes, bytes]]]:
    """The request's span when sampled (else None) and the trace headers the backend must get."""
    from opentelemetry.propagate import get_global_textmap
    from opentelemetry.trace import SpanKind, set_span_in_context

    carrier = {name.lower().decode("latin-1"): value.decode("latin-1")
               for name, value in headers if name.lower() in _TRACE_HEADERS}
    propagator = get_global_textmap()
    started = time.time_ns() - int((time.monotonic() - t0) * 1e9)
    verb = method.decode("latin-1")
    span = st.tracer.start_span(
        f"{verb} {route.name}", context=propagator.extract(carrier), kind=SpanKind.SERVER, start_time=started,
        attributes={"http.request.method": verb, "gotunnel.tunnel": route.name, "url.scheme": "https" if https else "http",
                    "url.path": path.split(b"?", 1)[0].decode("latin-1", "replace")})
    if not span.is_recording():
        return None, []
    injected: dict[str, str] = {}
    propagator.inject(injected, context=set_span_in_context(span))
    return span, [(k.encode("latin-1"), v.encode("latin-1")) for k, v in injected.items()]


def start_request_span(st: "ProxyState", req: "Req", route: "Route", out: list[bytes], https: bool) -> None:
    """HTTP/1.1: open the span; when sampled, rewrite the trace headers in `out` (name, ": ", value,
    CRLF groups of four)."""
    span, inject = _open_span(st, req.method, req.url, req.headers, req.t0, route, https)
    if span is None:
        return
    req.span = span
    out[:] = [part for i in range(0, len(out), 4) if out[i].lower() not in _TRACE_HEADERS for part in out[i:i + 4]]
    for name, value in inject:
        out += (name, b": ", value, CRLF)


def start_stream_span(st: "ProxyState", stream: "H2Stream", route: "Route",
                      fields: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """HTTP/2: open the span; the fields for the backend, with its trace headers when sampled."""
    req = stream.req
    assert req is not None
    span, inject = _open_span(st, req.method, req.path, fields, stream.t0, route, True)
    if span is None:
        return fields
    stream.span = span
    return [(n, v) for n, v in fields if n not in _TRACE_HEADERS] + inject


def end_request_span(exchange: "Req | H2Stream") -> None:
    """Close the span of a finished request or stream with its status (5xx: an error)."""
    from opentelemetry.trace import Status, StatusCode

    span: Any = exchange.span
    exchange.span = None
    status = exchange.status or 499
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))
    span.end()
