"""The channels behind `ports.Channel`, each written once: email over SMTP, Web Push to each of
a person's subscriptions, and Apprise URLs (ntfy, Slack, Teams, Telegram, Pushover ...)."""

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Protocol

import apprise
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.notify.mailer import MailError
from services.notify.ports import Delivered, DeliveryError, Message
from services.notify.push import PushSender, subscriptions_of
from shared.db.core import PEOPLE, fetch_rows
from shared.events import AlertChannel
from shared.secrets import SecretBox


def sender_domain(sender: str) -> str:
    return parseaddr(sender)[1].partition("@")[2] or "stayhuman.localhost"


def email_of(message: Message, *, sender: str) -> EmailMessage:
    """A message as a multipart email (plain text, and HTML when it has some)."""
    email = EmailMessage()
    email["From"] = sender
    email["To"] = ", ".join(f"{r.name} <{r.email}>" if r.name else r.email for r in message.to)
    email["Subject"] = message.subject
    if message.key:
        email["Message-ID"] = f"<{message.key}@{sender_domain(sender)}>"
    email["Date"] = format_datetime(message.sent_at)
    if message.conversation_id and message.kind != "assignment":
        email["X-StayHuman-Conversation"] = message.conversation_id
    if message.step and message.kind != "connector":
        email["X-StayHuman-Alert"] = message.step
    email.set_content(message.text)
    if message.html:
        email.add_alternative(message.html, subtype="html")
    return email


class Mailer(Protocol):
    """SMTP in production (`mailer.SmtpMailer`)."""

    async def send(self, message: EmailMessage) -> None: ...


@dataclass
class EmailChannel:
    mailer: Mailer
    sender: str
    timeout: timedelta
    name: AlertChannel = AlertChannel.email

    async def send(self, message: Message) -> Delivered:
        email = email_of(message, sender=self.sender)
        try:
            await asyncio.wait_for(self.mailer.send(email), self.timeout.total_seconds() + 5)
        except (MailError, TimeoutError) as error:
            raise DeliveryError(f"{type(error).__name__}: {error}") from error
        return Delivered(str(email["Message-ID"] or ""))


@dataclass
class PushChannel:
    """Web Push to every device the person registered."""

    push: PushSender | None
    sessions: Callable[[], async_sessionmaker[AsyncSession]]
    name: AlertChannel = AlertChannel.push

    async def send(self, message: Message) -> Delivered:
        people = [r.id for r in message.to if r.id]
        async with self.sessions()() as session:
            found = await subscriptions_of(session=session, people=people)
        mine = [s for person in people for s in found.get(person, [])]
        if not mine:
            raise DeliveryError("no push subscription registered", permanent=True)
        if self.push is None:
            raise DeliveryError("Web Push is not set up", permanent=True)
        payload = {
            "title": message.subject,
            "body": message.summary or message.text,
            "url": message.url,
            "ack_url": message.ack_url,
            "conversation_id": message.conversation_id,
            "step": message.step,
        }
        try:
            taken = await self.push.send(mine, payload)
        except Exception as error:
            raise DeliveryError(f"{type(error).__name__}: {error}") from error
        return Delivered(f"{taken} of {len(mine)} devices")


@dataclass
class AppriseChannel:
    """The person's Apprise URLs, sealed in the database by `apply`."""

    box: SecretBox
    sessions: Callable[[], async_sessionmaker[AsyncSession]]
    name: AlertChannel = AlertChannel.apprise

    async def send(self, message: Message) -> Delivered:
        people = [r.id for r in message.to if r.id]
        async with self.sessions()() as session:
            rows = await fetch_rows(
                session, select(PEOPLE.c.id, PEOPLE.c.apprise_urls).where(PEOPLE.c.id.in_(people))
            )
        urls: list[str] = [url for row in rows for url in json.loads(self.box.open(row.apprise_urls or "[]"))]
        if not urls:
            raise DeliveryError("no Apprise URL configured", permanent=True)
        notifier = apprise.Apprise()
        for url in urls:
            notifier.add(url)
        if not await notifier.async_notify(title=message.subject, body=message.text):
            raise DeliveryError("no Apprise target took it")
        return Delivered(f"{len(urls)} targets")
