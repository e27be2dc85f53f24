"""X Account Activity webhooks: mentions and replies, and direct messages.

`GET` answers the CRC with the base64 HMAC of the token; every `POST` carries
`x-twitter-webhooks-signature: sha256=<base64 HMAC-SHA256 of the raw body>`. Ids
come from `id_str` only: the numeric ids exceed what JSON numbers keep exactly.
"""

import base64
import hmac
import json
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

from services.ingest.connectors.model import Draft, MalformedPayload, Parsed, from_epoch, hmac_sha256
from shared.events import Author, Direction, Kind, Platform

SIGNATURE_HEADER = "x-twitter-webhooks-signature"


def crc_response(*, secret: str, token: str) -> dict[str, str]:
    return {"response_token": "sha256=" + base64.b64encode(hmac_sha256(secret, token.encode())).decode()}


def signature_valid(*, secret: str, body: bytes, header: str | None) -> bool:
    if not header or not header.startswith("sha256="):
        return False
    expected = base64.b64encode(hmac_sha256(secret, body)).decode()
    return hmac.compare_digest(expected, header.removeprefix("sha256=").strip())


def parse(body: bytes) -> Parsed:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MalformedPayload(f"body is not JSON: {error}") from None
    if not isinstance(document, dict) or "for_user_id" not in document:
        raise MalformedPayload("expected an object with 'for_user_id'")
    account = str(document["for_user_id"])
    parsed = Parsed()
    for tweet in document.get("tweet_create_events", []):
        _tweet(parsed, account, tweet)
    users = document.get("users") or {}
    for event in document.get("direct_message_events", []):
        _direct_message(parsed, account, event, users)
    for key in document:
        if key.endswith("_events") and key not in ("tweet_create_events", "direct_message_events"):
            parsed.ignored.append(key)
    return parsed


def _created(tweet: dict[str, Any]) -> datetime:
    if "timestamp_ms" in tweet:
        return from_epoch(tweet["timestamp_ms"], milliseconds=True)
    return parsedate_to_datetime(str(tweet["created_at"]))


def _tweet(parsed: Parsed, account: str, tweet: dict[str, Any]) -> None:
    user = tweet.get("user") or {}
    author_id = str(user.get("id_str", ""))
    if "id_str" not in tweet or not author_id:
        raise MalformedPayload("tweet without 'id_str' or author 'id_str'")
    tweet_id = str(tweet["id_str"])
    parent = tweet.get("in_reply_to_status_id_str")
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
            parent_id=str(parent) if parent else None,
            author=Author(
                id=author_id,
                name=str(user.get("name", "")),
                handle=f"@{user['screen_name']}" if user.get("screen_name") else "",
                followers=user.get("followers_count"),
                verified=bool(user.get("verified")),
            ),
            text=str(tweet.get("extended_tweet", {}).get("full_text") or tweet.get("text") or ""),
            created_at=_created(tweet),
            url=f"https://x.com/{user.get('screen_name', 'i')}/status/{tweet_id}",
        )
    )


def _direct_message(parsed: Parsed, account: str, event: dict[str, Any], users: dict[str, Any]) -> None:
    if event.get("type") != "message_create":
        parsed.ignored.append(f"direct message event {event.get('type')!r}")
        return
    create = event.get("message_create") or {}
    sender = str(create.get("sender_id", ""))
    recipient = str((create.get("target") or {}).get("recipient_id", ""))
    outbound = sender == account
    person = recipient if outbound else sender
    user = users.get(sender) or {}
    parsed.drafts.append(
        Draft(
            platform=Platform.x,
            platform_account_id=account,
            external_id=str(event["id"]),
            kind=Kind.dm,
            direction=Direction.outbound if outbound else Direction.inbound,
            thread_id=f"dm:{person}",
            author=Author(
                id=sender,
                name=str(user.get("name", "")),
                handle=f"@{user['screen_name']}" if user.get("screen_name") else "",
            ),
            text=str((create.get("message_data") or {}).get("text") or ""),
            created_at=from_epoch(event.get("created_timestamp", 0), milliseconds=True),
        )
    )
