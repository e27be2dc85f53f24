"""notify's application service: deadlines in, alerts out, acknowledgements applied.

It works over the ports of `ports.py` (repository, timer scheduler, channels, clock, ids) and
returns outcomes: the events to publish, the dead letters to keep, whether to try a message
again. The consumers (`consumers.py`) move messages; the decisions (`decisions.py`) are pure.
Every delivery that goes out gives `AlertSent`, every failed attempt `AlertFailed`, both
committed with the delivery's state (the outbox) and published with deterministic ids.
A digest gives one `AlertSent` per conversation in it (each is its own delivery).
"""

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from prometheus_client import Counter, Histogram

from services.notify.acks import ack_token
from services.notify.chain import Chain, PlannedAlert, Target, timeline
from services.notify.compose import (
    DigestItem,
    compose_alert,
    compose_assignment,
    compose_connector_problem,
    compose_digest,
    recipients,
    standby,
)
from services.notify.decisions import (
    AckOutcome,
    Fate,
    Judgement,
    Pending,
    Skipped,
    Verdict,
    assignment_channels,
    assignment_news_to,
    fate_of,
    held_for_burst,
    judge_fired,
    kind_of,
    plan_deliveries,
    retry_delay,
    window_end,
)
from services.notify.ports import (
    AlertStart,
    Channel,
    ClaimOutcome,
    Clock,
    ContextWanted,
    Delivery,
    DeliveryError,
    DeliveryUpdate,
    Envelope,
    EventBatch,
    Ids,
    Message,
    NotifyRepository,
    OverdueContext,
    Recipient,
    TimerScheduler,
)
from services.notify.push import push_link
from services.notify.templates import Templates
from services.notify.timers import (
    LATEST_SCHEDULE,
    DeadlineState,
    TimerPayload,
    WatchedDeadline,
    next_timer,
    plan_timer,
)
from shared import subjects
from shared.commands import Acknowledge
from shared.events import (
    AlertAcknowledged,
    AlertChannel,
    AlertFailed,
    AlertKind,
    AlertSent,
    CommandApplied,
    CommandRejected,
    ConnectorProblem,
    ConversationAssigned,
    DeadlineChanged,
    Event,
    Rejection,
)
from shared.logs import correlation_id
from shared.secrets import LinkSigner
from shared.tracing import carrier_of, span

log = logging.getLogger(__name__)

ARMED = Counter("stayhuman_notify_timers_armed_total", "Timers armed or moved")
CANCELLED = Counter("stayhuman_notify_timers_cancelled_total", "Timers cancelled")
FIRED = Counter("stayhuman_notify_timers_fired_total", "Timers fired", ["verdict"])
GROUPED = Counter(
    "stayhuman_notify_alerts_grouped_total", "Alerts held for one message per person during a burst"
)
UNSCHEDULABLE = Counter(
    "stayhuman_notify_timers_unschedulable_total",
    "Timeline entries not armed because they fall after what NATS can schedule (2262)",
)
BREACHES = Counter("stayhuman_notify_breaches_total", "Deadlines that passed with the person still waiting")
ALERTS = Counter("stayhuman_notify_alerts_total", "Alert attempts", ["channel", "result"])
LATENESS = Histogram(
    "stayhuman_notify_alert_lateness_seconds",
    "From the due time to the alert handed to the mail server",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)


@dataclass(frozen=True)
class DeadLetter:
    """A delivery notify gave up on, kept so that replaying it tries again."""

    subject: str
    data: bytes
    error: str
    key: str


@dataclass(frozen=True)
class Outcome:
    """What the consumer does after a call: publish `events` (committed in the outbox: mark
    them published after), publish `replies` (rebuilt the same on a redo), keep `dead_letters`,
    and ack the message, or nak it after `retry_in` seconds."""

    events: tuple[EventBatch, ...] = ()
    replies: tuple[Envelope, ...] = ()
    dead_letters: tuple[DeadLetter, ...] = ()
    retry_in: float | None = None
    then: "Sending | None" = None  # deliveries to send once the message is acknowledged


@dataclass(frozen=True)
class Sending:
    fired: TimerPayload
    context: OverdueContext
    deliveries: tuple[Delivery, ...]


@dataclass
class Policy:
    """How notify retries, groups and links (from its settings)."""

    public_url: str
    signer: LinkSigner
    retry_initial: timedelta = timedelta(seconds=5)
    retry_max: timedelta = timedelta(minutes=5)
    max_attempts: int = 100
    send_timeout: timedelta = timedelta(seconds=15)
    group_window: timedelta = timedelta(0)  # 0: every alert on its own
    group_after: int = 3
    warning_digest: bool = False
    operator: str | None = None
    templates: Templates = field(default_factory=Templates)

    @property
    def lease(self) -> timedelta:
        """How long a claimed send is left to one replica: past it, another may take it."""
        return self.send_timeout * 2 + timedelta(seconds=30)


def envelope(event: Event, *, subject: str, msg_id: str) -> Envelope:
    return Envelope(subject, msg_id, event.model_dump_json().encode())


def event_id(msg_id: str) -> str:
    """An event's id drawn from its message id: the same event built twice is the same event."""
    return hashlib.sha256(msg_id.encode()).hexdigest()[:32]


def retry_timer(fired: TimerPayload, *, attempt: int, at: datetime) -> TimerPayload:
    return TimerPayload(
        tenant_id=fired.tenant_id,
        conversation_id=fired.conversation_id,
        deadline_version=fired.deadline_version,
        step="retry",
        attempt=attempt,
        at=at,
    )


@dataclass
class NotifyService:
    repository: NotifyRepository
    scheduler: TimerScheduler
    channels: dict[str, Channel]
    clock: Clock
    ids: Ids
    policy: Policy

    # -- deadlines --------------------------------------------------------------------------

    async def deadlines_changed(
        self, events: Sequence[DeadlineChanged], *, traces: Mapping[str, dict[str, str] | None] | None = None
    ) -> Outcome:
        """Arm, move or cancel each conversation's timer for its newest deadline. `traces`: the
        trace context each conversation's deadline came with, carried on by its timer."""
        newest: dict[str, DeadlineChanged] = {}
        for event in events:
            known = newest.get(event.conversation_id)
            if known is None or known.deadline_version < event.deadline_version:
                newest[event.conversation_id] = event
        if not newest:
            return Outcome()
        now = self.clock.now()
        current = await self.repository.store_deadlines(newest.values(), now=now)
        to_arm: list[TimerPayload] = []
        to_cancel: list[tuple[str, str]] = []
        logging_info = log.isEnabledFor(logging.INFO)
        for event in newest.values():
            found = current.get(event.conversation_id)
            if found is None or found.deadline.version != event.deadline_version:
                continue  # a newer version is already stored: it decides
            deadline, chain = found.deadline, found.chain
            timer, too_late = plan_timer(deadline, chain, after_step=None, now=now)
            if timer is not None:
                with span("arm deadline", parent=(traces or {}).get(event.conversation_id)):
                    carrier = carrier_of()
                if carrier:  # tracing is on: the timer carries it on
                    timer = timer.model_copy(update={"trace": carrier})
                to_arm.append(timer)
            elif deadline.state == DeadlineState.cleared or too_late is not None:
                to_cancel.append((deadline.tenant_id, deadline.conversation_id))
            if too_late is not None:
                log_unschedulable(deadline, too_late)
            elif logging_info:
                token = correlation_id.set(event.correlation_id)  # follows the interaction into notify
                log.info(
                    "deadline armed" if timer is not None else "deadline cleared",
                    extra={
                        "conversation_id": event.conversation_id,
                        "deadline_version": event.deadline_version,
                        "reason": event.reason,
                    },
                )
                correlation_id.reset(token)
        await self.scheduler.arm(to_arm)
        await self.scheduler.cancel(to_cancel)
        ARMED.inc(len(to_arm))
        CANCELLED.inc(len(to_cancel))
        return Outcome()

    async def reconcile(self, *, page: int = 1000) -> int:
        """At start: every armed deadline has a timer on the server."""
        armed = await self.scheduler.armed_conversations()
        rearmed, after = 0, ""
        while deadlines := await self.repository.armed_deadlines(after=after, limit=page):
            chains = await self.repository.chains(d.conversation_id for d in deadlines)
            now = self.clock.now()
            missing = []
            for deadline in deadlines:
                if deadline.conversation_id in armed:
                    continue
                chain = chains.get(deadline.conversation_id, Chain())
                timer, too_late = plan_timer(deadline, chain, after_step=deadline.last_step, now=now)
                if timer is not None:
                    missing.append(timer)
                elif too_late is not None:
                    log_unschedulable(deadline, too_late)
            await self.scheduler.arm(missing, again=True)
            rearmed += len(missing)
            after = deadlines[-1].conversation_id
        log.info("timers reconciled", extra={"rearmed": rearmed, "armed_on_server": len(armed)})
        return rearmed

    # -- fired timers -----------------------------------------------------------------------

    async def timer_fired(self, fired: TimerPayload) -> Outcome:
        """One fired timer: `timers_fired` with a batch of one."""
        return (await self.timers_fired([fired]))[0]

    async def timers_fired(self, batch: Sequence[TimerPayload]) -> list[Outcome]:
        """Alerts of timelines, each claimed once, planned per person and channel, the next one
        armed; the deliveries go out after the timer is acknowledged (`Outcome.then`). For the
        whole batch the deadlines and chains are read once, the contexts in one read, the claims
        and deliveries written in one transaction and the timers armed in one publish. Retries
        go one by one (`retry`). The outcomes in the order given."""
        outcomes: dict[int, Outcome] = {}
        alerts = {fired.conversation_id for fired in batch if fired.step != "retry"}
        found = await self.repository.current(alerts) if alerts else {}
        due: list[tuple[int, TimerPayload, WatchedDeadline, Chain]] = []
        for i, fired in enumerate(batch):
            if fired.step == "retry":
                outcomes[i] = await self.retry(fired)
                continue
            known = found.get(fired.conversation_id)
            current = known.deadline if known else None
            chain = known.chain if known else Chain()
            judgement = judge_fired(current, fired)
            FIRED.labels(judgement.verdict.value).inc()
            if judgement.verdict is Verdict.send and current is not None:
                due.append((i, fired, current, chain))
            else:
                await self._not_sent(fired, current, chain, judgement)
                outcomes[i] = Outcome()
        if due:
            outcomes.update(zip([i for i, *_ in due], await self._start(due), strict=True))
        return [outcomes[i] for i in range(len(batch))]

    async def _not_sent(
        self, fired: TimerPayload, current: WatchedDeadline | None, chain: Chain, judgement: Judgement
    ) -> None:
        """A timer that sends nothing: a stale one re-arms the current deadline's timer, a
        silenced step moves the timeline past it."""
        if judgement.verdict is Verdict.rearm and current is not None:
            timer = next_timer(current, chain, after_step=current.last_step, now=self.clock.now())
            await self.scheduler.arm([timer] if timer else [], again=True)
        log.info(
            "timer ignored",
            extra={"conversation_id": fired.conversation_id, "step": fired.step, "reason": judgement.ignored},
        )
        if judgement.silenced and current is not None:
            await self._advance(fired, current, chain)  # past a silenced step: what comes after it

    async def _start(self, due: list[tuple[int, TimerPayload, WatchedDeadline, Chain]]) -> list[Outcome]:
        """The alerts that fell due: planned from their contexts, then claimed and opened."""
        now = self.clock.now()
        wanted_contexts: list[ContextWanted] = []
        for _i, fired, current, chain in due:
            assert current.due_at is not None  # a deadline that sends is armed
            wanted_contexts.append(
                ContextWanted(fired.conversation_id, fired.deadline_version, current.due_at, chain)
            )
        contexts = await self.repository.overdue_contexts(wanted_contexts)
        starts: list[AlertStart] = []
        afters: list[TimerPayload | None] = []
        for (_i, fired, current, chain), context in zip(due, contexts, strict=True):
            assert current.due_at is not None
            if fired.attempt == 0 and fired.step == "breach":
                BREACHES.inc()
            entries = timeline(warn_at=current.warn_at, due_at=current.due_at, chain=chain)
            planned = {entry.step: entry for entry in entries}.get(fired.step)
            target = planned.notify if planned else Target.owner
            people = recipients(context, target, planned.person_id if planned else None) if context else []
            afters.append(self._after(fired, current, chain))
            last = afters[-1] is None
            if context is None or not context.still_waiting or not people:
                why = (
                    Skipped.nobody_to_tell if context and context.still_waiting else Skipped.no_longer_waiting
                )
                starts.append(AlertStart(fired, (), last, skipped=why.value))
                continue
            later = entries[[e.step for e in entries].index(fired.step) + 1 :] if planned else []
            backups = standby(context, later)
            wanted = {p.id for p in people} | set(backups)
            preferences = {p: prefs for p, prefs in context.preferences.items() if p in wanted}
            deliveries = plan_deliveries(
                kind_of(fired.step), [p.id for p in people], preferences, standby=backups, now=now
            )
            starts.append(AlertStart(fired, tuple((d.channel, d.person_id) for d in deliveries), last))
        # The deliveries logged, each alert marked handled and its deadline's timeline advanced
        # in one transaction. Should notify die before the timers below are armed, the
        # redelivered timer finds its claim done and arms the next alert.
        started = await self.repository.start_alerts(starts, lease_until=now + self.policy.lease, now=now)
        outcomes: list[Outcome] = []
        safety: list[TimerPayload] = []
        nexts: list[TimerPayload] = []
        for start, after, context, result in zip(starts, afters, contexts, started, strict=True):
            fired = start.fired
            if result.claim.outcome is ClaimOutcome.busy:
                outcomes.append(Outcome(retry_in=result.claim.retry_in))  # another replica is sending it
                continue
            if after is not None:
                nexts.append(after)
            if start.skipped and result.claim.outcome is ClaimOutcome.claimed:
                log.info(
                    "alert skipped", extra={"conversation_id": fired.conversation_id, "reason": start.skipped}
                )
            if result.deliveries and context is not None:
                # A safety net before anything is sent: should this process die while sending,
                # the retry finds the deliveries whose lease ran out and sends them.
                safety.append(retry_timer(fired, attempt=1, at=now + self.policy.lease))
                outcomes.append(Outcome(then=Sending(fired, context, result.deliveries)))
            else:
                outcomes.append(Outcome())
        await self.scheduler.arm(safety, again=True)
        await self.scheduler.arm(nexts)
        return outcomes

    async def retry(self, fired: TimerPayload) -> Outcome:
        """Deliveries still owed for this deadline version, tried again (a replayed dead letter,
        attempt 0, takes the failed ones too)."""
        found = (await self.repository.current([fired.conversation_id])).get(fired.conversation_id)
        current = found.deadline if found else None
        if (
            found is None
            or current is None
            or current.version != fired.deadline_version
            or current.due_at is None
        ):
            log.info("retry dropped: the deadline moved on", extra={"conversation_id": fired.conversation_id})
            return Outcome()
        (context,) = await self.repository.overdue_contexts(
            [ContextWanted(fired.conversation_id, fired.deadline_version, current.due_at, found.chain)]
        )
        if context is None or not context.still_waiting:
            return Outcome()
        now = self.clock.now()
        rows = await self.repository.claim_owed(
            conversation_id=fired.conversation_id, version=fired.deadline_version,
            include_failed=fired.attempt == 0, lease_until=now + self.policy.lease, now=now,
        )  # fmt: skip
        return Outcome(then=Sending(fired, context, tuple(rows)) if rows else None)

    async def send(self, sending: Sending) -> Outcome:
        """Send what the claimed deliveries owe, record each outcome with its event, and arm a
        retry or keep a dead letter for what failed."""
        fired, context = sending.fired, sending.context
        rows = await self._hold_for_burst(list(sending.deliveries))
        if not rows:
            return Outcome()
        now = self.clock.now()
        results: dict[str, tuple[bool, bool, str]] = {}  # delivery id -> (ok, permanent, error or detail)
        generations = context.link_generations
        by_step: dict[str, list[Delivery]] = {}
        for row in rows:
            by_step.setdefault(row.step, []).append(row)
        for step, step_rows in by_step.items():
            kind = kind_of(step)
            email_rows = [r for r in step_rows if r.channel == AlertChannel.email]
            batches = [email_rows] if email_rows else []  # one email to everyone it goes to
            batches += [[r] for r in step_rows if r.channel != AlertChannel.email]
            for batch in batches:
                people = [context.people[r.person_id] for r in batch if r.person_id in context.people]
                if not people:
                    for r in batch:
                        results[r.id] = (False, True, Skipped.not_a_person.value)
                    continue
                message = compose_alert(
                    context, kind=kind, step=step, to=people, now=now,
                    ack_url=self._ack_url(fired.conversation_id, fired.deadline_version, people),
                    templates=self.policy.templates, push_url=self._push_url(people, generations),
                )  # fmt: skip
                outcome = await self._deliver(batch[0].channel, message)
                for r in batch:
                    results[r.id] = outcome
        return await self._record(fired, rows, results, kind_of_row=lambda r: kind_of(r.step), now=now)

    async def _deliver(self, channel_name: str, message: Message) -> tuple[bool, bool, str]:
        channel = self.channels.get(channel_name)
        if channel is None:
            return False, True, f"no {channel_name} channel"
        try:
            delivered = await channel.send(message)
        except DeliveryError as error:
            return False, error.permanent, str(error)
        except Exception as error:
            return False, False, f"{type(error).__name__}: {error}"
        return True, False, delivered.detail

    async def _record(
        self,
        fired: TimerPayload,
        rows: list[Delivery],
        results: dict[str, tuple[bool, bool, str]],
        *,
        kind_of_row: Callable[[Delivery], AlertKind],
        now: datetime,
        digest: int = 0,
    ) -> Outcome:
        """Each delivery's fate, written with its event; a retry armed, or a dead letter kept."""
        updates: list[DeliveryUpdate] = []
        envelopes: list[Envelope] = []
        failed_for_good: list[tuple[Delivery, str]] = []
        retry_after = 0
        retry_at = now + retry_delay(
            max(r.attempts + 1 for r in rows), initial=self.policy.retry_initial, maximum=self.policy.retry_max,
            key=f"{fired.conversation_id}:{fired.deadline_version}",
        )  # fmt: skip
        for r in rows:
            ok, permanent, said = results.get(r.id, (False, False, "not attempted"))
            attempts = r.attempts + 1
            fate = fate_of(
                ok=ok, permanent=permanent, attempts=attempts, max_attempts=self.policy.max_attempts
            )
            status = {
                Fate.sent: "sent",
                Fate.retry: "retrying",
                Fate.give_up: "failed",
                Fate.dropped: "dropped",
            }[fate]
            if digest and fate is Fate.retry:
                status = "grouped"  # a digest is retried by its window's timer
            detail = (said if ok else "") or (
                f"in one message with {digest - 1} others" if digest and ok else ""
            )
            updates.append(DeliveryUpdate(r.id, status, attempts, error="" if ok else said, detail=detail))
            ALERTS.labels(r.channel, "sent" if ok else "failed" if fate is Fate.retry else status).inc()
            if ok and r.attempts == 0 and not digest:
                LATENESS.observe(max(0.0, (now - fired.at).total_seconds()))
            log_fields = {"conversation_id": r.conversation_id, "step": r.step, "channel": r.channel,
                          "person": r.person_id, "attempts": attempts}  # fmt: skip
            if ok:
                log.info("alert sent", extra=log_fields)
            else:
                log.warning(f"alert {status}", extra={**log_fields, "error": said})
            kind = kind_of_row(r)
            if ok:
                envelopes.append(self._sent(r, kind, attempts, said, now))
            else:
                final = fate is not Fate.retry
                envelopes.append(
                    self._failed(r, kind, attempts, said, final, None if final else retry_at, now)
                )
            if fate is Fate.retry:
                retry_after = max(retry_after, attempts)
            if fate is Fate.give_up:
                failed_for_good.append((r, said))
        batch = EventBatch(self.ids.new(), tuple(envelopes))
        await self.repository.finish_deliveries(updates, events=batch, now=now)
        dead_letters: tuple[DeadLetter, ...] = ()
        if failed_for_good and not digest:
            replay = retry_timer(fired, attempt=0, at=now)
            dead_letters = (
                DeadLetter(
                    subject=subjects.retry_fired(
                        tenant_id=fired.tenant_id, conversation_id=fired.conversation_id
                    ),
                    data=replay.model_dump_json().encode(),
                    error="; ".join(f"{r.channel} to {r.person_id}: {said}" for r, said in failed_for_good),
                    key=f"{fired.conversation_id}:{fired.deadline_version}:{self.ids.new()[:8]}",
                ),
            )
        if retry_after and not digest:
            await self.scheduler.arm([retry_timer(fired, attempt=retry_after, at=retry_at)], again=True)
        return Outcome(events=(batch,), dead_letters=dead_letters)

    def _sent(self, r: Delivery, kind: AlertKind, attempt: int, detail: str, now: datetime) -> Envelope:
        msg_id = f"alert:{r.id}:{attempt}:sent"
        return envelope(
            AlertSent(
                event_id=event_id(msg_id), occurred_at=now, tenant_id=r.tenant_id, alert_id=r.id, alert_kind=kind,
                step=r.step, channel=AlertChannel(r.channel), person_id=r.person_id or None,
                conversation_id=r.conversation_id or None, deadline_version=r.deadline_version, detail=detail,
            ),
            subject=subjects.alert_event(tenant_id=r.tenant_id, outcome="sent"),
            msg_id=msg_id,
        )  # fmt: skip

    def _failed(
        self, r: Delivery, kind: AlertKind, attempt: int, error: str, final: bool, retry_at: datetime | None,
        now: datetime,
    ) -> Envelope:  # fmt: skip
        msg_id = f"alert:{r.id}:{attempt}:failed"
        return envelope(
            AlertFailed(
                event_id=event_id(msg_id), occurred_at=now, tenant_id=r.tenant_id, alert_id=r.id, alert_kind=kind,
                step=r.step, channel=AlertChannel(r.channel), person_id=r.person_id or None,
                conversation_id=r.conversation_id or None, deadline_version=r.deadline_version,
                error=error[:2000], final=final, retry_at=retry_at,
            ),
            subject=subjects.alert_event(tenant_id=r.tenant_id, outcome="failed"),
            msg_id=msg_id,
        )  # fmt: skip

    # -- bursts -----------------------------------------------------------------------------

    async def _hold_for_burst(self, rows: list[Delivery]) -> list[Delivery]:
        """During a burst, a person gets one message per window listing the conversations: the
        first few alerts go at once; once `group_after` went to one person on one channel within
        the window, more are held and sent together when it ends (warnings always, with a
        warning digest)."""
        policy = self.policy
        if policy.group_window <= timedelta(0):
            return rows
        first = [r for r in rows if r.attempts == 0]
        now = self.clock.now()
        sent = await self.repository.recently_sent(
            pairs={(r.person_id, r.channel) for r in first}, since=now - policy.group_window, exclude={r.id for r in rows}
        )  # fmt: skip
        chosen = held_for_burst(
            [Pending(r.id, r.person_id, r.channel, r.step) for r in first], sent,
            group_after=policy.group_after, warning_digest=policy.warning_digest,
        )  # fmt: skip
        held_ids = {p.id for p in chosen}
        held = [r for r in first if r.id in held_ids]
        if not held:
            return rows
        await self.repository.finish_deliveries(
            [DeliveryUpdate(r.id, "grouped", 0) for r in held], events=None, now=now
        )
        # Armed again on every hold (a new message id each time): a hold that lands just as the
        # window's timer fired still gets a timer (a moment already past fires at once).
        await self.scheduler.arm_groups(
            sorted({(r.person_id, r.channel) for r in held}),
            at=window_end(now, policy.group_window),
            again=True,
        )
        GROUPED.inc(len(held))
        return [r for r in rows if r.id not in held_ids]

    async def window_ended(self, person_id: str, channel: str) -> Outcome:
        """The window of a burst ended: everything held for one person and channel, as one message."""
        now = self.clock.now()
        rows = await self.repository.claim_grouped(
            person_id=person_id, channel=channel, lease_until=now + self.policy.lease, now=now
        )
        if not rows:
            return Outcome()
        items: list[DigestItem] = []
        person: Recipient | None = None
        skipped: list[DeliveryUpdate] = []
        listed: list[Delivery] = []
        found = await self.repository.current({r.conversation_id for r in rows})
        readable: list[tuple[int, ContextWanted]] = []
        for i, r in enumerate(rows):
            known = found.get(r.conversation_id)
            current = known.deadline if known else None
            if (
                known is not None
                and current is not None
                and current.due_at is not None
                and current.version == r.deadline_version
            ):
                readable.append(
                    (i, ContextWanted(r.conversation_id, r.deadline_version, current.due_at, known.chain))
                )
        read = await self.repository.overdue_contexts([w for _i, w in readable]) if readable else []
        contexts = dict(zip([i for i, _w in readable], read, strict=True))
        for i, r in enumerate(rows):
            context = contexts.get(i)
            if context is None or not context.still_waiting or person_id not in context.people:
                skipped.append(
                    DeliveryUpdate(r.id, "skipped", r.attempts, error=Skipped.no_longer_waiting.value)
                )
                continue
            person = context.people[person_id]
            ack_url = self._ack_url(r.conversation_id, r.deadline_version, [person])
            items.append(DigestItem(context, kind_of(r.step), r.step, ack_url))
            listed.append(r)
        if skipped:
            await self.repository.finish_deliveries(skipped, events=None, now=now)
        if not items or person is None:
            return Outcome()
        outcome = await self._deliver(channel, compose_digest(items, to=person, now=now))
        fired = TimerPayload(tenant_id=listed[0].tenant_id, conversation_id=listed[0].conversation_id,
                             deadline_version=listed[0].deadline_version, step="digest", at=now)  # fmt: skip
        recorded = await self._record(
            fired, listed, {r.id: outcome for r in listed}, kind_of_row=lambda _r: AlertKind.digest, now=now,
            digest=len(items),
        )  # fmt: skip
        if not outcome[0]:
            attempts = max(r.attempts + 1 for r in listed)
            delay = retry_delay(attempts, initial=self.policy.retry_initial, maximum=self.policy.retry_max,
                                key=f"{person_id}:{channel}")  # fmt: skip
            await self.scheduler.arm_groups([(person_id, channel)], at=now + delay, again=True)
            log.warning(
                "grouped alert not delivered; retrying", extra={"person": person_id, "error": outcome[2]}
            )
        else:
            log.info(
                "grouped alert sent", extra={"person": person_id, "channel": channel, "count": len(items)}
            )
            if await self.repository.count_grouped(person_id=person_id, channel=channel):
                # held while this message was being sent: the next window
                await self.scheduler.arm_groups(
                    [(person_id, channel)], at=now + self.policy.group_window, again=True
                )
        return recorded

    # -- assignment notices and operator alerts ----------------------------------------------

    async def assignment_channels(self, events: Sequence[ConversationAssigned]) -> list[tuple[str, ...]]:
        """The channels each assignment is to be told on (none: nobody to tell), from one read
        of the preferences of the owners the batch is news to."""
        now = self.clock.now()
        owners = [assignment_news_to(event, now=now) for event in events]
        wanted = {owner for owner in owners if owner is not None}
        preferences = await self.repository.preferences(wanted) if wanted else {}
        return [assignment_channels(owner, preferences) for owner in owners]

    async def conversation_assigned(
        self, event: ConversationAssigned, *, last_try: bool, channels: tuple[str, ...] | None = None
    ) -> Outcome:
        """Tell a person a conversation is now theirs, on the channels they chose for it (nobody
        gets these unless they ask). Each channel is claimed once: a redelivery retries only
        the channels that failed for now, never one that went. `channels`: what
        `assignment_channels` gave for this event (read here when not given)."""
        if channels is None:
            channels = (await self.assignment_channels([event]))[0]
        owner = event.owner_id
        if not channels or owner is None:
            return Outcome()
        now = self.clock.now()
        step = f"assigned-{event.event_id[:12]}"
        claimed: list[tuple[str, int]] = []  # (channel, attempts before)
        busy: list[float] = []
        for channel in channels:
            claim = await self.repository.claim_alert(
                tenant_id=event.tenant_id, conversation_id=event.conversation_id, version=0,
                step=f"{step}.{channel}", lease_until=now + self.policy.lease, now=now,
            )  # fmt: skip
            if claim.outcome is ClaimOutcome.claimed:
                claimed.append((channel, claim.attempts))
            elif claim.outcome is ClaimOutcome.busy:
                busy.append(claim.retry_in)  # another replica is sending it right now
        wait = max(busy) if busy else None
        if not claimed:
            return Outcome(retry_in=wait)
        context = await self.repository.assignment_context(
            conversation_id=event.conversation_id, person_id=owner
        )
        if context is None:
            for channel, attempts in claimed:
                await self.repository.finish_alert(
                    conversation_id=event.conversation_id, version=0, step=f"{step}.{channel}",
                    status="skipped", attempts=attempts, error=Skipped.not_a_person.value, now=now,
                )  # fmt: skip
            return Outcome(retry_in=wait)
        message = compose_assignment(
            context,
            conversation_id=event.conversation_id,
            event_id=event.event_id,
            reason=event.reason,
            now=now,
        )
        envelopes, problems, finished = [], [], []
        retry_at = None if last_try else now + self.policy.retry_initial
        for channel, attempts in claimed:
            attempt = attempts + 1
            ok, permanent, said = await self._deliver(channel, message)
            ALERTS.labels(channel, "sent" if ok else "failed").inc()
            row = Delivery(
                id=f"{event.conversation_id}:0:{step}|{channel}|{owner}", conversation_id=event.conversation_id,
                deadline_version=0, step="assigned", tenant_id=event.tenant_id, channel=channel, person_id=owner,
                status="", attempts=attempts,
            )  # fmt: skip
            final = permanent or last_try
            if ok:
                envelopes.append(self._sent(row, AlertKind.assignment, attempt, said, now))
            else:
                envelopes.append(
                    self._failed(
                        row, AlertKind.assignment, attempt, said, final, None if final else retry_at, now
                    )
                )
                if not final:
                    problems.append(f"{channel}: {said}")
            finished.append((channel, "sent" if ok else "failed" if final else "retrying", attempt, said))
        batch = EventBatch(self.ids.new(), tuple(envelopes))
        await self.repository.add_events(batch, now=now)
        for channel, status, attempt, said in finished:
            await self.repository.finish_alert(
                conversation_id=event.conversation_id, version=0, step=f"{step}.{channel}", status=status,
                attempts=attempt, recipients=f"{owner}:{channel}", error="" if status == "sent" else said, now=now,
            )  # fmt: skip
        if problems:
            log.warning("assignment notice failed; it will be retried", extra={"error": "; ".join(problems)})
            wait = max(wait or 0.0, self.policy.retry_initial.total_seconds())
        return Outcome(events=(batch,), retry_in=wait)

    async def connector_problem(self, problem: ConnectorProblem, *, attempt: int, last_try: bool) -> Outcome:
        """Tell the operator a connector stopped delivering; an SMTP outage retries it."""
        if not self.policy.operator:
            log.error(
                "connector problem, and no STAYHUMAN_OPERATOR_EMAIL to tell",
                extra={
                    "account_id": problem.account_id,
                    "problem": problem.problem,
                    "detail": problem.detail,
                },
            )
            return Outcome()
        tenant_name, handle = await self.repository.account_names(problem.account_id)
        message = compose_connector_problem(
            account_id=problem.account_id, account_handle=handle, tenant_name=tenant_name,
            platform=problem.platform.value, problem=problem.problem, detail=problem.detail,
            since=problem.since, to=self.policy.operator,
        )  # fmt: skip
        now = self.clock.now()
        ok, permanent, said = await self._deliver(AlertChannel.email, message)
        row = Delivery(
            id=f"connector:{problem.event_id}", conversation_id="", deadline_version=0, step=problem.problem,
            tenant_id=problem.tenant_id, channel=AlertChannel.email, person_id="", status="", attempts=attempt - 1,
        )  # fmt: skip
        retry = not ok and not permanent and not last_try
        if ok:
            event = self._sent(row, AlertKind.connector, attempt, said, now)
            ALERTS.labels("email", "operator").inc()
        else:
            retry_at = now + self.policy.retry_initial if retry else None
            event = self._failed(row, AlertKind.connector, attempt, said, not retry, retry_at, now)
            log.warning("operator alert not delivered", extra={"error": said, "retrying": retry})
        batch = EventBatch(self.ids.new(), (event,))
        await self.repository.add_events(batch, now=now)
        kept: tuple[DeadLetter, ...] = ()
        if not ok and not permanent and not retry:  # out of tries: kept, so replaying it sends it again
            kept = (
                DeadLetter(
                    subject=subjects.connector_problem(
                        tenant_id=problem.tenant_id, account_id=problem.account_id
                    ),
                    data=problem.model_dump_json().encode(),
                    error=f"email to {self.policy.operator}: {said}",
                    key=problem.event_id,
                ),
            )
        return Outcome(
            events=(batch,),
            dead_letters=kept,
            retry_in=self.policy.retry_initial.total_seconds() if retry else None,
        )

    # -- acknowledgements -------------------------------------------------------------------

    async def acknowledge(self, command: Acknowledge) -> tuple[AckOutcome, Outcome]:
        """Someone is on it: the escalation of that deadline stops. One `CommandApplied` (with
        `AlertAcknowledged`) or `CommandRejected` per command; the same command seen again is
        answered the same, under the same message ids."""
        now = self.clock.now()
        result = await self.repository.acknowledge(
            tenant_id=command.tenant_id, conversation_id=command.conversation_id,
            version=command.deadline_version, person_id=command.person_id, command_id=command.command_id, now=now,
        )  # fmt: skip
        outcome = result.outcome
        at = result.acknowledged_at or now
        common = {
            "tenant_id": command.tenant_id, "correlation_id": command.correlation_id, "command_id": command.command_id,
            "command_type": command.type, "issued_by": command.issued_by, "issued_at": command.issued_at,
            "conversation_id": command.conversation_id, "person_id": command.person_id,
        }  # fmt: skip
        replies: list[Envelope] = []
        if outcome is AckOutcome.acknowledged:
            await self._rearm_after_ack(command.conversation_id)
            ack_id = f"ack:{command.command_id}"
            replies.append(
                envelope(
                    AlertAcknowledged(
                        event_id=event_id(ack_id), occurred_at=at, tenant_id=command.tenant_id,
                        correlation_id=command.correlation_id, conversation_id=command.conversation_id,
                        deadline_version=command.deadline_version, person_id=command.person_id,
                        acknowledged_at=at, command_id=command.command_id,
                    ),
                    subject=subjects.alert_event(tenant_id=command.tenant_id, outcome="acknowledged"),
                    msg_id=ack_id,
                )
            )  # fmt: skip
            result_id = f"result:{command.command_id}"
            reply: Event = CommandApplied(
                event_id=event_id(result_id), occurred_at=at, summary="escalation stopped", **common
            )
            subject = subjects.command_outcome(tenant_id=command.tenant_id, person_id=None, outcome="applied")
        else:
            result_id = f"result:{command.command_id}"
            code, reason = REJECTIONS[outcome]
            reply = CommandRejected(
                event_id=event_id(result_id), occurred_at=now, code=code, reason=reason, **common
            )
            subject = subjects.command_outcome(
                tenant_id=command.tenant_id, person_id=None, outcome="rejected"
            )
        replies.append(envelope(reply, subject=subject, msg_id=result_id))
        log.info(
            "acknowledge command",
            extra={"conversation_id": command.conversation_id, "outcome": outcome, "by": command.person_id},
        )
        return outcome, Outcome(replies=tuple(replies))

    async def _rearm_after_ack(self, conversation_id: str) -> None:
        """Put the next alert an acknowledgement leaves (if any) on the conversation's timer, so
        that a silenced escalation step does not even fire."""
        found = (await self.repository.current([conversation_id])).get(conversation_id)
        if found is None or found.deadline.due_at is None:
            return
        deadline = found.deadline
        timer = next_timer(deadline, found.chain, after_step=deadline.last_step)
        if timer is None:
            await self.scheduler.cancel([(deadline.tenant_id, conversation_id)])
        else:
            await self.scheduler.arm([timer], again=True)

    # -- helpers ----------------------------------------------------------------------------

    def _after(self, fired: TimerPayload, current: WatchedDeadline, chain: Chain) -> TimerPayload | None:
        """The timer after the alert `fired` (None: it was the last), said loudly when what comes
        next falls after what NATS can schedule."""
        timer, too_late = plan_timer(current, chain, after_step=fired.step)
        if too_late is not None:
            log_unschedulable(current, too_late)
        return timer

    async def _advance(self, fired: TimerPayload, current: WatchedDeadline, chain: Chain) -> None:
        """The alert `fired` is handled: note it, and arm the one after it (or nothing: done).

        `current` is the deadline as read when the timer fired. Should it have changed since (a
        newer version, an acknowledgement), the update below matches only its own version, and
        the timer armed from it is judged when it fires against what is current then (a newer
        version ignores it, an acknowledgement silences it): no alert goes out that should not."""
        if current.version != fired.deadline_version:
            return  # a newer deadline has its own timeline
        timer = self._after(fired, current, chain)
        await self.repository.advance(
            conversation_id=fired.conversation_id, version=fired.deadline_version, step=fired.step,
            finished=timer is None, now=self.clock.now(),
        )  # fmt: skip
        if timer is not None:
            await self.scheduler.arm([timer])

    def _ack_url(self, conversation_id: str, version: int, to: list[Recipient]) -> str:
        who = to[0].id if len(to) == 1 and to[0].id else "team"
        token = ack_token(self.policy.signer, conversation_id=conversation_id, version=version, who=who)
        return f"{self.policy.public_url.rstrip('/')}/ack/{token}"

    def _push_url(self, people: list[Recipient], generations: dict[str, int]) -> str:
        if len(people) != 1 or not people[0].id:
            return ""
        return push_link(
            self.policy.signer, self.policy.public_url, people[0].id, generations.get(people[0].id, 0)
        )


REJECTIONS: dict[AckOutcome, tuple[Rejection, str]] = {
    AckOutcome.outdated: (Rejection.outdated, "the deadline moved on: it was answered or changed"),
    AckOutcome.already: (Rejection.already_done, "this deadline was acknowledged already"),
    AckOutcome.unknown: (Rejection.unknown_conversation, "no deadline is known for this conversation"),
}


def log_unschedulable(deadline: WatchedDeadline, entry: PlannedAlert) -> None:
    """A timeline entry falls after what NATS can schedule: it is not armed (armed, it would
    fire at once), and said loudly, since nobody will be alerted for it."""
    UNSCHEDULABLE.inc()
    log.error(
        "deadline not armed: its next alert falls after what NATS can schedule",
        extra={
            "conversation_id": deadline.conversation_id,
            "deadline_version": deadline.version,
            "step": entry.step,
            "at": entry.at.isoformat(),
            "latest": LATEST_SCHEDULE.isoformat(),
        },
    )
