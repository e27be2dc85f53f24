"""The acknowledge link: "I'm on it", served by notify until the operator API exists.

The link in an alert carries a token signed with the installation's link key that
names the conversation, the deadline version and who was alerted; every notify
replica accepts the links of the others, since they share the key. Opening it shows
what will be acknowledged and a button: link scanners of mail systems open links on
their own, and must not acknowledge anything. The button's POST applies the
acknowledgement, which stops the escalation of that deadline (the reply is still due:
the clock runs on).
"""

import html
import logging
import re
from typing import Literal, Protocol

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from shared.secrets import LinkSigner

log = logging.getLogger(__name__)

TOKEN_MAX_AGE = 14 * 24 * 3600  # an alert's link stays usable for two weeks

_ACK = re.compile(r"([0-9a-f]{32}):([0-9]{1,18}):([a-z0-9][a-z0-9_-]{0,62}|team)")


def ack_token(signer: LinkSigner, *, conversation_id: str, version: int, who: str) -> str:
    return signer.issue("ack", f"{conversation_id}:{version}:{who}")


def read_ack_token(signer: LinkSigner, token: str) -> tuple[str, int, str] | None:
    """The conversation, deadline version and person an acknowledge token names, or None."""
    text = signer.read(token, purpose="ack", max_age=TOKEN_MAX_AGE)
    found = _ACK.fullmatch(text) if text is not None else None
    if found is None:
        return None
    return found[1], int(found[2]), found[3]


Acknowledged = Literal["acknowledged", "already", "outdated"]


class NotifyStarting(RuntimeError):
    """notify is starting: nothing can be acknowledged yet."""


class Acknowledger(Protocol):
    """Applies an acknowledgement: in notify, the same `Acknowledge` command its consumer applies
    (`consumers.CommandAcknowledger`), so the page and the bus give the same events."""

    async def acknowledge(self, *, conversation_id: str, version: int, person_id: str) -> Acknowledged: ...


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        f"<body style='font-family: sans-serif'><h1>{html.escape(title)}</h1>{body}</body></html>",
        status_code=status,
    )


def _invalid() -> HTMLResponse:
    return _page("This link is not valid", "<p>It may be damaged or too old.</p>", 404)


def acks_router(*, signer: LinkSigner, acknowledger: Acknowledger) -> APIRouter:
    router = APIRouter()

    @router.get("/ack/{token}", response_class=HTMLResponse)
    async def confirm(token: str) -> HTMLResponse:
        found = read_ack_token(signer, token)
        if found is None:
            return _invalid()
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
        found = read_ack_token(signer, token)
        if found is None:
            return _invalid()
        conversation_id, version, who = found
        try:
            outcome = await acknowledger.acknowledge(
                conversation_id=conversation_id, version=version, person_id=who
            )
        except NotifyStarting:
            return _page("Not ready", "<p>Notify is starting; try again in a moment.</p>", 503)
        if outcome == "outdated":
            return _page(
                "Nothing to acknowledge any more",
                "<p>The conversation moved on since this alert (answered, paused, resolved or "
                "given to someone else).</p>",
                410,
            )
        if outcome == "acknowledged":
            log.info(
                "alert acknowledged",
                extra={"conversation_id": conversation_id, "deadline_version": version, "by": who},
            )
        return _page("Acknowledged", "<p>Thank you. No further escalation for this deadline.</p>")

    return router
