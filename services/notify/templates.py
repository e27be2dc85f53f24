"""Alert templates: a subject, a plain-text and an HTML body per kind of alert.

Built in below; an operator overrides any of them with files in
`STAYHUMAN_TEMPLATES_DIR`: `<kind>.subject`, `<kind>.txt`, `<kind>.html` for every
tenant, or under `<tenant id>/` for one tenant. Templates use `$name`
placeholders (Python's string.Template); in HTML every value is escaped.

Placeholders: tenant, platform, author, text, quoted (the text as a quote),
waited, due_at, greeting, why, open_url, open_link, ack_url, push_url,
conversation_id, account, step, recipients.

Links: `open_url` is the platform's link to the message only when it is an http or
https URL, else empty; `open_link` says where to answer it: in text a line with the
link (or that the platform gave none), in HTML a link (or the same words, no link).
In HTML every `*_url` value that is not an http or https URL is empty, so nothing
else is ever rendered as a link.
"""

import html
import string
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

KINDS = ("warning", "breach", "escalation")

_SUBJECTS = {
    "warning": "[$tenant] Due soon on $platform: $author has waited $waited",
    "breach": "[$tenant] Overdue on $platform: $author has waited $waited",
    "escalation": "[$tenant] Escalated: $author on $platform has waited $waited",
}

_LEADS = {
    "warning": "$author wrote to $tenant on $platform $waited ago. The reply is due at $due_at.",
    "breach": (
        "$author wrote to $tenant on $platform $waited ago and is still waiting for an answer.\n"
        "The reply was due at $due_at."
    ),
    "escalation": (
        "$author wrote to $tenant on $platform $waited ago and is still waiting: the reply was due at\n"
        "$due_at and nobody has answered. You are told as the next step of the escalation ($step)."
    ),
}

_TEXT = """$greeting

{lead}

$quoted

$open_link

I'm on it (stops the escalation): $ack_url

$why
Alerts as notifications on your phone or computer: $push_url
Conversation $conversation_id on account $account.

StayHuman
"""

_HTML = """<!doctype html>
<html><body style="font-family: sans-serif; line-height: 1.4">
<p>$greeting</p>
<p>{lead}</p>
<blockquote style="border-left: 3px solid #ccc; margin: 0; padding-left: 1em">$text</blockquote>
<p>$open_link &middot; <a href="$ack_url">I'm on it</a>
(stops the escalation; the reply is still due)</p>
<p style="color: #666">$why<br>Conversation $conversation_id on account $account.</p>
</body></html>
"""


def is_web_link(url: str) -> bool:
    """True for an http or https URL with a host: the only links StayHuman renders."""
    if not url or not url.isprintable() or any(c.isspace() for c in url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def open_link_html(values: dict[str, str]) -> str:
    """Where to answer, in HTML: a link to the message, or the words of `open_link` alone."""
    url = values.get("open_url", "")
    if is_web_link(url):
        return f'<a href="{html.escape(url)}">Open the conversation</a>'
    return html.escape(values.get("open_link", ""))


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


class Templates:
    def __init__(self, folder: Path | None = None) -> None:
        self._folder = folder

    def _source(self, tenant_id: str, kind: str, suffix: str) -> str | None:
        if self._folder is None:
            return None
        for candidate in (self._folder / tenant_id / f"{kind}.{suffix}", self._folder / f"{kind}.{suffix}"):
            if candidate.is_file():
                return candidate.read_text()
        return None

    def render(self, *, tenant_id: str, kind: str, values: dict[str, str]) -> Rendered:
        if kind not in KINDS:
            raise ValueError(f"no template for {kind!r}")
        lead_text = _LEADS[kind]
        lead_html = html.escape(lead_text).replace("\n", "<br>").replace("&#x27;", "'")
        subject = self._source(tenant_id, kind, "subject") or _SUBJECTS[kind]
        text = self._source(tenant_id, kind, "txt") or _TEXT.format(lead=lead_text)
        page = self._source(tenant_id, kind, "html") or _HTML.format(lead=lead_html)
        escaped = {
            name: html.escape(value if not name.endswith("_url") or is_web_link(value) else "")
            for name, value in values.items()
        }
        escaped["open_link"] = open_link_html(values)
        return Rendered(
            subject=" ".join(string.Template(subject).safe_substitute(values).split()),
            text=string.Template(text).safe_substitute(values),
            html=string.Template(page).safe_substitute(escaped),
        )
