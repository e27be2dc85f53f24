"""The dev mailbox: what the local SMTP sink of `stayhuman up` received, as a page."""

import html
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse


def read_mailbox(folder: Path) -> list[dict[str, Any]]:
    """Messages of a Maildir, newest first, as dictionaries of headers and plain-text body."""
    files = [path for sub in ("new", "cur") if (folder / sub).is_dir() for path in (folder / sub).iterdir()]
    files.sort(key=lambda path: path.stat().st_mtime, reverse=True)
    messages = []
    for path in files:
        message = message_from_bytes(path.read_bytes(), policy=default)
        body = message.get_body(preferencelist=("plain",)) if isinstance(message, EmailMessage) else None
        headers = {
            name: str(message[name.title()] or "").strip() for name in ("from", "to", "subject", "date")
        }
        content = body.get_content() if body is not None else ""
        messages.append(
            {
                **headers,
                "message_id": str(message["Message-ID"] or "").strip(),
                "body": content.replace("\r\n", "\n"),
            }
        )
    return messages


def render_page(messages: list[dict[str, Any]]) -> str:
    rows = []
    for m in messages:
        rows.append(
            f"""<article class="mail">
  <h2>{html.escape(m["subject"])}</h2>
  <p class="meta">From {html.escape(m["from"])} to {html.escape(m["to"])}, {html.escape(m["date"])}</p>
  <pre>{html.escape(m["body"])}</pre>
</article>"""
        )
    empty = "<p>No mail yet. Overdue alerts appear here when a conversation waits past its deadline.</p>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>StayHuman dev mailbox ({len(messages)})</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 52rem; color: #1d2733; }}
.mail {{ border: 1px solid #d4dae1; border-radius: 8px; padding: 1rem 1.25rem; margin: 1rem 0; }}
.mail h2 {{ font-size: 1.05rem; margin: 0 0 .25rem; }}
.meta {{ color: #5b6775; font-size: .85rem; margin: 0 0 .75rem; }}
pre {{ white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: .85rem; }}
</style></head>
<body><h1>Dev mailbox</h1>
<p class="notice"><strong>For local development only.</strong> <code>stayhuman up</code> shows this
page because no SMTP server is set (<code>STAYHUMAN_SMTP_HOST</code>): the alerts below were sent to
nobody. Set an SMTP server to deliver them; a service started on its own never serves this page.</p>
<p>{len(messages)} message{"s" if len(messages) != 1 else ""} received by the local SMTP sink.</p>
{"".join(rows) or empty}
</body></html>"""


def mailbox_router(folder: Path) -> APIRouter:
    router = APIRouter(tags=["dev mailbox"])

    @router.get("/mailbox", response_class=HTMLResponse)
    async def page() -> str:
        return render_page(read_mailbox(folder))

    @router.get("/mailbox.json")
    async def as_json() -> list[dict[str, Any]]:
        return read_mailbox(folder)

    return router
