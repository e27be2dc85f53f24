"""Publishing normalised interactions to JetStream, deduplicated by platform id."""

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from nats.js import JetStreamContext

from services.ingest.connectors.model import Rejected
from shared import subjects
from shared.events import ConnectorProblem, InteractionReceived, InteractionRetracted, utcnow
from shared.ids import dedupe_key
from shared.jetstream import (
    DLQ_ERROR,
    MSG_ID,
    MessageTooLarge,
    Outgoing,
    header_bytes,
    max_payload_of,
    publish_pipelined,
    publish_retrying,
)
from shared.logs import CORRELATION_HEADER, correlation_id
from shared.tracing import carrier_of

ARCHIVE_PART = "Sh-Part"


@dataclass(frozen=True)
class RawPayload:
    """A request body exactly as received, with where it came from."""

    source: str  # generic, meta, x, batch, or a polled platform
    body: bytes
    account_id: str = ""

    @cached_property
    def digest(self) -> str:
        return hashlib.sha256(self.body).hexdigest()

    def outgoing(self, max_payload: int) -> list[Outgoing]:
        """The archive messages of the body: one, or parts `Sh-Part: i/n` when the body and its
        headers exceed what the server takes (a batch may be 16 MiB, a server takes 1 MiB)."""
        digest = self.digest
        headers = {
            "Nats-Expected-Stream": subjects.ARCHIVE_STREAM,
            "Sh-Source": self.source,
            "Sh-Account": self.account_id,
            "Sh-Received-At": utcnow().isoformat(),
            "Sh-Digest": digest,
        }
        msg_id = f"raw:{self.source}:{digest}"  # a platform's retry of the same body is kept once
        base = {MSG_ID: msg_id, CORRELATION_HEADER: correlation_id.get(), **headers}
        room = max_payload - header_bytes(base) - 64  # 64: room for the part header and id suffix
        if len(self.body) + 64 <= room:
            return [
                Outgoing(
                    subjects.archive(source=self.source), self.body, msg_id, correlation_id.get(), headers
                )
            ]
        parts = -(-len(self.body) // room)
        return [
            Outgoing(
                subjects.archive(source=self.source),
                self.body[index * room : (index + 1) * room],
                f"{msg_id}:{index + 1}",
                correlation_id.get(),
                {**headers, ARCHIVE_PART: f"{index + 1}/{parts}"},
            )
            for index in range(parts)
        ]


# What is kept of a rejected entry: enough for a person to see what it was (the whole
# delivery is in the archive), small enough for any server's max_payload.
REJECTED_KEPT_BYTES = 64 * 1024


def rejected_outgoing(source: str, rejected: Rejected, *, delivery: str, account_id: str = "") -> Outgoing:
    """An entry of a delivery that cannot be stored, kept on ingest's dead letter with its
    problem (`sh.dlq.ingest.<source>`; it has no subject to be replayed to). `delivery` names
    the delivery (its digest): a platform's retry of it keeps each entry once, and the same
    bad entry in another delivery is kept again."""
    digest = hashlib.sha256(rejected.raw).hexdigest()[:32]
    return Outgoing(
        subjects.dead_letter(stream="ingest", consumer=source),
        rejected.raw[:REJECTED_KEPT_BYTES],
        f"dlq:ingest:{source}:{delivery[:32]}:{rejected.where[:100]}:{digest}",
        correlation_id.get(),
        headers={
            "Nats-Expected-Stream": subjects.DEAD_LETTER_STREAM,
            DLQ_ERROR: f"{rejected.where}: {rejected.problem}"[:2000].replace("\r", " ").replace("\n", " "),
            "Sh-Source": source,
            "Sh-Account": account_id,
            "Sh-Received-At": utcnow().isoformat(),
        },
    )


def message_id(event: InteractionReceived | InteractionRetracted) -> str:
    """What makes two deliveries of the same platform event the same message."""
    if isinstance(event, InteractionRetracted):
        return f"retract:{event.tenant_id}:{event.account_id}:{event.external_id}"
    return dedupe_key(
        tenant_id=event.tenant_id,
        account_id=event.account_id,
        external_id=event.external_id,
        edit_version=event.edit_version,
    )


class InteractionPublisher:
    def __init__(self, js: JetStreamContext, *, timeout: float) -> None:
        self._js = js
        self._timeout = timeout

    async def publish_many(
        self,
        events: Sequence[InteractionReceived | InteractionRetracted],
        *,
        raw: RawPayload | None = None,
        rejected: Sequence[Rejected] = (),
        all_or_nothing: bool = False,
    ) -> list[Rejected]:
        """Store a delivery's interactions, its raw payload in the archive, and the entries
        that cannot be stored on the dead letter with their problem, together.

        An interaction too large for the server joins the rejected entries (or, with
        `all_or_nothing`, raises MessageTooLarge naming it before anything is sent). The
        acks are in flight at once; the caller answers only after all of them came back:
        everything accepted is stored or dead-lettered. Returns what was rejected.
        """
        limit = max_payload_of(self._js)
        source = raw.source if raw is not None else "ingest"
        account = raw.account_id if raw is not None else ""
        messages = raw.outgoing(limit) if raw is not None else []
        rejected = list(rejected)
        for index, event in enumerate(events):
            message = self._outgoing(event)
            if _size(message) <= limit:
                messages.append(message)
                continue
            problem = f"{_size(message)} bytes as a message: the NATS server takes {limit}"
            if all_or_nothing:
                raise MessageTooLarge(f"interactions[{index}]: {problem}")
            rejected.append(Rejected(f"interaction[{index}]", problem, message.payload))
        delivery = raw.digest if raw is not None else uuid.uuid4().hex
        messages += [rejected_outgoing(source, r, delivery=delivery, account_id=account) for r in rejected]
        await publish_pipelined(self._js, messages, timeout=self._timeout, retry_for=self._timeout)
        return rejected

    async def report(self, problem: ConnectorProblem) -> None:
        """An operator alert about a connector (one message id per problem and start)."""
        await publish_retrying(
            self._js,
            subjects.connector_problem(tenant_id=problem.tenant_id, account_id=problem.account_id),
            problem.model_dump_json().encode(),
            headers={MSG_ID: f"ops:{problem.account_id}:{problem.problem}:{problem.since.isoformat()}"},
            timeout=self._timeout,
        )

    async def publish(self, event: InteractionReceived, *, raw: RawPayload | None = None) -> bool:
        """Store one interaction (and its raw payload) in one round trip; True if JetStream
        already had the interaction (a redelivery). MessageTooLarge when it cannot be stored."""
        interaction = self._outgoing(event)
        limit = max_payload_of(self._js)
        if _size(interaction) > limit:
            raise MessageTooLarge(
                f"the interaction is {_size(interaction)} bytes as a message; the NATS server takes {limit}"
            )
        messages = [interaction, *raw.outgoing(limit)] if raw is not None else [interaction]
        acks = await publish_pipelined(self._js, messages, timeout=self._timeout, retry_for=self._timeout)
        return bool(acks[interaction.msg_id].duplicate)

    def _outgoing(self, event: InteractionReceived | InteractionRetracted) -> Outgoing:
        return Outgoing(
            subjects.interaction_received(tenant_id=event.tenant_id, account_id=event.account_id),
            event.model_dump_json().encode(),
            message_id(event),
            event.correlation_id,
            headers={"Nats-Expected-Stream": subjects.INTERACTIONS_STREAM, **carrier_of()},
        )


def _size(message: Outgoing) -> int:
    return len(message.payload) + header_bytes(message.all_headers())
