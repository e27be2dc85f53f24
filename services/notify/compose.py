"""What notify's messages say and to whom: alerts, digests, assignment notices and operator
alerts, as channel-neutral `Message`s. Pure."""

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.notify.chain import PlannedAlert, Target
from services.notify.ports import AssignmentContext, Message, OverdueContext, Recipient
from services.notify.templates import Templates, is_web_link
from shared.events import AlertKind

PLATFORM_NAMES = {
    "facebook": "Facebook",
    "instagram": "Instagram",
    "x": "X",
    "mastodon": "Mastodon",
    "bluesky": "Bluesky",
    "youtube": "YouTube",
    "other": "their platform",
}


def safe_url(url: str | None) -> str:
    """The platform's link to a message if it is an http or https URL; else empty."""
    return url if url and is_web_link(url) else ""


def waited(delta: timedelta) -> str:
    """'47 seconds', '12 minutes', '2 hours 5 minutes', '3 days 4 hours'."""
    seconds = max(0, int(delta.total_seconds()))
    units = (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))
    parts = []
    for name, size in units:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {name}{'s' if count != 1 else ''}")
        if len(parts) == 2:
            break
    return " ".join(parts) or "0 seconds"


def recipients(
    context: OverdueContext, target: Target = Target.owner, person_id: str | None = None
) -> list[Recipient]:
    """Who an alert of a chain's step goes to. The owner; with nobody assigned yet, everyone in
    the team. A lead, manager or named person who is not there falls back the same way."""
    fallback = [context.owner] if context.owner else list(context.team)
    match target:
        case Target.team:
            return list(context.team) or fallback
        case Target.lead:
            return [context.lead] if context.lead else list(context.team)
        case Target.manager:
            return (
                [context.manager]
                if context.manager
                else ([context.lead] if context.lead else list(context.team))
            )
        case Target.person:
            named = context.people.get(person_id or "")
            return [named] if named else recipients(context, Target.manager)
    return fallback


def alert_values(
    context: OverdueContext,
    kind: str,
    step: str,
    to: list[Recipient],
    now: datetime,
    *,
    ack_url: str = "",
    push_url: str = "",
) -> dict[str, str]:
    """What the templates say about one alert."""
    platform = PLATFORM_NAMES.get(context.platform, context.platform)
    single = to[0] if len(to) == 1 else None
    open_url = safe_url(context.url)
    if kind == "escalation":
        owner = context.owner.name if context.owner else "nobody yet"
        why = f"It is owned by {owner}; you are told because nobody has answered in time."
    elif context.owner:
        why = "This conversation is assigned to you."
    else:
        why = "Nobody could take this conversation yet, so the whole team is told."
    return {
        "tenant": context.tenant_name,
        "platform": platform,
        "author": context.author_name,
        "text": context.text or "(no text)",
        "quoted": "\n".join(f"> {line}" for line in (context.text or "(no text)").splitlines()),
        "waited": waited(now - context.waiting_since),
        "due_at": context.due_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "greeting": f"Hi {single.name}," if single else "Hi team,",
        "why": why,
        "open_url": open_url,
        "open_link": (
            f"Open the conversation: {open_url}"
            if open_url
            else f"The platform gave no link to this message: answer it on {platform} ({context.account_handle})."
        ),
        "ack_url": ack_url,
        "push_url": push_url or "(ask your operator for your push link)",
        "conversation_id": context.conversation_id,
        "account": context.account_id,
        "step": step,
        "recipients": ", ".join(r.name for r in to),
    }


def standby(context: OverdueContext, later: Sequence[PlannedAlert]) -> list[str]:
    """The people of the chain's later entries, in order: who may take an alert of someone who
    must not be woken."""
    return [
        person.id
        for entry in later
        for person in recipients(context, entry.notify, entry.person_id)
        if person.id
    ]


def alert_key(step: str, conversation_id: str, version: int) -> str:
    """Deterministic, so a resend after a crash is recognisably the same message."""
    return f"{'overdue' if step == 'breach' else step}.{conversation_id}.v{version}"


def compose_alert(
    context: OverdueContext,
    *,
    kind: AlertKind,
    step: str,
    to: list[Recipient],
    now: datetime,
    ack_url: str,
    templates: Templates,
    push_url: str = "",
) -> Message:
    """One alert of a timeline from the tenant's templates."""
    values = alert_values(context, kind, step, to, now, ack_url=ack_url, push_url=push_url)
    rendered = templates.render(tenant_id=context.tenant_id, kind=kind, values=values)
    return Message(
        kind=kind,
        to=tuple(to),
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        summary=f"{context.author_name}: {context.text[:200]}",
        key=alert_key(step, context.conversation_id, context.deadline_version),
        step=step,
        conversation_id=context.conversation_id,
        url=safe_url(context.url),
        ack_url=ack_url,
        sent_at=now,
    )


def compose_assignment(
    context: AssignmentContext, *, conversation_id: str, event_id: str, reason: str, now: datetime
) -> Message:
    """To a person who asked to hear of it: a conversation is now theirs."""
    platform = PLATFORM_NAMES.get(context.platform, context.platform)
    title = f"[{context.tenant_name}] New on {platform} for you: {context.author_name}"
    body = f"{context.author_name}: {context.text[:300]}\n\nWhy you: {reason}"
    return Message(
        kind=AlertKind.assignment,
        to=(context.person,),
        subject=title,
        text=f"{body}\n\nOpen the conversation: {context.url or '(no link from the platform)'}\n",
        summary=body,
        key=f"assigned.{event_id}",
        step="assigned",
        conversation_id=conversation_id,
        sent_at=now,
    )


def compose_connector_problem(
    *,
    account_id: str,
    account_handle: str,
    tenant_name: str,
    platform: str,
    problem: str,
    detail: str,
    since: datetime,
    to: str,
) -> Message:
    """To the operator: a connector stopped delivering, so nobody sees what it misses."""
    name = PLATFORM_NAMES.get(platform, platform)
    what = "keeps failing" if problem == "failing" else "has gone silent"
    text = f"""The {name} account {account_handle} ({account_id}) of {tenant_name} {what} since {since.strftime("%Y-%m-%d %H:%M:%S UTC")}.

While it does, nothing its people write reaches anyone in StayHuman.

{detail}

`stayhuman accounts` shows every connector's state; a revoked or expired token
needs a new one in the configuration (`stayhuman apply`).

StayHuman
"""
    return Message(
        kind=AlertKind.connector,
        to=(Recipient("", to),),
        subject=f"[StayHuman] {tenant_name}: the {name} connector of {account_handle} {what}",
        text=text,
        summary=text,
        key=f"connector.{account_id}.{problem}.{int(since.timestamp())}",
        step=problem,
        sent_at=since,
    )


@dataclass(frozen=True)
class DigestItem:
    context: OverdueContext
    kind: str
    step: str
    ack_url: str


_HEADLINES = {"warning": "Due soon", "breach": "Overdue", "escalation": "Escalated"}


def digest_lines(items: list[DigestItem], now: datetime) -> list[str]:
    lines = []
    for item in items:
        c = item.context
        platform = PLATFORM_NAMES.get(c.platform, c.platform)
        lines.append(
            f"{_HEADLINES.get(item.kind, item.kind)} [{c.tenant_name}] on {platform}: {c.author_name} has waited "
            f'{waited(now - c.waiting_since)}: "{(c.text or "")[:120]}"'
        )
    return lines


def digest_title(items: list[DigestItem]) -> str:
    """What a burst's message is about: how many conversations, and of which tenants."""
    tenants = sorted({item.context.tenant_name for item in items})
    n = len(items)
    about = f"{n} conversation needs you" if n == 1 else f"{n} conversations need you"
    return f"[{', '.join(tenants) or 'StayHuman'}] {about}"


def compose_digest(items: list[DigestItem], *, to: Recipient, now: datetime) -> Message:
    """Many alerts for one person in one message: a burst, or the warnings' digest."""
    counts: dict[str, int] = {}
    for item in items:
        counts[item.kind] = counts.get(item.kind, 0) + 1
    summary = ", ".join(f"{n} {_HEADLINES.get(kind, kind).lower()}" for kind, n in sorted(counts.items()))
    lines = digest_lines(items, now)
    need = (
        "1 conversation needs an answer:"
        if len(items) == 1
        else f"{len(items)} conversations need an answer:"
    )
    text = [f"Hi {to.name},", "", need, ""]
    for line, item in zip(lines, items, strict=True):
        c = item.context
        link = (
            safe_url(c.url) or f"{c.account_handle} on {PLATFORM_NAMES.get(c.platform, c.platform)} (no link)"
        )
        text += [f"- {line}", f"  open: {link}", f"  I'm on it: {item.ack_url}", ""]
    text += ["StayHuman"]
    rows = []
    for line, item in zip(lines, items, strict=True):
        url = safe_url(item.context.url)
        opened = f'<a href="{html.escape(url)}">Open</a> &middot; ' if url else ""
        ack = f'<a href="{html.escape(item.ack_url)}">I\'m on it</a>' if is_web_link(item.ack_url) else ""
        rows.append(f"<li>{html.escape(line)}<br>{opened}{ack}</li>")
    return Message(
        kind=AlertKind.digest,
        to=(to,),
        subject=f"{digest_title(items)}: {summary}",
        text="\n".join(text) + "\n",
        html=f"<!doctype html><html><body style='font-family: sans-serif'><p>Hi {html.escape(to.name)},</p>"
        f"<p>{html.escape(need)}</p><ul>{''.join(rows)}</ul></body></html>",
        summary="\n".join(lines[:10]),
        key=f"digest.{to.id}.{int(now.timestamp())}",
        step="digest",
        sent_at=now,
    )
