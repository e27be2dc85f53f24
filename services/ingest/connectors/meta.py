"""Meta webhooks: Facebook Page feed and Messenger, Instagram comments, mentions and DMs.

One endpoint per Meta app. `X-Hub-Signature-256` is the hex HMAC-SHA256 of the raw
body (Meta escapes non-ASCII as \\uXXXX: the received bytes are hashed unchanged).
"""

import re
from collections.abc import Mapping
from typing import Any

from services.ingest.connectors.model import (
    ENTRY_ERRORS,
    Draft,
    MalformedPayload,
    Parsed,
    edit_version_of,
    from_epoch,
    hmac_sha256,
    items,
    load_json,
    mapping,
    platform_id,
    signature_matches,
)
from shared.events import Author, Direction, Kind, Platform

SIGNATURE_HEADER = "X-Hub-Signature-256"
_OBJECTS = {"page": Platform.facebook, "instagram": Platform.instagram}
# Meta's challenge is a number; echoing anything else would let the endpoint answer
# whatever a caller chooses, under our name.
_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def signature_valid(*, secret: str, body: bytes, header: str | None) -> bool:
    if not header or not header.startswith("sha256="):
        return False
    return signature_matches(hmac_sha256(secret, body).hex(), header.removeprefix("sha256=").strip().lower())


def challenge(params: Mapping[str, str], *, verify_token: str) -> str | None:
    """The subscription check: the challenge to echo back, or None (answer 403)."""
    if params.get("hub.mode") != "subscribe" or not _CHALLENGE.fullmatch(params.get("hub.challenge", "")):
        return None
    if not signature_matches(verify_token, params.get("hub.verify_token", "")):
        return None
    return params["hub.challenge"]


def parse(body: bytes) -> Parsed:
    """A delivery's drafts; an entry, message or change that is not in Meta's documented
    shape is rejected alone, so the rest of the delivery is stored."""
    document = load_json(body)
    if not isinstance(document, dict) or not isinstance(document.get("entry"), list):
        raise MalformedPayload("expected an object with an 'entry' list")
    platform = _OBJECTS.get(str(document.get("object")))
    parsed = Parsed()
    if platform is None:
        parsed.ignored.append(f"object {str(document.get('object'))[:64]!r}")
        return parsed
    for index, entry in enumerate(document["entry"]):
        where = f"entry[{index}]"
        try:
            if not isinstance(entry, dict) or "id" not in entry:
                raise ValueError("expected an object with an 'id'")
            account = platform_id(entry["id"], "id")
            messages = [*items(entry.get("messaging"), "messaging"), *items(entry.get("standby"), "standby")]
            changes = items(entry.get("changes"), "changes")
        except ENTRY_ERRORS as error:
            parsed.reject(where, error, entry)
            continue
        for number, event in enumerate(messages):
            since = len(parsed.drafts)
            try:
                _message(parsed, platform, account, mapping(event, "messaging event"))
            except ENTRY_ERRORS as error:
                parsed.reject(f"{where}.messaging[{number}]", error, event)
            parsed.mark(since, f"{where}.messaging[{number}]")
        for number, change in enumerate(changes):
            since = len(parsed.drafts)
            try:
                _change(parsed, platform, account, mapping(change, "change"), sent_at=entry.get("time", 0))
            except ENTRY_ERRORS as error:
                parsed.reject(f"{where}.changes[{number}]", error, change)
            parsed.mark(since, f"{where}.changes[{number}]")
    return parsed


def _message(parsed: Parsed, platform: Platform, account: str, event: dict[str, Any]) -> None:
    """Messenger and Instagram DMs, the brand's own (`is_echo`) included."""
    message = event.get("message")
    if not isinstance(message, dict) or "mid" not in message:
        parsed.ignored.append("messaging event without a message (delivery, read, reaction)")
        return
    sender = platform_id(mapping(event.get("sender"), "sender").get("id", ""), "sender.id")
    recipient = platform_id(mapping(event.get("recipient"), "recipient").get("id", ""), "recipient.id")
    outbound = bool(message.get("is_echo")) or sender == account
    person = recipient if outbound else sender
    parsed.drafts.append(
        Draft(
            platform=platform,
            platform_account_id=account,
            external_id=platform_id(message["mid"], "message.mid"),
            kind=Kind.dm,
            direction=Direction.outbound if outbound else Direction.inbound,
            thread_id=f"dm:{person}",
            author=Author(id=sender or "unknown"),
            text=str(message.get("text") or ""),
            created_at=from_epoch(event.get("timestamp", 0), milliseconds=True),
        )
    )


def _change(
    parsed: Parsed, platform: Platform, account: str, change: dict[str, Any], *, sent_at: float
) -> None:
    field, value = change.get("field"), mapping(change.get("value"), "value")
    if platform is Platform.facebook and field == "feed":
        _feed(parsed, account, value)
    elif platform is Platform.instagram and field in ("comments", "mentions"):
        _instagram_comment(parsed, account, field, value, sent_at=sent_at)
    else:
        parsed.ignored.append(f"change of field {str(field)[:64]!r}")


def _feed(parsed: Parsed, account: str, value: dict[str, Any]) -> None:
    if value.get("item") != "comment":
        parsed.ignored.append(f"feed item {str(value.get('item'))[:64]!r}")
        return
    verb = value.get("verb")
    if verb not in ("add", "edited", "remove", "hide"):
        parsed.ignored.append(f"feed verb {str(verb)[:64]!r}")
        return
    comment_id = platform_id(value["comment_id"], "comment_id")
    post_id = platform_id(value.get("post_id", ""), "post_id")
    parent = platform_id(value.get("parent_id") or post_id, "parent_id")
    author = mapping(value.get("from"), "from")
    text = str(value.get("message") or "")
    # A comment on the post opens a thread; a reply in it belongs to its top comment.
    thread = comment_id if parent == post_id else parent
    parsed.drafts.append(
        Draft(
            platform=Platform.facebook,
            platform_account_id=account,
            external_id=comment_id,
            edit_version=edit_version_of(text) if verb == "edited" else 0,
            kind=Kind.comment if parent == post_id else Kind.reply,
            direction=Direction.outbound if str(author.get("id")) == account else Direction.inbound,
            thread_id=f"comment:{thread}",
            parent_id=parent,
            author=Author(
                id=platform_id(author.get("id", "unknown"), "from.id"), name=str(author.get("name", ""))
            ),
            text=text,
            created_at=from_epoch(value.get("created_time", 0), milliseconds=False),
            url=f"https://www.facebook.com/{comment_id}",
            retracted=verb in ("remove", "hide"),
        )
    )


def _instagram_comment(
    parsed: Parsed, account: str, field: str, value: dict[str, Any], *, sent_at: float
) -> None:
    author = mapping(value.get("from"), "from")
    comment_id = platform_id(value.get("id") or value.get("comment_id") or "", "id")
    if not comment_id:
        parsed.ignored.append(f"instagram {field} without an id")
        return
    parent = value.get("parent_id")
    if parent is not None:
        parent = platform_id(parent, "parent_id")
    media = platform_id(
        mapping(value.get("media"), "media").get("id") or value.get("media_id") or "", "media.id"
    )
    thread = parent if parent else comment_id
    # Instagram comment webhooks carry no creation time: the entry's delivery time is the closest.
    created = value.get("created_time") or sent_at
    parsed.drafts.append(
        Draft(
            platform=Platform.instagram,
            platform_account_id=account,
            external_id=comment_id,
            kind=Kind.mention if field == "mentions" else (Kind.reply if parent else Kind.comment),
            direction=Direction.outbound if str(author.get("id")) == account else Direction.inbound,
            thread_id=f"comment:{thread}",
            parent_id=parent if parent else media or None,
            author=Author(
                id=platform_id(author.get("id", "unknown"), "from.id"), handle=str(author.get("username", ""))
            ),
            text=str(value.get("text") or ""),
            created_at=from_epoch(created, milliseconds=False),
        )
    )
