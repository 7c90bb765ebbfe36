"""OpenTelemetry traces (issue 15): off without an endpoint, and the daemon's spans (control
operations, reload, certificate issuance, the default engine's requests) arriving at a real
OTLP/HTTP receiver run by the test. The builtin engine's request spans, in the SDK's in-memory
exporter, are tested with the engine (plugins/builtin_proxy/tests/test_builtin_tracing.py)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the [otel] extra is not installed")

from gotunnel_core import tracing  # noqa: E402
from gotunnel_core.testing import Gotunnel, wait_for  # noqa: E402
from gotunnel_core.testing.daemon import http_get as cli_get  # noqa: E402

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


def test_tracing_stays_off_without_an_endpoint() -> None:
    tracing.shutdown()
    assert not tracing.wanted({})
    assert not tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_SDK_DISABLED": "true"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x"})
    with tracing.span("nothing") as current:
        assert current is None


def test_control_spans_nest_and_record_a_failure(memory_exporter: Any) -> None:
    from opentelemetry.trace import StatusCode

    with tracing.span("gotunnel start", operation="start", tunnels=["app"]):
        with pytest.raises(RuntimeError):
            with tracing.span("engine.apply", engine="nginx", tunnels=1):
                raise RuntimeError("refused")
    spans = {span.name: span for span in memory_exporter.get_finished_spans()}
    start, apply = spans["gotunnel start"], spans["engine.apply"]
    assert apply.parent is not None and apply.parent.span_id == start.get_span_context().span_id
    assert apply.attributes["gotunnel.engine"] == "nginx" and start.attributes["gotunnel.tunnels"] == ("app",)
    assert apply.status.status_code == StatusCode.ERROR and apply.events[0].name == "exception"


# ----- a real OTLP/HTTP receiver ---------------------------------------------------------------------

class _Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _OtlpHandler)
        self.spans: list[tuple[str, dict[str, Any], Any]] = []  # (name, resource attributes, span)
        self.lock = threading.Lock()


class _OtlpHandler(BaseHTTPRequestHandler):
    """POST /v1/traces with an ExportTraceServiceRequest (protobuf), as the OTLP/HTTP spec says."""

    server: _Receiver

    def do_POST(self) -> None:  # noqa: N802
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                               ExportTraceServiceResponse)

        body = self.rfile.read(int(self.headers["Content-Length"]))
        assert self.path == "/v1/traces" and self.headers["Content-Type"] == "application/x-protobuf"
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        with self.server.lock:
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.server.spans.append((span.name, resource, span))
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def otlp_receiver() -> Iterator[_Receiver]:
    server = _Receiver()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_daemon_spans_reach_a_real_otlp_receiver(gotunnel: Gotunnel, echo_backend: Any,
                                                  otlp_receiver: _Receiver) -> None:
    backend = echo_backend()
    gotunnel.env.update(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{otlp_receiver.server_address[1]}",
                        OTEL_BSP_SCHEDULE_DELAY="100", OTEL_SERVICE_NAME="gotunnel-test")
    gotunnel("start", "-d", "app", "-p", str(backend.port), check=True)
    status, _, body = cli_get(gotunnel.http_port, "app.localhost", "/x",
                              headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    assert status == 200
    gotunnel("stop", "app", check=True)

    def names() -> set[str]:
        with otlp_receiver.lock:
            return {name for name, _, _ in otlp_receiver.spans}

    wanted = {"gotunnel start", "engine.apply", "certificate.issue", "GET app", "gotunnel stop"}
    wait_for(lambda: wanted <= names(), timeout=20, interval=0.1, what=f"spans {wanted}")
    with otlp_receiver.lock:
        spans: dict[str, list[Any]] = {}
        for name, resource, span in otlp_receiver.spans:
            spans.setdefault(name, []).append((resource, span))
    (resource, start), = spans["gotunnel start"]
    assert resource["service.name"] == "gotunnel-test"
    # The reload and the tunnel's certificate happened inside that start: children in its trace.
    assert any(s.trace_id == start.trace_id and s.parent_span_id == start.span_id for _, s in spans["engine.apply"])
    assert any(s.trace_id == start.trace_id for _, s in spans["certificate.issue"])
    (_, stop), = spans["gotunnel stop"]
    assert any(s.parent_span_id == stop.span_id for _, s in spans["engine.apply"])
    spans = {name: group[0] for name, group in spans.items()}  # type: ignore[misc]
    request = spans["GET app"][1]
    assert request.trace_id.hex() == TRACE_ID and request.parent_span_id.hex() == PARENT_ID
    received = [v for k, v in json.loads(body)["headers"] if k.lower() == "traceparent"]
    assert received == [f"00-{TRACE_ID}-{request.span_id.hex()}-01"]

