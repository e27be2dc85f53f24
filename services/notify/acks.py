"""The acknowledge link: "I'm on it", served by notify until the operator API exists.

The link in an alert carries a token sealed with the installation's secret key
that names the conversation, the deadline version and who was alerted. Opening
it shows what will be acknowledged and a button: link scanners of mail systems
open links on their own, and must not acknowledge anything. The button's POST
records the acknowledgement, which stops the escalation of that deadline (the
reply is still due: the clock runs on).
"""

import html
import logging
from collections.abc import Callable

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.notify import store
from services.notify.chain import Chain
from services.notify.scheduler import TimerScheduler
from services.notify.timers import next_timer
from shared.db.session import transaction
from shared.secrets import SecretBox

log = logging.getLogger(__name__)

TOKEN_MAX_AGE = 14 * 24 * 3600  # an alert's link stays usable for two weeks


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        f"<body style='font-family: sans-serif'><h1>{html.escape(title)}</h1>{body}</body></html>",
        status_code=status,
    )


def _read(box: SecretBox, token: str) -> tuple[str, int, str] | None:
    text = box.read_token(token, max_age=TOKEN_MAX_AGE)
    if text is None:
        return None
    conversation_id, _, rest = text.partition(":")
    version, _, who = rest.partition(":")
    if not version.isdigit():
        return None
    return conversation_id, int(version), who


Parts = tuple[async_sessionmaker[AsyncSession], TimerScheduler]


def acks_router(*, box: SecretBox, parts: Callable[[], Parts | None]) -> APIRouter:
    """`parts`: the database sessions and the timer scheduler, once notify has started."""
    router = APIRouter()

    @router.get("/ack/{token}", response_class=HTMLResponse)
    async def confirm(token: str) -> HTMLResponse:
        found = _read(box, token)
        if found is None:
            return _page("This link is not valid", "<p>It may be damaged or too old.</p>", 404)
        conversation_id, _version, _who = found
        return _page(
            "Acknowledge this alert?",
            f"<p>Conversation <code>{html.escape(conversation_id)}</code>: no one further up the "
            "escalation chain will be alerted for this deadline. The reply is still due.</p>"
            f"<form method='post' action='/ack/{html.escape(token)}'>"
            "<button type='submit'>I'm on it</button></form>",
        )

    @router.post("/ack/{token}", response_class=HTMLResponse)
    async def acknowledge(token: str) -> HTMLResponse:
        found = _read(box, token)
        if found is None:
            return _page("This link is not valid", "<p>It may be damaged or too old.</p>", 404)
        conversation_id, version, who = found
        ready = parts()
        if ready is None:
            return _page("Not ready", "<p>Notify is starting; try again in a moment.</p>", 503)
        sessions, scheduler = ready
        async with transaction(sessions) as session:
            outcome = await store.acknowledge(
                session=session, conversation_id=conversation_id, version=version, person_id=who
            )
        if outcome == "outdated":
            return _page(
                "Nothing to acknowledge any more",
                "<p>The conversation moved on since this alert (answered, paused, resolved or "
                "given to someone else).</p>",
                410,
            )
        if outcome == "acknowledged":
            await _rearm(sessions, scheduler, conversation_id)
            log.info(
                "alert acknowledged",
                extra={"conversation_id": conversation_id, "deadline_version": version, "by": who},
            )
        return _page("Acknowledged", "<p>Thank you. No further escalation for this deadline.</p>")

    return router


async def _rearm(
    sessions: async_sessionmaker[AsyncSession], scheduler: TimerScheduler, conversation_id: str
) -> None:
    """Put the next alert that an acknowledgement leaves (if any) on the conversation's timer,
    so that a silenced escalation step does not even fire."""
    async with sessions() as session:
        deadline = (await store.get_deadlines(session=session, ids=[conversation_id])).get(conversation_id)
        chains = await store.get_chains(session=session, ids=[conversation_id])
    if deadline is None or deadline.due_at is None:
        return
    timer = next_timer(deadline, chains.get(conversation_id, Chain()), after_step=deadline.last_step)
    if timer is None:
        await scheduler.cancel([(deadline.tenant_id, conversation_id)])
    else:
        await scheduler.arm([timer], again=True)
