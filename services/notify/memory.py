"""notify's repository in memory: the same rules as `sql.py` (claims once per (conversation,
version, step), leases, the delivery log, acknowledgements, versions that only grow), for tests
and simulations. `conversations`, `people`, `chains` and `preferences_of` stand for what the
router and `apply` keep in the database."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from services.notify.chain import Chain
from services.notify.decisions import AckOutcome, Preferences
from services.notify.ports import (
    AckResult,
    AlertClaim,
    AlertStart,
    AlertStarted,
    AssignmentContext,
    ClaimOutcome,
    ContextWanted,
    CurrentDeadline,
    Delivery,
    DeliveryUpdate,
    EventBatch,
    OverdueContext,
)
from services.notify.sql import alert_id, delivery_id
from services.notify.timers import DeadlineState, WatchedDeadline
from shared.events import DeadlineChanged


@dataclass
class _Alert:
    tenant_id: str
    status: str
    attempts: int = 0
    lease_until: datetime | None = None
    recipients: str = ""
    error: str = ""
    command_id: str = ""
    at: datetime | None = None


@dataclass
class _Delivery:
    row: Delivery
    lease_until: datetime | None
    created_at: datetime
    sent_at: datetime | None = None
    error: str = ""
    detail: str = ""


@dataclass
class MemoryRepository:
    conversations: dict[str, OverdueContext] = field(default_factory=dict)  # as at the router
    waiting: dict[str, int | None] = field(default_factory=dict)  # the router's current version
    chains_of: dict[str, Chain] = field(default_factory=dict)
    preferences_of: dict[str, Preferences] = field(default_factory=dict)
    generations: dict[str, int] = field(default_factory=dict)
    stored: dict[str, WatchedDeadline] = field(default_factory=dict)
    alerts: dict[str, _Alert] = field(default_factory=dict)
    log: dict[str, _Delivery] = field(default_factory=dict)
    outbox: dict[str, tuple[EventBatch, datetime]] = field(default_factory=dict)

    async def store_deadlines(
        self, events: Iterable[DeadlineChanged], *, now: datetime
    ) -> dict[str, CurrentDeadline]:
        named = []
        for e in events:
            named.append(e.conversation_id)
            known = self.stored.get(e.conversation_id)
            if known is not None and known.version >= e.deadline_version:
                continue
            self.stored[e.conversation_id] = WatchedDeadline(
                conversation_id=e.conversation_id, tenant_id=e.tenant_id, version=e.deadline_version,
                due_at=e.due_at, state=DeadlineState.armed if e.due_at else DeadlineState.cleared, warn_at=e.warn_at,
            )  # fmt: skip
        return await self.current(named)

    async def deadlines(self, ids: Iterable[str]) -> dict[str, WatchedDeadline]:
        return {i: self.stored[i] for i in ids if i in self.stored}

    async def current(self, ids: Iterable[str]) -> dict[str, CurrentDeadline]:
        ids = list(ids)
        chains = await self.chains(ids)
        return {i: CurrentDeadline(self.stored[i], chains.get(i, Chain())) for i in ids if i in self.stored}

    async def armed_deadlines(self, *, after: str, limit: int) -> list[WatchedDeadline]:
        armed = sorted(
            (d for d in self.stored.values() if d.state == DeadlineState.armed and d.conversation_id > after),
            key=lambda d: d.conversation_id,
        )
        return armed[:limit]

    async def chains(self, ids: Iterable[str]) -> dict[str, Chain]:
        return {i: self.chains_of.get(i, Chain()) for i in ids if i in self.conversations}

    async def claim_alert(
        self,
        *,
        tenant_id: str,
        conversation_id: str,
        version: int,
        step: str,
        lease_until: datetime,
        now: datetime,
    ) -> AlertClaim:
        key = alert_id(conversation_id, version, step)
        alert = self.alerts.get(key)
        if alert is None:
            self.alerts[key] = _Alert(tenant_id, "sending", lease_until=lease_until)
            return AlertClaim(ClaimOutcome.claimed, 0)
        if alert.status in ("sent", "failed", "skipped"):
            return AlertClaim(ClaimOutcome.done, alert.attempts)
        if alert.status in ("sending", "retrying") and (alert.lease_until is None or alert.lease_until < now):
            alert.status, alert.lease_until = "sending", lease_until
            return AlertClaim(ClaimOutcome.claimed, alert.attempts)
        remaining = (alert.lease_until - now).total_seconds() if alert.lease_until else 1.0
        return AlertClaim(ClaimOutcome.busy, alert.attempts, max(0.5, remaining))

    async def finish_alert(
        self, *, conversation_id: str, version: int, step: str, status: str, attempts: int,
        recipients: str = "", error: str = "", now: datetime,
    ) -> None:  # fmt: skip
        alert = self.alerts.get(alert_id(conversation_id, version, step))
        if alert is not None:
            alert.status, alert.attempts, alert.lease_until = status, attempts, None
            alert.recipients, alert.error = recipients, error

    async def start_alerts(
        self, starts: Sequence[AlertStart], *, lease_until: datetime, now: datetime
    ) -> list[AlertStarted]:
        return [await self._start(start, lease_until, now) for start in starts]

    async def _start(self, start: AlertStart, lease_until: datetime, now: datetime) -> AlertStarted:
        fired = start.fired
        claim = await self.claim_alert(
            tenant_id=fired.tenant_id, conversation_id=fired.conversation_id, version=fired.deadline_version,
            step=fired.step, lease_until=lease_until, now=now,
        )  # fmt: skip
        if claim.outcome is ClaimOutcome.busy:
            return AlertStarted(claim)
        taken: list[Delivery] = []
        if claim.outcome is ClaimOutcome.claimed:
            alert = alert_id(fired.conversation_id, fired.deadline_version, fired.step)
            if start.skipped is None:
                for channel, person in start.wanted:
                    key = delivery_id(alert, channel, person)
                    if key not in self.log:
                        row = Delivery(key, fired.conversation_id, fired.deadline_version, fired.step,
                                       fired.tenant_id, channel, person, "queued", 0)  # fmt: skip
                        self.log[key] = _Delivery(row, None, now)
                taken = self._take(
                    [d for d in self.log.values() if d.row.id.startswith(f"{alert}|")],
                    False,
                    lease_until,
                    now,
                )
            await self.finish_alert(
                conversation_id=fired.conversation_id, version=fired.deadline_version, step=fired.step,
                status=start.status, attempts=start.attempts(claim), recipients=start.recipients,
                error=start.skipped or "", now=now,
            )  # fmt: skip
        await self.advance(
            conversation_id=fired.conversation_id, version=fired.deadline_version, step=fired.step,
            finished=start.finished, now=now,
        )  # fmt: skip
        return AlertStarted(claim, tuple(taken))

    def _take(
        self, found: list[_Delivery], include_failed: bool, lease_until: datetime, now: datetime
    ) -> list[Delivery]:
        statuses = {"queued", "retrying", "sending", *({"failed"} if include_failed else set())}
        taken = []
        for d in sorted(found, key=lambda d: d.row.id):
            if d.row.status in statuses and (d.lease_until is None or d.lease_until < now):
                attempts = 0 if d.row.status == "failed" else d.row.attempts
                d.row = replace(d.row, status="sending", attempts=attempts)
                d.lease_until = lease_until
                taken.append(d.row)
        return taken

    async def claim_owed(
        self,
        *,
        conversation_id: str,
        version: int,
        include_failed: bool,
        lease_until: datetime,
        now: datetime,
    ) -> list[Delivery]:
        found = [
            d for d in self.log.values()
            if d.row.conversation_id == conversation_id and d.row.deadline_version == version
        ]  # fmt: skip
        return self._take(found, include_failed, lease_until, now)

    async def finish_deliveries(
        self, updates: list[DeliveryUpdate], *, events: EventBatch | None, now: datetime
    ) -> None:
        for u in updates:
            d = self.log[u.id]
            d.row = replace(d.row, status=u.status, attempts=u.attempts)
            d.lease_until, d.error, d.detail = None, u.error, u.detail
            d.sent_at = now if u.status == "sent" else None
        if events is not None and events.envelopes:
            await self.add_events(events, now=now)

    async def advance(
        self, *, conversation_id: str, version: int, step: str, finished: bool, now: datetime
    ) -> None:
        d = self.stored.get(conversation_id)
        if d is None or d.version != version or d.state != DeadlineState.armed:
            return
        self.stored[conversation_id] = replace(
            d, last_step=step, state=DeadlineState.alerted if finished else d.state
        )

    async def acknowledge(
        self,
        *,
        tenant_id: str,
        conversation_id: str,
        version: int,
        person_id: str,
        command_id: str,
        now: datetime,
    ) -> AckResult:
        ack = self.alerts.get(alert_id(conversation_id, version, "ack"))
        if ack is not None and ack.command_id == command_id and ack.tenant_id == tenant_id:
            return AckResult(AckOutcome.acknowledged, ack.tenant_id, ack.at)
        d = self.stored.get(conversation_id)
        if d is None or d.tenant_id != tenant_id:
            return AckResult(AckOutcome.unknown)
        if d.version != version:
            return AckResult(AckOutcome.outdated, d.tenant_id)
        if d.acknowledged_at is not None:
            return AckResult(AckOutcome.already, d.tenant_id, d.acknowledged_at)
        self.stored[conversation_id] = replace(d, acknowledged_at=now)
        self.alerts[alert_id(conversation_id, version, "ack")] = _Alert(
            d.tenant_id, "acknowledged", recipients=person_id, command_id=command_id, at=now
        )
        return AckResult(AckOutcome.acknowledged, d.tenant_id, now)

    async def _context_of(
        self, conversation_id: str, version: int, due_at: datetime
    ) -> OverdueContext | None:
        known = self.conversations.get(conversation_id)
        if known is None:
            return None
        current = self.waiting.get(conversation_id, version)
        return replace(
            known, deadline_version=version, due_at=due_at, still_waiting=current == version,
            preferences=await self.preferences(known.people),
            link_generations=await self.link_generations(known.people),
        )  # fmt: skip

    async def overdue_contexts(self, wanted: Sequence[ContextWanted]) -> list[OverdueContext | None]:
        return [await self._context_of(w.conversation_id, w.version, w.due_at) for w in wanted]

    async def assignment_context(self, *, conversation_id: str, person_id: str) -> AssignmentContext | None:
        known = self.conversations.get(conversation_id)
        if known is None or person_id not in known.people:
            return None
        return AssignmentContext(
            known.tenant_name,
            known.platform,
            known.author_name,
            known.text,
            known.url,
            known.people[person_id],
        )

    async def account_names(self, account_id: str) -> tuple[str, str]:
        for c in self.conversations.values():
            if c.account_id == account_id:
                return c.tenant_name, c.account_handle
        return "an unknown tenant", account_id

    async def preferences(self, people: Iterable[str]) -> dict[str, Preferences]:
        return {p: self.preferences_of.get(p, Preferences()) for p in people if self._known(p)}

    def _known(self, person_id: str) -> bool:
        return any(person_id in c.people for c in self.conversations.values())

    async def link_generations(self, people: Iterable[str]) -> dict[str, int]:
        return {p: self.generations.get(p, 0) for p in people}

    async def recently_sent(
        self, *, pairs: set[tuple[str, str]], since: datetime, exclude: set[str]
    ) -> dict[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = {}
        for d in self.log.values():
            pair = (d.row.person_id, d.row.channel)
            if pair not in pairs or d.row.id in exclude:
                continue
            recent = (d.row.status == "sent" and d.sent_at is not None and d.sent_at >= since) or (
                d.row.status == "sending" and d.created_at >= since
            )
            if recent:
                counts[pair] = counts.get(pair, 0) + 1
        return counts

    async def claim_grouped(
        self, *, person_id: str, channel: str, lease_until: datetime, now: datetime
    ) -> list[Delivery]:
        held = [
            d for d in self.log.values()
            if d.row.person_id == person_id and d.row.channel == channel and d.row.status == "grouped"
        ]  # fmt: skip
        for d in held:
            d.row, d.lease_until = replace(d.row, status="sending"), lease_until
        return [d.row for d in sorted(held, key=lambda d: (d.created_at, d.row.id))]

    async def count_grouped(self, *, person_id: str, channel: str) -> int:
        return sum(
            1 for d in self.log.values()
            if d.row.person_id == person_id and d.row.channel == channel and d.row.status == "grouped"
        )  # fmt: skip

    async def add_events(self, events: EventBatch, *, now: datetime) -> None:
        self.outbox.setdefault(events.id, (events, now))

    async def pending_events(self, *, older_than: datetime | None, limit: int) -> list[EventBatch]:
        found = sorted(self.outbox.values(), key=lambda item: (item[1], item[0].id))
        return [b for b, at in found if older_than is None or at < older_than][:limit]

    async def published(self, ids: list[str]) -> None:
        for i in ids:
            self.outbox.pop(i, None)
