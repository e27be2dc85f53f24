"""Telling people a conversation is now theirs, on the channels they chose for it.

Nobody gets these unless they ask (`notify: {assigned: [push]}`): most people
work from their inbox of assignments. Each assignment is told once, claimed like
any alert, and retried by redelivery when a channel fails.
"""

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import apprise
from nats.aio.msg import Msg
from pydantic import ValidationError
from sqlalchemy import select

from services.notify import store
from services.notify.email import PLATFORM_NAMES, _domain
from services.notify.handlers import ALERTS, AlertSender
from services.notify.push import Subscription, subscriptions_of
from services.notify.timers import TimerPayload
from shared import subjects
from shared.db.core import CONVERSATIONS, PEOPLE, TENANTS, fetch_rows
from shared.db.session import transaction
from shared.events import ConversationAssigned, utcnow
from shared.jetstream import dead_letter

log = logging.getLogger(__name__)

ASSIGNED_CONSUMER = "notify-assignments"
STALE = timedelta(minutes=10)


@dataclass
class AssignmentNotices:
    sender: AlertSender

    async def handle_batch(self, msgs: list[Msg]) -> None:
        for msg in msgs:
            try:
                event = ConversationAssigned.model_validate_json(msg.data)
            except ValidationError as error:
                await dead_letter(
                    self.sender.js,
                    msg,
                    stream=subjects.EVENTS_STREAM,
                    consumer=ASSIGNED_CONSUMER,
                    error=f"invalid: {error}",
                )
                continue
            try:
                done = await self._notice(event)
            except Exception:
                log.warning("assignment notice failed; it will be retried", exc_info=True)
                done = False
            if done:
                await msg.ack()
            else:
                await msg.nak(delay=self.sender.retry_initial.total_seconds())

    async def _notice(self, event: ConversationAssigned) -> bool:
        """True when handled (sent, or nothing to send); False to be retried."""
        owner = event.owner_id
        if owner is None or owner == event.previous_owner_id:
            return True
        if utcnow() - event.assigned_at > STALE:
            return True  # not news any more (a backlog, a consumer created on an old stream)
        sessions = self.sender.sessions
        async with sessions() as session:
            preferences, sealed = await store.get_preferences(session=session, people=[owner])
        channels = preferences[owner].for_kind("assigned") if owner in preferences else ()
        if not channels:
            return True
        step = f"assigned-{event.event_id[:12]}"
        async with transaction(sessions) as session:
            claim = await store.claim_alert(
                session=session,
                tenant_id=event.tenant_id,
                conversation_id=event.conversation_id,
                version=0,
                step=step,
                lease=self.sender.send_timeout * 2 + timedelta(seconds=30),
            )
        if claim.outcome != "claimed":
            return claim.outcome == "done"
        async with sessions() as session:
            found = await fetch_rows(
                session,
                select(
                    CONVERSATIONS.c.platform,
                    CONVERSATIONS.c.author_name,
                    CONVERSATIONS.c.last_inbound_text,
                    CONVERSATIONS.c.last_inbound_url,
                    TENANTS.c.name.label("tenant_name"),
                    PEOPLE.c.name.label("person_name"),
                    PEOPLE.c.email,
                )
                .select_from(CONVERSATIONS)
                .join(TENANTS, TENANTS.c.id == CONVERSATIONS.c.tenant_id)
                .join(PEOPLE, PEOPLE.c.id == owner)
                .where(CONVERSATIONS.c.id == event.conversation_id),
            )
            subscriptions = await subscriptions_of(session=session, people=[owner])
        if not found:
            return True
        row = found[0]
        platform = PLATFORM_NAMES.get(row.platform, row.platform)
        title = f"[{row.tenant_name}] New on {platform} for you: {row.author_name}"
        body = f"{row.author_name}: {row.last_inbound_text[:300]}\n\nWhy you: {event.reason}"
        problems = []
        for channel in channels:
            try:
                await self._send(
                    channel, event, row, title, body, subscriptions.get(owner, []), sealed.get(owner)
                )
                ALERTS.labels(channel, "sent").inc()
            except Exception as error:
                ALERTS.labels(channel, "failed").inc()
                problems.append(f"{channel}: {type(error).__name__}: {error}")
        async with transaction(sessions) as session:
            await store.finish_alert(
                session=session,
                fired=_fired(event, step),
                status="retrying" if problems else "sent",
                attempts=claim.attempts + 1,
                recipients=f"{owner}:{','.join(channels)}",
                error="; ".join(problems),
            )
        return not problems

    async def _send(
        self,
        channel: str,
        event: ConversationAssigned,
        row: Any,
        title: str,
        body: str,
        subscriptions: list[Subscription],
        sealed: str | None,
    ) -> None:
        sender = self.sender
        if channel == "email":
            message = EmailMessage()
            message["From"] = sender.sender
            message["To"] = f"{row.person_name} <{row.email}>"
            message["Subject"] = title
            message["Date"] = format_datetime(utcnow())
            message["Message-ID"] = f"<assigned.{event.event_id}@{_domain(sender.sender)}>"
            message["X-StayHuman-Alert"] = "assigned"
            url = row.last_inbound_url
            message.set_content(f"{body}\n\nOpen the conversation: {url or '(no link from the platform)'}\n")
            await asyncio.wait_for(sender.mailer.send(message), sender.send_timeout.total_seconds() + 5)
        elif channel == "push":
            if not subscriptions or sender.push is None:
                return  # nothing registered: nothing to tell on this channel
            await sender.push.send(subscriptions, {"title": title, "body": body, "step": "assigned"})
        elif channel == "apprise":
            notifier = apprise.Apprise()
            for url in json.loads(sender.box.open(sealed or "[]")):
                notifier.add(url)
            if not await notifier.async_notify(title=title, body=body):
                raise RuntimeError("no Apprise target took it")


def _fired(event: ConversationAssigned, step: str) -> TimerPayload:
    return TimerPayload(
        tenant_id=event.tenant_id,
        conversation_id=event.conversation_id,
        deadline_version=0,
        step=step,
        at=event.assigned_at,
    )
