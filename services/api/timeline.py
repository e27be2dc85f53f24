"""The api's timeline consumer: every event of SH_EVENTS kept for good, one row per message.

SH_EVENTS keeps seven days; the `timeline` table keeps what happened to each conversation (and
each person) for as long as the conversation is kept, and `commandoutcome` what became of each
command, by its id. A batch is decoded (a message that is no event goes to the dead letter at
once), written in one transaction, insert-if-absent on the message id (a redelivery or a
republished message writes nothing twice), then acknowledged, the acks in flight together. A
batch that fails is written again one message at a time, so one message that cannot be stored
holds back no other, and reaches the dead letter on its last delivery, never dropped.
"""

import logging
from dataclasses import dataclass
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import Counter
from sqlalchemy import Table, TextClause, bindparam, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from services.api.history import (
    ATTRIBUTED,
    ROUTER,
    AnyShEvent,
    CommandOutcomeEntry,
    TimelineEntry,
    caused_by,
    decode,
    entry_of,
    outcome_of,
    unstorable,
)
from shared import subjects
from shared.db.models import CommandOutcomeRow, TimelineRow
from shared.jetstream import dead_letter, is_last_delivery
from shared.messages import MSG_ID

log = logging.getLogger(__name__)

TIMELINE_CONSUMER = "api-timeline"

KEPT = Counter("stayhuman_api_timeline_events_total", "Events the timeline consumer took", ["result"])


def insert_absent(table: Table) -> TextClause:
    """INSERT of one row of `table` (every column) unless one with its key is there: the same
    SQL on SQLite and PostgreSQL, as a text statement SQLAlchemy compiles once (it compiles a
    dialect's INSERT ... ON CONFLICT again on every execution), each value bound as its column's
    type."""
    names = [column.name for column in table.columns]
    columns = ", ".join(f'"{name}"' for name in names)
    values = ", ".join(f":{name}" for name in names)
    return text(
        f'INSERT INTO "{table.name}" ({columns}) VALUES ({values}) ON CONFLICT DO NOTHING'
    ).bindparams(*(bindparam(column.name, type_=column.type) for column in table.columns))


def row_of(table: Table, entry: object) -> dict[str, Any]:
    """The values of one row of `table`, from the entry's fields of the same names."""
    return {column.name: getattr(entry, column.name) for column in table.columns}


TIMELINE_TABLE: Table = TimelineRow.__table__  # type: ignore[attr-defined]
OUTCOME_TABLE: Table = CommandOutcomeRow.__table__  # type: ignore[attr-defined]
INSERT_ENTRY = insert_absent(TIMELINE_TABLE)
INSERT_OUTCOME = insert_absent(OUTCOME_TABLE)


@dataclass(frozen=True)
class Read:
    """One message, decoded: what the timeline and the command outcomes keep of it."""

    msg: Msg
    message_id: str
    event: AnyShEvent
    entry: TimelineEntry | None
    outcome: CommandOutcomeEntry | None

    @property
    def command_id(self) -> str | None:
        """The command that caused this event, when its entry names who asked."""
        if self.entry is None or self.entry.kind not in ATTRIBUTED:
            return None
        return caused_by(self.message_id)


class Unstorable(ValueError):
    """An event no database row can hold as it is (an id longer than its column)."""


def message_id_of(msg: Msg) -> str:
    """The event's Nats-Msg-Id, or its place in the stream when it was published without one."""
    return (msg.headers or {}).get(MSG_ID) or f"seq:{msg.metadata.sequence.stream}"


def read(msg: Msg) -> Read:
    """Decode one message; raises ValueError for one that is no event the timeline can keep."""
    event = decode(msg.data)
    message_id = message_id_of(msg)
    entry = entry_of(event, message_id=message_id, seq=msg.metadata.sequence.stream)
    outcome = outcome_of(event)
    for row in (entry, outcome):
        if row is not None and (problem := unstorable(row)):
            raise Unstorable(problem)
    return Read(msg, message_id, event, entry, outcome)


class TimelineConsumer:
    """Keeps every event of SH_EVENTS in `timeline` and every command outcome in
    `commandoutcome` (connector problems are the operator's: skipped)."""

    def __init__(
        self,
        js: JetStreamContext,
        sessions: async_sessionmaker[AsyncSession],
        *,
        max_deliver: int,
        retry_delay: float = 1.0,
    ) -> None:
        self.js = js
        self.sessions = sessions
        # Rows are written on a connection of the sessions' engine: an ORM session around a
        # batch's few statements cost more than the statements themselves.
        self.engine: AsyncEngine = sessions.kw["bind"]
        self.max_deliver = max_deliver
        self.retry_delay = retry_delay

    async def handle_batch(self, msgs: list[Msg]) -> None:
        reads: list[Read] = []
        for msg in msgs:
            try:
                reads.append(read(msg))
            except Unstorable as error:
                await self._dead_letter(msg, f"unstorable event: {error}")
            except ValueError as error:  # pydantic's ValidationError, a bad encoding, an instant out of range
                await self._dead_letter(msg, f"invalid event: {error}")
        if not reads:
            return
        if len(reads) == 1:
            await self._store_alone(reads[0])
            return
        try:
            await self._store(reads)
        except Exception:
            log.warning("timeline batch failed; storing its messages one by one", exc_info=True)
            for each in reads:
                await self._store_alone(each)
            return
        await self._ack(reads)

    async def _store_alone(self, one: Read) -> None:
        """Store one message; if that fails, it comes again, or on its last delivery it is kept
        on the dead letter with its error (never nak'ed into a silent drop at max_deliver)."""
        try:
            await self._store([one])
        except Exception as error:
            last = is_last_delivery(one.msg, self.max_deliver)
            log.warning(
                "timeline entry not stored",
                exc_info=True,
                extra={
                    "msg_id": one.message_id,
                    "deliveries": one.msg.metadata.num_delivered,
                    "dead_letter": last,
                },
            )
            if last:
                await self._dead_letter(one.msg, f"{type(error).__name__}: {error}")
            else:
                await one.msg.nak(delay=self.retry_delay)
            return
        await self._ack([one])

    async def _store(self, reads: list[Read]) -> None:
        """One transaction: the entries and outcomes not yet kept, and the names of who asked on
        entries stored before their command's outcome came."""
        async with self.engine.begin() as connection:
            issuers = {r.outcome.command_id: r.outcome.issued_by for r in reads if r.outcome is not None}
            wanted = {r.command_id for r in reads if r.command_id} - issuers.keys()
            if wanted:
                issuers.update(await _issuers(connection, wanted))
            entries: dict[str, TimelineEntry] = {}
            outcomes: dict[str, CommandOutcomeEntry] = {}
            for r in reads:
                entry = r.entry
                if entry is not None and r.command_id in issuers:
                    entry = entry_of(
                        r.event, message_id=r.message_id, seq=entry.seq, issued_by=issuers[r.command_id]
                    )
                if entry is not None:
                    entries.setdefault(entry.id, entry)
                if r.outcome is not None:
                    outcomes.setdefault(r.outcome.command_id, r.outcome)
            if entries:
                await connection.execute(INSERT_ENTRY, [row_of(TIMELINE_TABLE, e) for e in entries.values()])
            if outcomes:
                await connection.execute(
                    INSERT_OUTCOME, [row_of(OUTCOME_TABLE, o) for o in outcomes.values()]
                )
            await _name_who_asked(connection, list(outcomes.values()))
        KEPT.labels("stored").inc(len(entries))
        KEPT.labels("skipped").inc(sum(1 for r in reads if r.entry is None))

    async def _ack(self, reads: list[Read]) -> None:
        """Acknowledge the messages of a batch; each ack is written to the connection's buffer,
        so they go out together."""
        failed = 0
        for r in reads:
            try:
                await r.msg.ack()
            except Exception:
                failed += 1
        if failed:  # stored: a redelivery finds them there and writes nothing
            log.warning("acks not sent; those events come again", extra={"count": failed})

    async def _dead_letter(self, msg: Msg, error: str) -> None:
        KEPT.labels("dead_letter").inc()
        await dead_letter(
            self.js, msg, stream=subjects.EVENTS_STREAM, consumer=TIMELINE_CONSUMER, error=error
        )


async def _issuers(connection: AsyncConnection, command_ids: set[str]) -> dict[str, str]:
    """Who sent each of these commands, from the outcomes already kept."""
    rows = await connection.execute(
        select(col(CommandOutcomeRow.command_id), col(CommandOutcomeRow.issued_by)).where(
            col(CommandOutcomeRow.command_id).in_(command_ids)
        ),
    )
    return {row.command_id: row.issued_by for row in rows}


async def _name_who_asked(connection: AsyncConnection, outcomes: list[CommandOutcomeEntry]) -> None:
    """The router publishes a command's events before its outcome, so they may be stored in an
    earlier batch, not yet knowing who asked: with the outcome here, their entries say it."""
    asked = {
        o.command_id: o
        for o in outcomes
        if o.outcome == "applied" and o.conversation_id and o.issued_by not in ("", ROUTER)
    }
    if not asked:
        return
    rows = await connection.execute(
        select(col(TimelineRow.id), col(TimelineRow.seq), col(TimelineRow.detail)).where(
            col(TimelineRow.conversation_id).in_({o.conversation_id for o in asked.values()}),
            col(TimelineRow.kind).in_(ATTRIBUTED),
            col(TimelineRow.actor) == ROUTER,
            col(TimelineRow.id).contains(":cmd-", autoescape=True),
        ),
    )
    changes: list[dict[str, Any]] = []
    for row in rows:
        outcome = asked.get(caused_by(row.id) or "")
        if outcome is None:
            continue
        try:
            event = decode(row.detail.encode())
        except ValueError:  # written by an older version of the events: left as it is
            continue
        entry = entry_of(event, message_id=row.id, seq=row.seq, issued_by=outcome.issued_by)
        if entry is not None and entry.actor != ROUTER:
            changes.append({"row": row.id, "by": entry.actor, "sentence": entry.summary})
    if changes:
        await connection.execute(
            update(TimelineRow)
            .where(col(TimelineRow.id) == bindparam("row"))
            .values(actor=bindparam("by"), summary=bindparam("sentence")),
            changes,
        )
