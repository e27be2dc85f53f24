"""With an OTLP endpoint configured, one trace follows an interaction across the NATS hops."""

from pathlib import Path

import httpx
import pytest

from stayhuman.natsserver import EmbeddedNats
from tests.e2e.stack import Stack, post_webhook
from tests.helpers import config_yaml, eventually, generic_body
from tests.otlp import OtlpReceiver, ReceivedSpan
from tests.smtp import SmtpServer

pytestmark = pytest.mark.e2e
SECRET = "tracing-secret-0123456789"


async def test_one_trace_from_webhook_to_overdue_email(tmp_path: Path, nats_server: EmbeddedNats) -> None:
    receiver = OtlpReceiver().start()
    smtp = SmtpServer().start()
    stack = Stack.configured(
        tmp_path / "stack",
        config_yaml(tenant="acme", account="acme-fb", secret=SECRET, people=["maria"], first_response="2s"),
        nats=nats_server,
        STAYHUMAN_OTEL_ENDPOINT=receiver.endpoint,
        STAYHUMAN_SMTP_HOST="127.0.0.1",
        STAYHUMAN_SMTP_PORT=str(smtp.port),
        STAYHUMAN_SMTP_SECURITY="none",
    )
    try:
        stack.start()
        async with httpx.AsyncClient() as client:
            response = await post_webhook(
                client, stack, "acme-fb", SECRET, generic_body("traced-1", thread_id="traced")
            )
        assert response.status_code == 202

        async def whole_trace() -> list[ReceivedSpan]:
            webhook = [s for s in receiver.spans if s.name == "receive webhook"]
            if not webhook:
                return []
            trace = [s for s in receiver.spans if s.trace_id == webhook[0].trace_id]
            return trace if any(s.name == "handle timer" for s in trace) else []

        spans = await eventually(
            whole_trace, timeout=30, interval=0.2, what="the spans of all three services"
        )
        by_name = {span.name: span for span in spans}
        assert {span.service for span in spans} == {
            "stayhuman-ingest",
            "stayhuman-router",
            "stayhuman-notify",
        }
        # each hop is a child of the one before it
        assert by_name["route interaction"].parent_id == by_name["receive webhook"].span_id
        assert by_name["arm deadline"].parent_id == by_name["route interaction"].span_id
        assert by_name["handle timer"].parent_id == by_name["arm deadline"].span_id
    finally:
        stack.stop()
        smtp.stop()
        receiver.stop()
