"""OPENFAL_OTEL turns on FastAPI's native OpenTelemetry through the global providers;
off (the default), requests make no spans even where a provider is configured."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support import make_settings, running_app


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    """The process's global tracer provider (OpenTelemetry takes it once per process)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


async def test_with_otel_each_request_is_a_span(tmp_path: Path, spans: InMemorySpanExporter) -> None:
    spans.clear()
    async with running_app(make_settings(tmp_path, otel=True)) as app:
        assert (await app.client.get("/health")).status_code == 200
    assert [span.attributes.get("http.response.status_code") for span in spans.get_finished_spans() if span.kind is trace.SpanKind.SERVER] == [200]


async def test_without_otel_requests_make_no_spans(tmp_path: Path, spans: InMemorySpanExporter) -> None:
    spans.clear()
    async with running_app(make_settings(tmp_path)) as app:
        assert (await app.client.get("/health")).status_code == 200
    assert spans.get_finished_spans() == ()
