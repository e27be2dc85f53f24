"""Meta webhooks: Facebook Page feed and Messenger, Instagram comments, mentions and DMs.

One endpoint per Meta app. `X-Hub-Signature-256` is the hex HMAC-SHA256 of the raw
body (Meta escapes non-ASCII as \\uXXXX: the received bytes are hashed unchanged).
"""

import hmac
import json
from collections.abc import Mapping
from typing import Any

from services.ingest.connectors.model import (
    Draft,
    MalformedPayload,
    Parsed,
    edit_version_of,
    from_epoch,
    hmac_sha256,
)
from shared.events import Author, Direction, Kind, Platform

SIGNATURE_HEADER = "X-Hub-Signature-256"
_OBJECTS = {"page": Platform.facebook, "instagram": Platform.instagram}


def signature_valid(*, secret: str, body: bytes, header: str | None) -> bool:
    if not header or not header.startswith("sha256="):
        return False
    return hmac.compare_digest(
        hmac_sha256(secret, body).hex(), header.removeprefix("sha256=").strip().lower()
    )


def challenge(params: Mapping[str, str], *, verify_token: str) -> str | None:
    """The subscription check: the challenge to echo back, or None (answer 403)."""
    if params.get("hub.mode") != "subscribe" or "hub.challenge" not in params:
        return None
    if not hmac.compare_digest(params.get("hub.verify_token", "").encode(), verify_token.encode()):
        return None
    return params["hub.challenge"]


def parse(body: bytes) -> Parsed:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MalformedPayload(f"body is not JSON: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("entry"), list):
        raise MalformedPayload("expected an object with an 'entry' list")
    platform = _OBJECTS.get(str(document.get("object")))
    parsed = Parsed()
    if platform is None:
        parsed.ignored.append(f"object {document.get('object')!r}")
        return parsed
    for index, entry in enumerate(document["entry"]):
        if not isinstance(entry, dict) or "id" not in entry:
            raise MalformedPayload(f"entry[{index}] has no 'id'")
        account = str(entry["id"])
        for event in [*entry.get("messaging", []), *entry.get("standby", [])]:
            _message(parsed, platform, account, event)
        for change in entry.get("changes", []):
            _change(parsed, platform, account, change, sent_at=entry.get("time", 0))
    return parsed


def _message(parsed: Parsed, platform: Platform, account: str, event: dict[str, Any]) -> None:
    """Messenger and Instagram DMs, the brand's own (`is_echo`) included."""
    message = event.get("message")
    if not isinstance(message, dict) or "mid" not in message:
        parsed.ignored.append("messaging event without a message (delivery, read, reaction)")
        return
    sender = str(event.get("sender", {}).get("id", ""))
    recipient = str(event.get("recipient", {}).get("id", ""))
    outbound = bool(message.get("is_echo")) or sender == account
    person = recipient if outbound else sender
    parsed.drafts.append(
        Draft(
            platform=platform,
            platform_account_id=account,
            external_id=str(message["mid"]),
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
    field, value = change.get("field"), change.get("value") or {}
    if platform is Platform.facebook and field == "feed":
        _feed(parsed, account, value)
    elif platform is Platform.instagram and field in ("comments", "mentions"):
        _instagram_comment(parsed, account, field, value, sent_at=sent_at)
    else:
        parsed.ignored.append(f"change of field {field!r}")


def _feed(parsed: Parsed, account: str, value: dict[str, Any]) -> None:
    if value.get("item") != "comment":
        parsed.ignored.append(f"feed item {value.get('item')!r}")
        return
    verb = value.get("verb")
    if verb not in ("add", "edited", "remove", "hide"):
        parsed.ignored.append(f"feed verb {verb!r}")
        return
    comment_id, post_id = str(value["comment_id"]), str(value.get("post_id", ""))
    parent = str(value.get("parent_id") or post_id)
    author = value.get("from") or {}
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
            author=Author(id=str(author.get("id", "unknown")), name=str(author.get("name", ""))),
            text=text,
            created_at=from_epoch(value.get("created_time", 0), milliseconds=False),
            url=f"https://www.facebook.com/{comment_id}",
            retracted=verb in ("remove", "hide"),
        )
    )


def _instagram_comment(
    parsed: Parsed, account: str, field: str, value: dict[str, Any], *, sent_at: float
) -> None:
    author = value.get("from") or {}
    comment_id = str(value.get("id") or value.get("comment_id") or "")
    if not comment_id:
        parsed.ignored.append(f"instagram {field} without an id")
        return
    parent = value.get("parent_id")
    media = str((value.get("media") or {}).get("id") or value.get("media_id") or "")
    thread = str(parent) if parent else comment_id
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
            parent_id=str(parent) if parent else media or None,
            author=Author(id=str(author.get("id", "unknown")), handle=str(author.get("username", ""))),
            text=str(value.get("text") or ""),
            created_at=from_epoch(created, milliseconds=False),
        )
    )
