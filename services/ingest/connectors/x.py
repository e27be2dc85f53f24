"""X Account Activity webhooks: mentions and replies, and direct messages.

`GET` answers the CRC with the base64 HMAC of the token; every `POST` carries
`x-twitter-webhooks-signature: sha256=<base64 HMAC-SHA256 of the raw body>`. Ids
come from `id_str` only: the numeric ids exceed what JSON numbers keep exactly.
"""

import base64
import re
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

from services.ingest.connectors.model import (
    ENTRY_ERRORS,
    Draft,
    MalformedPayload,
    Parsed,
    from_epoch,
    hmac_sha256,
    items,
    load_json,
    mapping,
    platform_id,
    reply_context,
    signature_matches,
)
from shared.events import Author, Direction, Kind, Platform

SIGNATURE_HEADER = "x-twitter-webhooks-signature"
# X's CRC tokens are base64 strings. Only those are signed: the CRC answer is the HMAC of
# the token with the consumer secret, exactly the signature of a POST whose body is the
# token, so signing anything else would sign forged deliveries (an event body is a JSON
# object, which no token of this form can be).
CRC_TOKEN = re.compile(r"^[A-Za-z0-9+/_-]{8,256}={0,2}$")
_USER_ID = re.compile(r"[0-9]{1,30}")


class BadCrcToken(ValueError):
    pass


def crc_response(*, secret: str, token: str) -> dict[str, str]:
    if not CRC_TOKEN.fullmatch(token):
        raise BadCrcToken("crc_token must be a base64 string of 8 to 256 characters, as X sends")
    return {"response_token": "sha256=" + base64.b64encode(hmac_sha256(secret, token.encode())).decode()}


def signature_valid(*, secret: str, body: bytes, header: str | None) -> bool:
    if not header or not header.startswith("sha256="):
        return False
    expected = base64.b64encode(hmac_sha256(secret, body)).decode()
    return signature_matches(expected, header.removeprefix("sha256=").strip())


def parse(body: bytes) -> Parsed:
    """A delivery's drafts; an event that is not in X's documented shape is rejected alone."""
    document = load_json(body)
    if not isinstance(document, dict) or "for_user_id" not in document:
        raise MalformedPayload("expected an object with 'for_user_id'")
    try:
        account = platform_id(document["for_user_id"], "for_user_id")
    except ValueError as error:
        raise MalformedPayload(str(error)) from None
    parsed = Parsed()
    users: dict[str, Any] = document["users"] if isinstance(document.get("users"), dict) else {}
    for key, handle in (("tweet_create_events", _tweet), ("direct_message_events", _direct_message)):
        try:
            events = items(document.get(key), key)
        except ValueError as error:
            parsed.reject(key, error, document.get(key))
            continue
        for index, event in enumerate(events):
            since = len(parsed.drafts)
            try:
                handle(parsed, account, mapping(event, key), users)
            except ENTRY_ERRORS as error:
                parsed.reject(f"{key}[{index}]", error, event)
            parsed.mark(since, f"{key}[{index}]")
    for key in document:
        if key.endswith("_events") and key not in ("tweet_create_events", "direct_message_events"):
            parsed.ignored.append(key[:64])
    return parsed


def _created(tweet: dict[str, Any]) -> datetime:
    if "timestamp_ms" in tweet:
        return from_epoch(tweet["timestamp_ms"], milliseconds=True)
    return parsedate_to_datetime(str(tweet["created_at"]))


def _tweet(parsed: Parsed, account: str, tweet: dict[str, Any], _users: dict[str, Any]) -> None:
    user = mapping(tweet.get("user"), "user")
    author_id = platform_id(user.get("id_str", ""), "user.id_str")
    if "id_str" not in tweet or not author_id:
        raise ValueError("tweet without 'id_str' or author 'id_str'")
    tweet_id = platform_id(tweet["id_str"], "id_str")
    parent = tweet.get("in_reply_to_status_id_str")
    if parent is not None:
        parent = platform_id(parent, "in_reply_to_status_id_str")
    outbound = author_id == account
    if tweet.get("retweeted_status"):
        parsed.ignored.append("retweet")
        return
    parsed.drafts.append(
        Draft(
            platform=Platform.x,
            platform_account_id=account,
            external_id=tweet_id,
            kind=Kind.reply if parent else (Kind.quote if tweet.get("is_quote_status") else Kind.mention),
            direction=Direction.outbound if outbound else Direction.inbound,
            # A reply joins the thread of the tweet it answers; the router follows longer chains.
            thread_id=f"tweet:{parent or tweet_id}",
            parent_id=parent or None,
            author=Author(
                id=author_id,
                name=str(user.get("name", "")),
                handle=f"@{user['screen_name']}" if user.get("screen_name") else "",
                followers=user.get("followers_count")
                if isinstance(user.get("followers_count"), int)
                else None,
                verified=bool(user.get("verified")),
            ),
            text=str(
                mapping(tweet.get("extended_tweet"), "extended_tweet").get("full_text")
                or tweet.get("text")
                or ""
            ),
            created_at=_created(tweet),
            url=f"https://x.com/{user.get('screen_name', 'i')}/status/{tweet_id}",
            # X lets the brand answer where it was mentioned or answered
            reply=reply_context(
                mentions=_mentioned(tweet),
                in_reply_to_user=tweet.get("in_reply_to_user_id_str", tweet.get("in_reply_to_user_id")),
            ),
        )
    )


def _mentioned(tweet: dict[str, Any]) -> list[object]:
    """The ids of the users a tweet mentions: `entities.user_mentions[].id_str` (Account
    Activity; a long tweet's full list is under `extended_tweet`), or `entities.mentions[].id`
    (API v2). Whatever is not in that shape is passed over."""
    extended = tweet.get("extended_tweet")
    found: list[object] = []
    for entities in (tweet.get("entities"), extended.get("entities") if isinstance(extended, dict) else None):
        if not isinstance(entities, dict):
            continue
        for key, field in (("user_mentions", "id_str"), ("mentions", "id")):
            listed = entities.get(key)
            if isinstance(listed, list):
                found += [mention.get(field) for mention in listed if isinstance(mention, dict)]
    return list(dict.fromkeys(user for user in found if isinstance(user, str)))


def _dm_conversation(event: dict[str, Any], sender: str, recipient: str) -> object:
    """The DM conversation as X names it: given (API v2), or for two users the pair of their
    ids, the lower first, as X writes it (`<low>-<high>`)."""
    if event.get("dm_conversation_id") is not None:
        return event["dm_conversation_id"]
    if _USER_ID.fullmatch(sender) and _USER_ID.fullmatch(recipient):
        low, high = sorted((sender, recipient), key=int)
        return f"{low}-{high}"
    return None


def _direct_message(parsed: Parsed, account: str, event: dict[str, Any], users: dict[str, Any]) -> None:
    if event.get("type") != "message_create":
        parsed.ignored.append(f"direct message event {str(event.get('type'))[:64]!r}")
        return
    create = mapping(event.get("message_create"), "message_create")
    sender = platform_id(create.get("sender_id", ""), "sender_id")
    recipient = platform_id(mapping(create.get("target"), "target").get("recipient_id", ""), "recipient_id")
    outbound = sender == account
    person = recipient if outbound else sender
    user = mapping(users.get(sender), "users")
    parsed.drafts.append(
        Draft(
            platform=Platform.x,
            platform_account_id=account,
            external_id=platform_id(event["id"], "id"),
            kind=Kind.dm,
            direction=Direction.outbound if outbound else Direction.inbound,
            thread_id=f"dm:{person}",
            author=Author(
                id=sender,
                name=str(user.get("name", "")),
                handle=f"@{user['screen_name']}" if user.get("screen_name") else "",
            ),
            text=str(mapping(create.get("message_data"), "message_data").get("text") or ""),
            created_at=from_epoch(event.get("created_timestamp", 0), milliseconds=True),
            reply=reply_context(dm_conversation_id=_dm_conversation(event, sender, recipient)),
        )
    )
