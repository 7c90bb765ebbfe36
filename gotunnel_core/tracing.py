"""OpenTelemetry traces (extra `gotunnel-core[otel]`), configured by the standard OTEL_* variables.

Tracing is on when the SDK is installed and an OTLP endpoint is named (`OTEL_EXPORTER_OTLP_ENDPOINT`
or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or `OTEL_TRACES_EXPORTER=otlp`), unless
`OTEL_SDK_DISABLED=true`. The SDK itself reads the rest: the sampler (`OTEL_TRACES_SAMPLER`,
`OTEL_TRACES_SAMPLER_ARG`, default parent-based always-on), the exporter's endpoint, headers and
timeout, the batch processor's delays, and `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES`
(service name `gotunnel` unless set). Without the SDK or an endpoint, `span()` is a no-op that
imports nothing, so the daemon pays nothing for tracing it does not do.

Spans: control operations (`gotunnel start`, `stop`, `stop_all`, `renew`), engine reloads
(`engine.apply`), certificate issuance (`certificate.issue`), trust changes, and sampled request
spans on the builtin engine (see `gotunnel_builtin_proxy.tracing`).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator, Mapping

_provider: Any = None
_configured = False


def wanted(env: Mapping[str, str] | None = None) -> bool:
    """Whether the OTEL_* environment asks for trace export."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                or exporter == "otlp")


def configure(exporter: Any = None, *, simple: bool = False) -> bool:
    """Install the tracer provider once: with `exporter` (tests: an in-memory one), else OTLP/HTTP
    when `wanted()`. Returns whether tracing is on. Safe to call again (later calls keep the first)."""
    global _provider, _configured
    if _configured:
        return _provider is not None
    if exporter is None and not wanted():
        _configured = True
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError:
        _configured = True
        return False
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()  # endpoint, headers, timeout: from OTEL_EXPORTER_OTLP_*
    resource = Resource.create({} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "gotunnel"})
    provider = TracerProvider(resource=resource)  # sampler: from OTEL_TRACES_SAMPLER(_ARG)
    provider.add_span_processor(SimpleSpanProcessor(exporter) if simple else BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _provider, _configured = provider, True
    return True


def enabled() -> bool:
    return _provider is not None


def tracer(name: str = "gotunnel") -> Any:
    """A tracer from the configured provider, or None when tracing is off."""
    return _provider.get_tracer(name) if _provider is not None else None


@contextlib.contextmanager
def span(span_name: str, /, **attributes: Any) -> Iterator[Any]:
    """A span around a block (its exception is recorded and re-raised); a no-op when tracing is off."""
    if _provider is None:
        yield None
        return
    attrs = {f"gotunnel.{k}": v for k, v in attributes.items() if v is not None}
    with _provider.get_tracer("gotunnel").start_as_current_span(span_name, attributes=attrs) as current:
        yield current


def shutdown() -> None:
    """Flush and stop the exporter (daemon exit)."""
    global _provider, _configured
    if _provider is not None:
        _provider.shutdown()
    _provider, _configured = None, False
