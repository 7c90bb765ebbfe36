"""The builtin engine's request spans (issue 15): with the daemon tracing, a proxied request on
HTTP/1.1 or HTTP/2 gets a SERVER span, child of the client's traceparent, and the backend receives
the proxy's span as its parent; an unsampled request keeps the client's headers untouched."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from builtin_helpers import backend_a, echo_json, engine_factory, http_get, make_table, ports, wait_for  # noqa: F401

pytest.importorskip("opentelemetry.sdk", reason="the [otel] extra is not installed")

from gotunnel_core import tracing  # noqa: E402

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture
def memory_exporter() -> Iterator[Any]:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    tracing.shutdown()
    exporter = InMemorySpanExporter()
    assert tracing.configure(exporter, simple=True)
    yield exporter
    tracing.shutdown()


def test_request_span_is_the_backends_parent(memory_exporter: Any, engine_factory: Any,  # noqa: F811
                                                     backend_a: Any, ports: Any) -> None:  # noqa: F811
    engine = engine_factory()
    engine.start(make_table([{"name": "app", "backends": [backend_a.url]}], *ports))
    status, _, body = http_get(ports[0], "app.localhost", "/p?q=1",
                               headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "tracestate": "k=v"})
    assert status == 200
    seen = echo_json(body)["hdr"]
    (span,) = wait_for(lambda: memory_exporter.get_finished_spans(), what="the request span")
    context = span.get_span_context()
    assert span.name == "GET app" and format(context.trace_id, "032x") == TRACE_ID
    assert format(span.parent.span_id, "016x") == PARENT_ID
    assert span.attributes["http.response.status_code"] == 200 and span.attributes["url.path"] == "/p"
    # The backend got the proxy's span as its parent, in the same trace, and the client's state.
    assert seen["traceparent"] == f"00-{TRACE_ID}-{format(context.span_id, '016x')}-01"
    assert seen["tracestate"] == "k=v"


def test_http2_request_span_is_the_backends_parent(memory_exporter: Any, engine_factory: Any,  # noqa: F811
                                                    backend_a: Any, ports: Any, tmp_path: Any) -> None:  # noqa: F811
    from builtin_helpers import make_pki
    from gotunnel_core.testing.h2client import H2Client

    pki = make_pki(tmp_path / "pki", ["app"])
    engine = engine_factory()
    engine.start(make_table([{"name": "app", "backends": [backend_a.url]}], *ports, pki))
    client = H2Client(ports[1], "app.localhost", str(pki.ca_file))
    try:
        assert client.alpn == "h2"
        response = client.request("GET", "/h2", [("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01")])
    finally:
        client.close()
    assert response.status == 200
    (span,) = wait_for(lambda: memory_exporter.get_finished_spans(), what="the stream's span")
    assert span.name == "GET app" and format(span.parent.span_id, "016x") == PARENT_ID
    assert span.attributes["url.scheme"] == "https" and span.attributes["http.response.status_code"] == 200
    own = format(span.get_span_context().span_id, "016x")
    assert echo_json(bytes(response.body))["hdr"]["traceparent"] == f"00-{TRACE_ID}-{own}-01"


def test_unsampled_requests_keep_the_clients_traceparent(memory_exporter: Any, engine_factory: Any,  # noqa: F811
                                                         backend_a: Any, ports: Any) -> None:  # noqa: F811
    engine = engine_factory()
    engine.start(make_table([{"name": "app", "backends": [backend_a.url]}], *ports))
    header = f"00-{TRACE_ID}-{PARENT_ID}-00"  # the caller decided not to sample
    status, _, body = http_get(ports[0], "app.localhost", headers={"traceparent": header})
    assert status == 200 and echo_json(body)["hdr"]["traceparent"] == header
    assert memory_exporter.get_finished_spans() == ()
