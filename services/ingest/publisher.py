"""Publishing normalised interactions to JetStream, deduplicated by platform id."""

from nats.js import JetStreamContext

from shared import subjects
from shared.events import InteractionReceived
from shared.ids import dedupe_key
from shared.jetstream import MSG_ID, publish_retrying
from shared.logs import CORRELATION_HEADER
from shared.tracing import carrier_of


class InteractionPublisher:
    def __init__(self, js: JetStreamContext, *, timeout: float) -> None:
        self._js = js
        self._timeout = timeout

    async def publish(self, event: InteractionReceived) -> bool:
        """Store one interaction; True if JetStream already had it (a redelivery)."""
        ack = await publish_retrying(
            self._js,
            subjects.interaction_received(tenant_id=event.tenant_id, account_id=event.account_id),
            event.model_dump_json().encode(),
            timeout=self._timeout,
            headers={
                "Nats-Expected-Stream": subjects.INTERACTIONS_STREAM,
                MSG_ID: dedupe_key(
                    tenant_id=event.tenant_id,
                    account_id=event.account_id,
                    external_id=event.external_id,
                    edit_version=event.edit_version,
                ),
                CORRELATION_HEADER: event.correlation_id,
                **carrier_of(),
            },
        )
        return bool(ack.duplicate)
