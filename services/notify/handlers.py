"""Notify's consumers: deadlines in (arm, move, cancel timers), timers out (alerts).

Decisions live in `timers.py` and `email.py`; this module moves messages,
claims alerts in the database and talks to SMTP.
"""

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any, Protocol, TypeVar

import apprise
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import Counter, Histogram
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.notify import store
from services.notify.acks import ack_token
from services.notify.chain import Chain, Planned, Target, timeline
from services.notify.channels import DeliveryError, Pending, held_for_burst, plan_deliveries, window_end
from services.notify.email import (
    DigestItem,
    OverdueContext,
    Recipient,
    alert_values,
    compose_alert,
    compose_connector_problem,
    compose_digest,
    digest_lines,
    digest_title,
    recipients,
    safe_url,
    standby,
)
from services.notify.mailer import MailError
from services.notify.push import PushSender, link_generations, push_link, subscriptions_of
from services.notify.scheduler import TimerScheduler
from services.notify.templates import Templates
from services.notify.timers import (
    LATEST_SCHEDULE,
    Deadline,
    DeadlineState,
    TimerPayload,
    Verdict,
    judge_fired,
    next_timer,
    retry_delay,
    unschedulable,
)
from shared import subjects
from shared.db.session import transaction
from shared.events import ConnectorProblem, DeadlineChanged, utcnow
from shared.jetstream import dead_letter, is_last_delivery, keep_dead_letter
from shared.logs import correlation_id
from shared.secrets import LinkSigner, SecretBox
from shared.tracing import carrier_of, span

log = logging.getLogger(__name__)

DEADLINE_CONSUMER = "notify-deadlines"
TIMER_CONSUMER = "notify-timers"

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

T = TypeVar("T")


async def with_heartbeat(msg: Msg, work: Awaitable[T], every: float = 10.0) -> T:
    """Run `work`, telling JetStream the message is in progress while it is slow."""
    task = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=every)
        if done:
            return task.result()
        await msg.in_progress()


class Mailer(Protocol):
    """The port notify sends email through: SMTP in production."""

    async def send(self, message: EmailMessage) -> None: ...


@dataclass
class DeadlineWatcher:
    """Keeps one timer per conversation in step with the router's deadline contract."""

    js: JetStreamContext
    sessions: async_sessionmaker[AsyncSession]
    scheduler: TimerScheduler

    async def handle_batch(self, msgs: list[Msg]) -> None:
        newest: dict[str, DeadlineChanged] = {}
        traces: dict[str, dict[str, str] | None] = {}
        valid: list[Msg] = []
        for msg in msgs:
            try:
                event = DeadlineChanged.model_validate_json(msg.data)
            except ValidationError as error:
                await dead_letter(
                    self.js,
                    msg,
                    stream=subjects.EVENTS_STREAM,
                    consumer=DEADLINE_CONSUMER,
                    error=f"invalid deadline: {error}",
                )
                continue
            valid.append(msg)
            known = newest.get(event.conversation_id)
            if known is None or known.deadline_version < event.deadline_version:
                newest[event.conversation_id] = event
                traces[event.conversation_id] = msg.headers
        if newest:
            async with transaction(self.sessions) as session:
                await store.store_deadlines(session=session, events=newest.values())
                current = await store.get_deadlines(session=session, ids=newest)
                chains = await store.get_chains(session=session, ids=newest)
            to_arm: list[TimerPayload] = []
            to_cancel: list[tuple[str, str]] = []
            now = utcnow()
            for event in newest.values():
                deadline = current.get(event.conversation_id)
                if deadline is None or deadline.version != event.deadline_version:
                    continue  # a newer version is already stored: it decides
                chain = chains.get(event.conversation_id, Chain())
                timer = next_timer(deadline, chain, after_step=None, now=now)
                too_late = unschedulable(deadline, chain, after_step=None, now=now)
                if timer is not None:
                    with span("arm deadline", parent=traces.get(event.conversation_id)):
                        timer = timer.model_copy(update={"trace": carrier_of()})
                    to_arm.append(timer)
                elif deadline.state == DeadlineState.cleared or too_late is not None:
                    to_cancel.append((deadline.tenant_id, deadline.conversation_id))
                if too_late is not None:
                    log_unschedulable(deadline, too_late)
                else:
                    _log_deadline(event, armed=timer is not None)
            await self.scheduler.arm(to_arm)
            await self.scheduler.cancel(to_cancel)
            ARMED.inc(len(to_arm))
            CANCELLED.inc(len(to_cancel))
        for msg in valid:
            await msg.ack()


def log_unschedulable(deadline: Deadline, entry: Planned) -> None:
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


def _log_deadline(event: DeadlineChanged, *, armed: bool) -> None:
    token = correlation_id.set(event.correlation_id)
    log.info(
        "deadline armed" if armed else "deadline cleared",
        extra={
            "conversation_id": event.conversation_id,
            "deadline_version": event.deadline_version,
            "due_at": event.due_at.isoformat() if event.due_at else None,
            "reason": event.reason,
        },
    )
    correlation_id.reset(token)


@dataclass
class AlertSender:
    """Turns a fired timer into exactly one overdue email, retrying on a timer when SMTP fails."""

    js: JetStreamContext
    sessions: async_sessionmaker[AsyncSession]
    scheduler: TimerScheduler
    mailer: Mailer
    sender: str
    retry_initial: timedelta
    retry_max: timedelta
    max_attempts: int
    max_deliver: int
    send_timeout: timedelta
    box: SecretBox  # opens the Apprise URLs that `apply` sealed
    signer: LinkSigner  # signs the acknowledge and push links
    public_url: str
    templates: Templates = field(default_factory=Templates)
    push: PushSender | None = None
    group_window: timedelta = timedelta(0)  # 0: every alert on its own
    group_after: int = 3
    warning_digest: bool = False
    heartbeat: timedelta = timedelta(seconds=10)  # well inside the consumer's ack wait
    concurrency: int = 32
    _slots: asyncio.Semaphore = field(init=False)
    _tasks: set[asyncio.Task[None]] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.concurrency)

    async def handle_batch(self, msgs: list[Msg]) -> None:
        """Start each alert in its own task and return, so that one slow SMTP send never
        holds back timers that fall due meanwhile; waits only when every slot is busy."""
        for msg in msgs:
            await self._slots.acquire()
            task = asyncio.create_task(self._one(msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Let the alerts in flight finish (on shutdown)."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.send_timeout.total_seconds() + 5)

    async def _one(self, msg: Msg) -> None:
        if msg.subject.startswith("sh.timer.fired.group."):
            try:
                await self._flush(msg)
            except Exception:
                log.exception("grouped alert failed", extra={"subject": msg.subject})
                await msg.nak(delay=self.retry_initial.total_seconds())
            finally:
                self._slots.release()
            return
        try:
            fired = TimerPayload.model_validate_json(msg.data)
            with span(
                "handle timer",
                parent=fired.trace,
                attributes={"stayhuman.conversation_id": fired.conversation_id},
            ):
                await self._fired(msg, fired)
        except ValidationError as error:
            await self._dead_letter(msg, f"invalid timer: {error}")
        except Exception as error:
            log.exception("timer handling failed", extra={"subject": msg.subject})
            if is_last_delivery(msg, self.max_deliver):
                await self._dead_letter(msg, f"{type(error).__name__}: {error}")
            else:
                await msg.nak(delay=self.retry_initial.total_seconds())
        finally:
            self._slots.release()

    async def _dead_letter(self, msg: Msg, error: str) -> None:
        await dead_letter(self.js, msg, stream=subjects.TIMERS_STREAM, consumer=TIMER_CONSUMER, error=error)

    async def _fired(self, msg: Msg, fired: TimerPayload) -> None:
        if fired.step == "retry":
            await self._retry(msg, fired)
            return
        async with self.sessions() as session:
            current = (await store.get_deadlines(session=session, ids=[fired.conversation_id])).get(
                fired.conversation_id
            )
        verdict, reason = judge_fired(current, fired)
        FIRED.labels(verdict.value).inc()
        if verdict is Verdict.rearm and current is not None:
            chain = await self._chain(fired.conversation_id)
            timer = next_timer(current, chain, after_step=current.last_step, now=utcnow())
            await self.scheduler.arm([timer] if timer else [], again=True)
        if verdict is Verdict.send and fired.attempt == 0 and fired.step == "breach":
            BREACHES.inc()
        if verdict is not Verdict.send:
            log.info(
                "timer ignored",
                extra={"conversation_id": fired.conversation_id, "step": fired.step, "reason": reason},
            )
            if current is not None and current.version == fired.deadline_version and reason.startswith("ack"):
                await self._advance(fired, current)  # past a silenced step: what comes after it
            await msg.ack()
            return
        lease = self.send_timeout * 2 + timedelta(seconds=30)
        async with transaction(self.sessions) as session:
            claim = await store.claim_alert(
                session=session,
                tenant_id=fired.tenant_id,
                conversation_id=fired.conversation_id,
                version=fired.deadline_version,
                step=fired.step,
                lease=lease,
            )
        if claim.outcome == "done":
            await self._advance(fired, current)  # handled before (a redelivery): make sure the next is armed
            await msg.ack()
            return
        if claim.outcome == "busy":
            await msg.nak(delay=claim.retry_in)  # another replica is sending it right now
            return
        assert current is not None and current.due_at is not None  # judged "send"
        await self._send(msg, fired, current, attempts=claim.attempts)

    async def _chain(self, conversation_id: str) -> Chain:
        async with self.sessions() as session:
            return (await store.get_chains(session=session, ids=[conversation_id])).get(
                conversation_id, Chain()
            )

    async def _advance(self, fired: TimerPayload, current: Deadline | None) -> None:
        """The alert `fired` is handled: note it, and arm the one after it (or nothing: done)."""
        if current is None:
            return
        chain = await self._chain(fired.conversation_id)
        async with self.sessions() as session:
            fresh = (await store.get_deadlines(session=session, ids=[fired.conversation_id])).get(
                fired.conversation_id
            )
        if fresh is None or fresh.version != fired.deadline_version:
            return  # a newer deadline has its own timeline
        timer = next_timer(fresh, chain, after_step=fired.step)
        too_late = unschedulable(fresh, chain, after_step=fired.step)
        if too_late is not None:
            log_unschedulable(fresh, too_late)
        async with transaction(self.sessions) as session:
            await store.advance(session=session, fired=fired, finished=timer is None)
        if timer is not None:
            await self.scheduler.arm([timer])

    def _ack_url(self, fired: TimerPayload, to: list[Recipient]) -> str:
        who = to[0].id if len(to) == 1 and to[0].id else "team"
        token = ack_token(
            self.signer, conversation_id=fired.conversation_id, version=fired.deadline_version, who=who
        )
        return f"{self.public_url.rstrip('/')}/ack/{token}"

    async def _send(self, msg: Msg, fired: TimerPayload, current: Deadline, *, attempts: int) -> None:
        """One alert of the timeline: planned per person and channel, sent, logged; the next
        alert is armed at once, and deliveries that failed are retried on their own timer."""
        assert current.due_at is not None
        context, entries = await self._context(fired, current)
        planned = {entry.step: entry for entry in entries}.get(fired.step)
        target = planned.notify if planned else Target.owner
        people = recipients(context, target, planned.person_id if planned else None) if context else []
        if context is None or not context.still_waiting or not people:
            why = "nobody to tell" if context and context.still_waiting else "no longer waiting"
            async with transaction(self.sessions) as session:
                await store.finish_alert(
                    session=session, status="skipped", attempts=attempts, error=why, fired=fired
                )
            log.info("alert skipped", extra={"conversation_id": fired.conversation_id, "reason": why})
            await self._advance(fired, current)
            await msg.ack()
            return
        kind = "escalation" if fired.step.startswith("escalation") else fired.step
        later = entries[[e.step for e in entries].index(fired.step) + 1 :] if planned else []
        backups = standby(context, later)
        async with self.sessions() as session:
            preferences, _ = await store.get_preferences(
                session=session, people=[p.id for p in people] + backups
            )
        deliveries = plan_deliveries(kind, [p.id for p in people], preferences, standby=backups, now=utcnow())
        lease = self.send_timeout * 2 + timedelta(seconds=30)
        async with transaction(self.sessions) as session:
            rows = await store.claim_deliveries(
                session=session,
                fired=fired,
                wanted=[(d.channel, d.person_id) for d in deliveries],
                lease=lease,
            )
            await store.finish_alert(
                session=session,
                status="sent",
                attempts=attempts + 1,
                recipients=", ".join(f"{d.person_id}:{d.channel}" for d in deliveries),
                fired=fired,
            )
        if rows:
            # A safety net before anything is sent: should this process die while sending,
            # the retry finds the deliveries whose lease ran out and sends them.
            await self.scheduler.arm([self._retry_timer(fired, attempt=1, at=utcnow() + lease)], again=True)
        await self._advance(fired, current)
        await msg.ack()
        await self._deliver(fired, context, rows)

    def _retry_timer(self, fired: TimerPayload, *, attempt: int, at: datetime) -> TimerPayload:
        return TimerPayload(
            tenant_id=fired.tenant_id,
            conversation_id=fired.conversation_id,
            deadline_version=fired.deadline_version,
            step="retry",
            attempt=attempt,
            at=at,
        )

    async def _context(
        self, fired: TimerPayload, current: Deadline
    ) -> tuple[OverdueContext | None, list[Planned]]:
        assert current.due_at is not None
        async with self.sessions() as session:
            context = await store.get_overdue_context(
                session=session,
                conversation_id=fired.conversation_id,
                version=fired.deadline_version,
                due_at=current.due_at,
            )
        chain = await self._chain(fired.conversation_id)
        return context, timeline(warn_at=current.warn_at, due_at=current.due_at, chain=chain)

    async def _deliver(self, fired: TimerPayload, context: OverdueContext, rows: list[Any]) -> None:
        """Send what `rows` (claimed deliveries) owe, record each outcome, arm a retry if needed."""
        rows = await self._hold_for_burst(rows)
        if not rows:
            return
        now = utcnow()
        outcomes: dict[str, tuple[str, str, str]] = {}  # row id -> (status, error, detail)
        by_step: dict[str, list[Any]] = {}
        for row in rows:
            by_step.setdefault(row.step, []).append(row)
        async with self.sessions() as session:
            _, apprise_urls = await store.get_preferences(session=session, people={r.person_id for r in rows})
            subscriptions = await subscriptions_of(session=session, people=list({r.person_id for r in rows}))
            generations = await link_generations(session=session, people={r.person_id for r in rows})
        for step, step_rows in by_step.items():
            kind = "escalation" if step.startswith("escalation") else step
            step_fired = fired.model_copy(update={"step": step})
            email_rows = [r for r in step_rows if r.channel == "email"]
            if email_rows:
                people = [context.people[r.person_id] for r in email_rows if r.person_id in context.people]
                message = compose_alert(
                    context, kind=kind, step=step, to=people, now=now, sender=self.sender,
                    ack_url=self._ack_url(step_fired, people), templates=self.templates,
                    push_url=self._push_url(people, generations),
                )  # fmt: skip
                try:
                    await asyncio.wait_for(self.mailer.send(message), self.send_timeout.total_seconds() + 5)
                except (MailError, TimeoutError) as error:
                    for r in email_rows:
                        outcomes[r.id] = ("failed", f"{type(error).__name__}: {error}", "")
                else:
                    for r in email_rows:
                        outcomes[r.id] = ("sent", "", str(message["Message-ID"]))
            for r in step_rows:
                if r.channel == "email":
                    continue
                person = context.people.get(r.person_id)
                if person is None:
                    outcomes[r.id] = ("skipped", "no longer an active person", "")
                    continue
                rendered = self.templates.render(
                    tenant_id=context.tenant_id,
                    kind=kind,
                    values=alert_values(context, kind, step, [person], now),
                )
                try:
                    if r.channel == "push":
                        mine = subscriptions.get(r.person_id, [])
                        if not mine:
                            raise DeliveryError("no push subscription registered", permanent=True)
                        if self.push is None:
                            raise DeliveryError("Web Push is not set up", permanent=True)
                        taken = await self.push.send(
                            mine,
                            {
                                "title": rendered.subject,
                                "body": f"{context.author_name}: {context.text[:200]}",
                                "url": safe_url(context.url),
                                "ack_url": self._ack_url(step_fired, [person]),
                                "conversation_id": context.conversation_id,
                                "step": step,
                            },
                        )
                        outcomes[r.id] = ("sent", "", f"{taken} of {len(mine)} devices")
                    elif r.channel == "apprise":
                        urls = json.loads(self.box.open(apprise_urls.get(r.person_id) or "[]"))
                        if not urls:
                            raise DeliveryError("no Apprise URL configured", permanent=True)
                        notifier = apprise.Apprise()
                        for url in urls:
                            notifier.add(url)
                        if not await notifier.async_notify(title=rendered.subject, body=rendered.text):
                            raise DeliveryError("no Apprise target took it")
                        outcomes[r.id] = ("sent", "", f"{len(urls)} targets")
                except DeliveryError as error:
                    outcomes[r.id] = ("dropped" if error.permanent else "failed", str(error), "")
                except Exception as error:
                    outcomes[r.id] = ("failed", f"{type(error).__name__}: {error}", "")
        retry_at_attempt = 0
        async with transaction(self.sessions) as session:
            for r in rows:
                status, problem, detail = outcomes.get(r.id, ("failed", "not attempted", ""))
                attempts = r.attempts + 1
                if status == "failed" and attempts < self.max_attempts:
                    status = "retrying"
                    retry_at_attempt = max(retry_at_attempt, attempts)
                await store.finish_delivery(
                    session=session,
                    row_id=r.id,
                    status=status,
                    attempts=attempts,
                    error=problem,
                    detail=detail,
                )
                ALERTS.labels(r.channel, "failed" if status == "retrying" else status).inc()  # per attempt
                if status == "sent" and r.attempts == 0:
                    LATENESS.observe(max(0.0, (utcnow() - fired.at).total_seconds()))
                log_fields = {
                    "conversation_id": r.conversation_id, "step": r.step, "channel": r.channel,
                    "person": r.person_id, "attempts": attempts, "lateness_seconds": round((utcnow() - fired.at).total_seconds(), 3),
                }  # fmt: skip
                if status == "sent":
                    log.info("alert sent", extra=log_fields)
                else:
                    log.warning(f"alert {status}", extra={**log_fields, "error": problem})
        failed = [
            r
            for r in rows
            if outcomes.get(r.id, ("failed",))[0] == "failed" and r.attempts + 1 >= self.max_attempts
        ]
        if failed:
            replay = self._retry_timer(fired, attempt=0, at=utcnow())
            await keep_dead_letter(
                self.js,
                stream=subjects.TIMERS_STREAM,
                consumer=TIMER_CONSUMER,
                subject=subjects.retry_fired(
                    tenant_id=fired.tenant_id, conversation_id=fired.conversation_id
                ),
                data=replay.model_dump_json().encode(),
                error="; ".join(f"{r.channel} to {r.person_id}: {outcomes[r.id][1]}" for r in failed),
                key=f"{fired.conversation_id}:{fired.deadline_version}:{uuid.uuid4().hex[:8]}",
            )
        if retry_at_attempt:
            delay = retry_delay(retry_at_attempt, initial=self.retry_initial, maximum=self.retry_max)
            retry = self._retry_timer(fired, attempt=retry_at_attempt, at=utcnow() + delay)
            await self.scheduler.arm([retry], again=True)

    async def _hold_for_burst(self, rows: list[Any]) -> list[Any]:
        """During a burst, a person gets one message per window listing the conversations: the
        first few alerts go at once; once `group_after` went to one person on one channel within
        the window, more are held and sent together when it ends (warnings always, with
        STAYHUMAN_WARNING_DIGEST)."""
        if self.group_window <= timedelta(0):
            return rows
        first = [r for r in rows if r.attempts == 0]
        now = utcnow()
        async with self.sessions() as session:
            sent = await store.recently_sent(
                session=session,
                pairs={(r.person_id, r.channel) for r in first},
                since=now - self.group_window,
                exclude={r.id for r in rows},
            )
        chosen = held_for_burst(
            [Pending(r.id, r.person_id, r.channel, r.step) for r in first],
            sent,
            group_after=self.group_after,
            warning_digest=self.warning_digest,
        )
        held = [r for r in first if r.id in {p.id for p in chosen}]
        if not held:
            return rows
        flush_at = window_end(now, self.group_window)
        async with transaction(self.sessions) as session:
            for r in held:
                await store.finish_delivery(session=session, row_id=r.id, status="grouped", attempts=0)
        # Published again on every hold (a new message id each time): the schedule is replaced by
        # one at the same moment, so a hold that lands just as the window's timer fired still
        # gets a timer (a moment already past fires at once).
        await self.scheduler.arm_groups({(r.person_id, r.channel) for r in held}, at=flush_at, again=True)
        GROUPED.inc(len(held))
        return [r for r in rows if r not in held]

    async def _flush(self, msg: Msg) -> None:
        """The window of a burst ended: everything held for one person and channel, as one message."""
        _prefix, person_id, channel = msg.subject.rsplit(".", 2)
        lease = self.send_timeout * 2 + timedelta(seconds=30)
        async with transaction(self.sessions) as session:
            rows = await store.claim_grouped(
                session=session, person_id=person_id, channel=channel, lease=lease
            )
        await msg.ack()
        if not rows:
            return
        now = utcnow()
        items: list[DigestItem] = []
        skipped: list[Any] = []
        person: Recipient | None = None
        for r in rows:
            fired = TimerPayload(
                tenant_id=r.tenant_id,
                conversation_id=r.conversation_id,
                deadline_version=r.deadline_version,
                step=r.step,
                at=now,
            )
            async with self.sessions() as session:
                current = (await store.get_deadlines(session=session, ids=[r.conversation_id])).get(
                    r.conversation_id
                )
            context = None
            if current is not None and current.due_at is not None and current.version == r.deadline_version:
                context, _ = await self._context(fired, current)
            if context is None or not context.still_waiting or person_id not in context.people:
                skipped.append(r)
                continue
            person = context.people[person_id]
            kind = "escalation" if r.step.startswith("escalation") else r.step
            items.append(DigestItem(context, kind, r.step, self._ack_url(fired, [person])))
        status, problem = "sent", ""
        if items and person is not None:
            try:
                await self._send_digest(channel, person, items, now)
            except Exception as error:
                status, problem = "retrying", f"{type(error).__name__}: {error}"
        async with transaction(self.sessions) as session:
            for r in skipped:
                await store.finish_delivery(
                    session=session,
                    row_id=r.id,
                    status="skipped",
                    attempts=r.attempts,
                    error="no longer waiting",
                )
            for r in rows:
                if r in skipped:
                    continue
                attempts = r.attempts + 1
                final = (
                    status if status == "sent" else ("grouped" if attempts < self.max_attempts else "failed")
                )
                await store.finish_delivery(
                    session=session, row_id=r.id, status=final, attempts=attempts, error=problem,
                    detail=f"in one message with {len(items) - 1} others" if status == "sent" else "",
                )  # fmt: skip
                ALERTS.labels(channel, "failed" if final == "grouped" else final).inc()
        if status != "sent" and items:
            attempts = max(r.attempts + 1 for r in rows)
            delay = retry_delay(attempts, initial=self.retry_initial, maximum=self.retry_max)
            await self.scheduler.arm_groups({(person_id, channel)}, at=utcnow() + delay, again=True)
            log.warning(
                "grouped alert not delivered; retrying", extra={"person": person_id, "error": problem}
            )
        elif items:
            log.info(
                "grouped alert sent", extra={"person": person_id, "channel": channel, "count": len(items)}
            )
        async with self.sessions() as session:
            left = await store.count_grouped(session=session, person_id=person_id, channel=channel)
        if left and status == "sent":  # held while this message was being sent: the next window
            await self.scheduler.arm_groups(
                {(person_id, channel)}, at=utcnow() + self.group_window, again=True
            )

    async def _send_digest(
        self, channel: str, person: Recipient, items: list[DigestItem], now: datetime
    ) -> None:
        if channel == "email":
            message = compose_digest(items, to=person, now=now, sender=self.sender)
            await asyncio.wait_for(self.mailer.send(message), self.send_timeout.total_seconds() + 5)
            return
        lines = digest_lines(items, now)
        title = digest_title(items)
        if channel == "push":
            async with self.sessions() as session:
                mine = (await subscriptions_of(session=session, people=[person.id])).get(person.id, [])
            if not mine or self.push is None:
                raise DeliveryError("no push subscription registered", permanent=True)
            await self.push.send(
                mine, {"title": title, "body": "\n".join(lines[:10]), "url": "", "step": "digest"}
            )
            return
        async with self.sessions() as session:
            _, sealed = await store.get_preferences(session=session, people=[person.id])
        notifier = apprise.Apprise()
        for url in json.loads(self.box.open(sealed.get(person.id) or "[]")):
            notifier.add(url)
        if not await notifier.async_notify(title=title, body="\n".join(lines)):
            raise DeliveryError("no Apprise target took it")

    async def _retry(self, msg: Msg, fired: TimerPayload) -> None:
        """Deliveries still owed for this deadline version, tried again (a replayed dead letter,
        attempt 0, takes the failed ones too)."""
        async with self.sessions() as session:
            current = (await store.get_deadlines(session=session, ids=[fired.conversation_id])).get(
                fired.conversation_id
            )
        if current is None or current.version != fired.deadline_version or current.due_at is None:
            log.info("retry dropped: the deadline moved on", extra={"conversation_id": fired.conversation_id})
            await msg.ack()
            return
        context, _entries = await self._context(fired, current)
        if context is None or not context.still_waiting:
            await msg.ack()
            return
        async with transaction(self.sessions) as session:
            rows = await store.claim_deliveries(
                session=session,
                fired=fired,
                wanted=[],
                lease=self.send_timeout * 2 + timedelta(seconds=30),
                include_failed=fired.attempt == 0,
            )
        await msg.ack()
        await self._deliver(fired, context, rows)

    def _push_url(self, people: list[Recipient], generations: dict[str, int]) -> str:
        if len(people) != 1 or not people[0].id:
            return ""
        return push_link(self.signer, self.public_url, people[0].id, generations.get(people[0].id, 0))


@dataclass
class Reconciler:
    """At start: every armed deadline in the database has a timer on the server."""

    sessions: async_sessionmaker[AsyncSession]
    scheduler: TimerScheduler
    page: int = 1000

    async def run(self) -> int:
        armed = await self.scheduler.armed_conversations()
        rearmed = 0
        after = ""
        while True:
            async with self.sessions() as session:
                deadlines = await store.get_armed_deadlines(session=session, after=after, limit=self.page)
            if not deadlines:
                break
            async with self.sessions() as session:
                chains = await store.get_chains(session=session, ids=[d.conversation_id for d in deadlines])
            now = utcnow()
            missing = []
            for deadline in deadlines:
                if deadline.conversation_id in armed:
                    continue
                chain = chains.get(deadline.conversation_id, Chain())
                timer = next_timer(deadline, chain, after_step=deadline.last_step, now=now)
                if timer is not None:
                    missing.append(timer)
                elif (
                    too_late := unschedulable(deadline, chain, after_step=deadline.last_step, now=now)
                ) is not None:
                    log_unschedulable(deadline, too_late)
            await self.scheduler.arm(missing, again=True)
            rearmed += len(missing)
            after = deadlines[-1].conversation_id
        log.info("timers reconciled", extra={"rearmed": rearmed, "armed_on_server": len(armed)})
        return rearmed


OPERATOR_CONSUMER = "notify-operators"


@dataclass
class OperatorAlerts:
    """Connector problems reported by ingest, emailed to the operator."""

    js: JetStreamContext
    sessions: async_sessionmaker[AsyncSession]
    mailer: Mailer
    sender: str
    operator: str | None
    retry_delay: float

    async def handle_batch(self, msgs: list[Msg]) -> None:
        for msg in msgs:
            try:
                problem = ConnectorProblem.model_validate_json(msg.data)
            except ValidationError as error:
                await dead_letter(
                    self.js,
                    msg,
                    stream=subjects.EVENTS_STREAM,
                    consumer=OPERATOR_CONSUMER,
                    error=f"invalid: {error}",
                )
                continue
            if not self.operator:
                log.error(
                    "connector problem, and no STAYHUMAN_OPERATOR_EMAIL to tell",
                    extra={
                        "account_id": problem.account_id,
                        "problem": problem.problem,
                        "detail": problem.detail,
                    },
                )
                await msg.ack()
                continue
            async with self.sessions() as session:
                names = await store.get_account_names(session=session, account_id=problem.account_id)
            message = compose_connector_problem(
                account_id=problem.account_id, account_handle=names[1], tenant_name=names[0],
                platform=problem.platform.value, problem=problem.problem, detail=problem.detail,
                since=problem.since, sender=self.sender, to=self.operator,
            )  # fmt: skip
            try:
                await with_heartbeat(msg, self.mailer.send(message))
            except MailError as error:
                log.warning("operator alert not delivered; retrying", extra={"error": str(error)})
                await msg.nak(delay=self.retry_delay)
                continue
            ALERTS.labels("email", "operator").inc()
            await msg.ack()
