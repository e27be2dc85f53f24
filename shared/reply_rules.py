"""Which ways a reply can go out now, under each platform's rules, and why not when it cannot.

The inbox asks before a person types (what the page shows under the reply box) and the outbound
service asks again just before posting (the clock moved on meanwhile): both call `verdict` and
`choose` with the same facts and get the same answer. Nothing here reads a clock or the network:
`now` is given, and every window is a real duration in UTC (24 hours is 86,400 seconds, DST or not).

The platforms' rules, as their write APIs document them:
- Messenger and Instagram DMs: a standard reply within 24 hours of the customer's latest message,
  then, until 7 days, a person may answer with the HUMAN_AGENT tag; after that, not through the API.
- Facebook comments: a reply under the comment, any time.
- Instagram comments: a reply under the comment any time, and one private message to its author
  within 7 days of the comment.
- X: a reply post only where the author mentioned the brand or answered its post; DMs any time.
- Mastodon: a status in reply that keeps the answered status's visibility (direct stays direct).
- Bluesky: a post whose reply references need the answered post's CID (and its thread's root).
- YouTube: a reply under the comment costs 50 of the day's quota units.
- Other (generic and batch accounts): a signed request to the operator's endpoint.
"""

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.commands import ReplyMethod
from shared.events import Kind, Platform, ReplyContext

STANDARD_WINDOW = timedelta(hours=24)  # Meta: a standard reply after the customer's latest message
HUMAN_AGENT_WINDOW = timedelta(days=7)  # Meta: the HUMAN_AGENT tag; Instagram: a private reply
HUMAN_AGENT = "HUMAN_AGENT"
YOUTUBE_REPLY_UNITS = 50  # what comments.insert costs in YouTube's daily quota

# The most each platform takes in one reply, in characters (Unicode code points; X weighs them).
# Instagram's private reply is a direct message, so it has the DM limit. X documents 10,000
# characters for a direct message; 280 is for posts.
LIMITS: dict[tuple[Platform, ReplyMethod], int] = {
    (Platform.facebook, ReplyMethod.comment_reply): 8000,
    (Platform.facebook, ReplyMethod.send_api): 2000,
    (Platform.facebook, ReplyMethod.human_agent): 2000,
    (Platform.instagram, ReplyMethod.comment_reply): 2200,
    (Platform.instagram, ReplyMethod.private_reply): 1000,
    (Platform.instagram, ReplyMethod.send_api): 1000,
    (Platform.instagram, ReplyMethod.human_agent): 1000,
    (Platform.x, ReplyMethod.post): 280,
    (Platform.x, ReplyMethod.dm): 10_000,
    (Platform.mastodon, ReplyMethod.status): 500,
    (Platform.bluesky, ReplyMethod.post): 300,
    (Platform.youtube, ReplyMethod.comment_reply): 10_000,
    (Platform.other, ReplyMethod.webhook): 10_000,
}

_NAMES = {
    Platform.facebook: "Facebook",
    Platform.instagram: "Instagram",
    Platform.x: "X",
    Platform.mastodon: "Mastodon",
    Platform.bluesky: "Bluesky",
    Platform.youtube: "YouTube",
    Platform.other: "Webhook",
}

# How each method reads at the start of a sentence ("A private reply is not possible now.").
_METHOD_WORDS = {
    ReplyMethod.comment_reply: "A reply under the comment",
    ReplyMethod.private_reply: "A private reply",
    ReplyMethod.send_api: "A reply within the 24-hour window",
    ReplyMethod.human_agent: "A reply as a human agent",
    ReplyMethod.post: "A reply post",
    ReplyMethod.dm: "A direct message",
    ReplyMethod.status: "A reply status",
    ReplyMethod.webhook: "A reply to your endpoint",
}

_VISIBILITY = {
    "public": "a public reply, like the post answered",
    "unlisted": "an unlisted reply, like the post answered",
    "private": "a followers-only reply, like the post answered",
    "direct": "a direct reply, like the message answered: only the people mentioned see it",
}

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True)
class Situation:
    """The facts about one message to answer, as the store has them."""

    platform: Platform
    kind: Kind  # of the message answered
    answered_at: datetime  # when the message answered was written
    last_inbound_at: datetime  # the customer's latest message in the conversation (DM windows)
    context: ReplyContext | None  # from the interaction answered
    account_external_id: str | None  # the brand's own id on the platform (X user id, page id, DID)
    connected: bool  # the account has reply credentials
    failing: str = ""  # "": the connection works; else what the platform said
    private_reply_used: bool = False  # Instagram: a private reply already went to this comment
    youtube_units_left: int | None = None  # None: not counted
    link: str | None = None  # where to answer on the platform (the message's url), if known


def context_of(stored: str | None) -> ReplyContext | None:
    """What answering a message needs, as ingest stored it (JSON); None when nothing readable is."""
    if not stored:
        return None
    try:
        return ReplyContext.model_validate_json(stored)
    except ValueError:
        return None


def credentials_source(sealed: str) -> str:
    """What identifies the reply credentials `apply` gave an account (their ciphertext stays the
    same while they do): tokens the outbound service refreshed, and a failure it recorded, belong
    to those credentials only."""
    return hashlib.sha256(sealed.encode()).hexdigest()


def failing_of(sealed: str | None, token_source: str | None, token_failing: str) -> str:
    """Why the account's reply connection is failing ("" when it is not): what the outbound service
    recorded, while the account still has the credentials it was recorded for."""
    if sealed and token_source is not None and token_source == credentials_source(sealed):
        return token_failing
    return ""


def youtube_units_left(budget: int, replies_today: int) -> int:
    """What is left today of the YouTube units kept for replies, 50 a reply posted or being posted."""
    return max(0, budget - YOUTUBE_REPLY_UNITS * replies_today)


def utc_day(now: datetime) -> datetime:
    """The start of `now`'s day in UTC (YouTube's quota is counted per day)."""
    return datetime.combine(now.astimezone(UTC).date(), datetime.min.time(), tzinfo=UTC)


@dataclass(frozen=True)
class Way:
    """One way a reply can go out now: the method, the Messenger tag, and when the way closes."""

    method: ReplyMethod
    tag: str | None  # "HUMAN_AGENT" or None
    until: datetime | None  # when this way closes, in UTC (None: no window)
    label: str  # "Messenger: 3 h 12 min left in the window"


@dataclass(frozen=True)
class Verdict:
    """The ways open now (the first is the default; none: not through the API), a sentence for the
    page, where to answer on the platform, and the most characters the usual method takes."""

    ways: tuple[Way, ...]
    reason: str
    link: str | None
    max_length: int


def platform_name(platform: Platform, kind: Kind) -> str:
    """The platform as people call it: Facebook's direct messages are "Messenger"."""
    if platform is Platform.facebook and kind is Kind.dm:
        return "Messenger"
    return _NAMES[platform]


def verdict(situation: Situation, now: datetime) -> Verdict:
    """The ways a reply to this situation can go out at `now` (any timezone), and why."""
    now = _utc(now, "now")
    name = platform_name(situation.platform, situation.kind)
    if not situation.connected:
        where = "where it was written" if situation.platform is Platform.other else f"on {name}"
        return _none(
            situation, f"Replies are not connected for this account; answer {where} and mark it responded."
        )
    if situation.failing:
        return _none(situation, f"The {name} connection is failing: {situation.failing.rstrip('.')}.")
    match situation.platform:
        case Platform.facebook | Platform.instagram if situation.kind is Kind.dm:
            ways, reason = _meta_dm(situation, now, name)
        case Platform.facebook:
            ways, reason = _comment(name), f"{name}: a reply goes under the comment, at any time."
        case Platform.instagram:
            ways, reason = _instagram_comment(situation, now)
        case Platform.x:
            ways, reason = _x(situation)
        case Platform.mastodon:
            ways, reason = _mastodon(situation)
        case Platform.bluesky:
            ways, reason = _bluesky(situation)
        case Platform.youtube:
            ways, reason = _youtube(situation)
        case _:
            label = "Webhook: sent to your endpoint, signed"
            ways, reason = (
                (Way(ReplyMethod.webhook, None, None, label),),
                "Your endpoint receives the reply, signed.",
            )
    if not ways:
        return _none(situation, reason)
    return Verdict(ways, reason, situation.link, LIMITS[(situation.platform, ways[0].method)])


def choose(situation: Situation, now: datetime, method: ReplyMethod | None, text: str) -> Way | str:
    """The Way to send `text` at `now` with `method` (None: the default way), or a sentence why
    not: nothing written, no way open, the method not open now, or more than the platform takes."""
    if not text.strip():
        return "Write something to send."
    found = verdict(situation, now)
    if not found.ways:
        return found.reason
    method = method or found.ways[0].method
    way = next((way for way in found.ways if way.method is method), None)
    if way is None:
        return f"{_METHOD_WORDS[method]} is not possible now. {found.reason}"
    limit = LIMITS[(situation.platform, way.method)]
    length = reply_length(situation.platform, way.method, text)
    if length > limit:
        name = platform_name(situation.platform, situation.kind)
        how = (
            " as X counts them (a link counts 23, most other scripts and emoji 2)"
            if length != len(text)
            else ""
        )
        return f"{name} takes at most {limit:,} characters; this reply has {length:,}{how}."
    return way


def reply_length(platform: Platform, method: ReplyMethod, text: str) -> int:
    """The length a platform holds against its limit: code points (never fewer than the graphemes
    Bluesky and Mastodon count), and for X posts X's weighted count."""
    if platform is Platform.x and method is ReplyMethod.post:
        return _x_weight(text)
    return len(text)


# --- one function per platform family ------------------------------------------------------


def _meta_dm(situation: Situation, now: datetime, name: str) -> tuple[tuple[Way, ...], str]:
    """Messenger and Instagram DMs: 24 hours standard, then 7 days with the HUMAN_AGENT tag."""
    last = _utc(situation.last_inbound_at, "last_inbound_at")
    standard, human = last + STANDARD_WINDOW, last + HUMAN_AGENT_WINDOW
    if now < standard:
        way = Way(ReplyMethod.send_api, None, standard, f"{name}: {_left(standard - now)} left in the window")
        reason = (
            f"{name}: answer within {_left(standard - now)} (24 hours after their latest message); "
            f"after that, as a human agent until {_when(human)}."
        )
        return (way,), reason
    if now < human:
        label = f"{name}: as a human agent, {_left(human - now)} left"
        reason = (
            f"{name}: the 24-hour window closed on {_when(standard)}; "
            f"a person can still answer as a human agent until {_when(human)}."
        )
        return (Way(ReplyMethod.human_agent, HUMAN_AGENT, human, label),), reason
    where = "the Page inbox" if situation.platform is Platform.facebook else "the Instagram app"
    return (), f"{name}: the 7-day window closed on {_when(human)}; answer in {where}."


def _comment(name: str) -> tuple[Way, ...]:
    return (Way(ReplyMethod.comment_reply, None, None, f"{name}: a reply under the comment"),)


def _instagram_comment(situation: Situation, now: datetime) -> tuple[tuple[Way, ...], str]:
    """A reply under the comment any time; one private message to its author within 7 days."""
    reason = "Instagram: a reply goes under the comment, at any time"
    closes = _utc(situation.answered_at, "answered_at") + HUMAN_AGENT_WINDOW
    if situation.private_reply_used:
        return _comment("Instagram"), f"{reason}; the one private reply to this comment was already sent."
    if now >= closes:
        return _comment("Instagram"), f"{reason}; the 7 days for a private reply ended on {_when(closes)}."
    label = f"Instagram: one private message to the author, {_left(closes - now)} left"
    private = Way(ReplyMethod.private_reply, None, closes, label)
    return (
        *_comment("Instagram"),
        private,
    ), f"{reason}; one private message to its author until {_when(closes)}."


def _x(situation: Situation) -> tuple[tuple[Way, ...], str]:
    """X lets a brand reply only where the author mentioned it or answered its post."""
    if situation.kind is Kind.dm:
        return (
            Way(ReplyMethod.dm, None, None, "X: a direct message"),
        ), "X: a message in the direct conversation."
    context, brand = situation.context, situation.account_external_id
    if context is not None and brand is not None:
        if brand in context.mentions:
            return (
                Way(ReplyMethod.post, None, None, "X: a reply post"),
            ), "X: a reply post; the author mentioned you."
        if brand == context.in_reply_to_user:
            return (
                Way(ReplyMethod.post, None, None, "X: a reply post"),
            ), "X: a reply post; the author answered you."
    return (), "X: this author did not mention you; reply on X."


def _mastodon(situation: Situation) -> tuple[tuple[Way, ...], str]:
    """A status in reply, mentioning the author, with the answered status's visibility."""
    visibility = situation.context.visibility if situation.context else None
    kept = _VISIBILITY[visibility] if visibility else "a reply with your account's default visibility"
    way = Way(ReplyMethod.status, None, None, f"Mastodon: {kept}")
    return (way,), f"Mastodon: {kept}; it mentions the author."


def _bluesky(situation: Situation) -> tuple[tuple[Way, ...], str]:
    """A post whose reply references name the answered post and its thread's root by URI and CID."""
    context = situation.context
    if context is None or context.cid is None:
        return (
            (),
            "Bluesky: the post's content id (CID) is not known, so a reply cannot point at it; reply on Bluesky.",
        )
    if (context.root_uri is None) != (context.root_cid is None):
        return (
            (),
            "Bluesky: the thread's first post is only half known, so a reply cannot point at it; reply on Bluesky.",
        )
    return (
        Way(ReplyMethod.post, None, None, "Bluesky: a reply in the thread"),
    ), "Bluesky: a reply in the thread."


def _youtube(situation: Situation) -> tuple[tuple[Way, ...], str]:
    """A reply under the comment, while the day's quota has the 50 units it costs."""
    units = situation.youtube_units_left
    if units is not None and units < YOUTUBE_REPLY_UNITS:
        return (), f"YouTube: {units} quota units left today; a reply takes {YOUTUBE_REPLY_UNITS}."
    counted = "" if units is None else f" ({units:,} quota units left today)"
    reason = (
        f"YouTube: a reply goes under the comment; each takes {YOUTUBE_REPLY_UNITS} of the day's quota units."
    )
    return (
        Way(ReplyMethod.comment_reply, None, None, f"YouTube: a reply under the comment{counted}"),
    ), reason


# --- helpers ---------------------------------------------------------------------------------


def _none(situation: Situation, reason: str) -> Verdict:
    return Verdict((), reason, situation.link, LIMITS[(situation.platform, _usual_method(situation))])


def _usual_method(situation: Situation) -> ReplyMethod:
    """The method a reply to this kind of message would use when one is open (for its limit)."""
    match situation.platform:
        case Platform.facebook | Platform.instagram:
            return ReplyMethod.send_api if situation.kind is Kind.dm else ReplyMethod.comment_reply
        case Platform.x:
            return ReplyMethod.dm if situation.kind is Kind.dm else ReplyMethod.post
        case Platform.mastodon:
            return ReplyMethod.status
        case Platform.bluesky:
            return ReplyMethod.post
        case Platform.youtube:
            return ReplyMethod.comment_reply
    return ReplyMethod.webhook


def _utc(value: datetime, what: str) -> datetime:
    """The same instant in UTC, so that adding 24 hours adds 86,400 seconds whatever the zone."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must carry a timezone")
    return value.astimezone(UTC)


def _left(remaining: timedelta) -> str:
    """Time left as people read it, rounded down: "6 d 3 h", "3 h 12 min", "12 min"."""
    minutes = int(remaining.total_seconds() // 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{minutes} min" if minutes else "less than a minute"


def _when(moment: datetime) -> str:
    """An instant as people read it, in UTC: "9 Mar 2026, 14:05 UTC"."""
    return f"{moment.day} {_MONTHS[moment.month - 1]} {moment.year}, {moment:%H:%M} UTC"


# twitter-text v3: these code points weigh 1, every other 2; a link weighs 23 whatever its length
# (its trailing punctuation is not part of it).
_URL = re.compile(r"""https?://\S*[^\s.,;:!?'")\]]""", re.IGNORECASE)
_X_LIGHT = ((0, 4351), (8192, 8205), (8208, 8223), (8242, 8247))


def _x_weight(text: str) -> int:
    """X's weighted length as twitter-text v3 counts it, near enough: an emoji sequence weighs 2
    for each of its code points (X counts 2 for the whole), and a bare domain without http(s)://
    weighs its letters (X links it and counts 23). X has the last word: it refuses what is longer."""
    text = unicodedata.normalize("NFC", text)
    links = _URL.findall(text)
    rest = _URL.sub("", text)
    return 23 * len(links) + sum(1 if any(a <= ord(c) <= b for a, b in _X_LIGHT) else 2 for c in rest)
