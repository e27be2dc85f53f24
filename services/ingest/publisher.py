"""Publishing normalised interactions to JetStream, deduplicated by platform id."""

from nats.js import JetStreamContext

from shared import subjects
from shared.events import InteractionReceived
from shared.ids import dedupe_key
from shared.jetstream import MSG_ID, Outgoing, publish_pipelined, publish_retrying
from shared.logs import CORRELATION_HEADER
from shared.tracing import carrier_of


class InteractionPublisher:
    def __init__(self, js: JetStreamContext, *, timeout: float) -> None:
        self._js = js
        self._timeout = timeout

    async def publish_many(self, events: list[InteractionReceived]) -> None:
        """Store a platform delivery's interactions together (acks in flight at once)."""
        await publish_pipelined(
            self._js,
            [
                Outgoing(
                    subjects.interaction_received(tenant_id=e.tenant_id, account_id=e.account_id),
                    e.model_dump_json().encode(),
                    dedupe_key(
                        tenant_id=e.tenant_id,
                        account_id=e.account_id,
                        external_id=e.external_id,
                        edit_version=e.edit_version,
                    ),
                    e.correlation_id,
                    headers={"Nats-Expected-Stream": subjects.INTERACTIONS_STREAM, **carrier_of()},
                )
                for e in events
            ],
            timeout=self._timeout,
            retry_for=self._timeout,
        )

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
