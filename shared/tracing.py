"""OpenTelemetry tracing across the NATS hops, when an OTLP endpoint is configured.

The W3C `traceparent` travels in NATS headers (and inside timers, whose fired
messages the server writes), so one trace follows an interaction from the webhook
through the router to the alert. Without an endpoint every call here is a no-op.
"""

import contextlib
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Tracer

_tracer: Tracer = trace.get_tracer("stayhuman")
_enabled = False  # without an exporter, spans are skipped outright: even no-op spans cost on a hot path


def configure_tracing(*, service: str, endpoint: str | None) -> None:
    """Export spans over OTLP/HTTP to `endpoint` (e.g. http://collector:4318/v1/traces)."""
    global _tracer, _enabled
    if not endpoint:
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": f"stayhuman-{service}"}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint), schedule_delay_millis=500)
    )
    trace.set_tracer_provider(provider)
    _tracer = trace.get_tracer("stayhuman")
    _enabled = True


def shutdown_tracing() -> None:
    provider = trace.get_tracer_provider()
    if hasattr(provider, "shutdown"):
        provider.shutdown()


def span(
    name: str,
    *,
    parent: Mapping[str, str] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, str] | None = None,
) -> AbstractContextManager[Any]:
    """A span continuing the trace that `parent` (message headers) carries; nothing when tracing is off."""
    if not _enabled:
        return contextlib.nullcontext()
    return _tracer.start_as_current_span(name, context=context_from(parent), kind=kind, attributes=attributes)


def carrier_of(span: Span | None = None) -> dict[str, str]:
    """The headers that continue the current (or the given) span elsewhere."""
    if not _enabled:
        return {}
    headers: dict[str, str] = {}
    ctx = trace.set_span_in_context(span) if span is not None else None
    propagate.inject(headers, context=ctx)
    return headers


def context_from(headers: Mapping[str, str] | None) -> Any:
    """The remote parent a message carries, if any."""
    return propagate.extract(dict(headers or {}))
