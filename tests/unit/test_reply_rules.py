from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.commands import ReplyMethod
from shared.events import Kind, Platform, ReplyContext
from shared.reply_rules import Situation, Verdict, Way, choose, platform_name, verdict
from tests.fuzz import properties

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
DAY, HOUR, MINUTE, TICK = (
    timedelta(days=1),
    timedelta(hours=1),
    timedelta(minutes=1),
    timedelta(microseconds=1),
)
BRAND = "1500000001"
LINK = "https://example.com/the-message"


def situation(platform: Platform = Platform.facebook, kind: Kind = Kind.dm, **changes: object) -> Situation:
    """A connected account answering a message written, and last written to, at T0."""
    base = Situation(
        platform=platform,
        kind=kind,
        answered_at=T0,
        last_inbound_at=T0,
        context=None,
        account_external_id=BRAND,
        connected=True,
        link=LINK,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def methods(found: Verdict) -> list[ReplyMethod]:
    return [way.method for way in found.ways]


# --- Messenger and Instagram DMs -----------------------------------------------------------


def test_messenger_inside_24_hours_is_a_standard_reply_with_the_time_left() -> None:
    found = verdict(situation(), T0 + 20 * HOUR + 48 * MINUTE)
    assert found.ways == (
        Way(ReplyMethod.send_api, None, T0 + DAY, "Messenger: 3 h 12 min left in the window"),
    )
    assert found.reason == (
        "Messenger: answer within 3 h 12 min (24 hours after their latest message); "
        "after that, as a human agent until 9 Mar 2026, 09:00 UTC."
    )
    assert found.max_length == 2000
    assert found.link == LINK


def test_messenger_between_24_hours_and_7_days_is_a_human_agent_reply() -> None:
    found = verdict(situation(), T0 + 30 * HOUR)
    assert found.ways == (
        Way(
            ReplyMethod.human_agent, "HUMAN_AGENT", T0 + 7 * DAY, "Messenger: as a human agent, 5 d 18 h left"
        ),
    )
    assert found.reason == (
        "Messenger: the 24-hour window closed on 3 Mar 2026, 09:00 UTC; "
        "a person can still answer as a human agent until 9 Mar 2026, 09:00 UTC."
    )


def test_messenger_after_7_days_cannot_be_answered_through_the_api() -> None:
    found = verdict(situation(), T0 + 8 * DAY)
    assert found == Verdict(
        (),
        "Messenger: the 7-day window closed on 9 Mar 2026, 09:00 UTC; answer in the Page inbox.",
        LINK,
        2000,
    )


def test_the_dm_window_runs_from_the_customers_latest_message_not_the_one_answered() -> None:
    found = verdict(situation(answered_at=T0 - 10 * DAY, last_inbound_at=T0), T0 + HOUR)
    assert methods(found) == [ReplyMethod.send_api]


def test_the_last_minute_of_a_window_reads_as_less_than_a_minute() -> None:
    found = verdict(situation(), T0 + DAY - timedelta(seconds=30))
    assert found.ways[0].label == "Messenger: less than a minute left in the window"


def test_the_24_hours_are_real_hours_across_the_spring_forward_in_berlin() -> None:
    # Saturday 12:00 CET; Sunday at 12:30 CEST only 23.5 hours have passed: 30 minutes are left.
    last = datetime(2026, 3, 28, 12, 0, tzinfo=BERLIN)
    found = verdict(situation(last_inbound_at=last), datetime(2026, 3, 29, 12, 30, tzinfo=BERLIN))
    assert found.ways[0].label == "Messenger: 30 min left in the window"
    assert found.ways[0].until == datetime(2026, 3, 29, 11, 0, tzinfo=UTC)


def test_instagram_dm_follows_the_same_windows_with_its_own_limit() -> None:
    inside = verdict(situation(Platform.instagram), T0 + 23 * HOUR)
    assert inside.ways == (Way(ReplyMethod.send_api, None, T0 + DAY, "Instagram: 1 h left in the window"),)
    assert inside.max_length == 1000
    later = verdict(situation(Platform.instagram), T0 + 6 * DAY)
    assert later.ways == (
        Way(ReplyMethod.human_agent, "HUMAN_AGENT", T0 + 7 * DAY, "Instagram: as a human agent, 1 d left"),
    )
    closed = verdict(situation(Platform.instagram), T0 + 7 * DAY)
    assert closed == Verdict(
        (),
        "Instagram: the 7-day window closed on 9 Mar 2026, 09:00 UTC; answer in the Instagram app.",
        LINK,
        1000,
    )


# --- comments ------------------------------------------------------------------------------


def test_a_facebook_comment_has_a_reply_under_it_at_any_time() -> None:
    found = verdict(situation(kind=Kind.comment), T0 + 400 * DAY)
    assert found == Verdict(
        (Way(ReplyMethod.comment_reply, None, None, "Facebook: a reply under the comment"),),
        "Facebook: a reply goes under the comment, at any time.",
        LINK,
        8000,
    )


def test_an_instagram_comment_offers_one_private_reply_within_7_days() -> None:
    found = verdict(situation(Platform.instagram, Kind.comment, last_inbound_at=T0 + DAY), T0 + 2 * DAY)
    assert found.ways == (
        Way(ReplyMethod.comment_reply, None, None, "Instagram: a reply under the comment"),
        Way(
            ReplyMethod.private_reply,
            None,
            T0 + 7 * DAY,
            "Instagram: one private message to the author, 5 d left",
        ),
    )
    assert found.reason == (
        "Instagram: a reply goes under the comment, at any time; "
        "one private message to its author until 9 Mar 2026, 09:00 UTC."
    )
    assert found.max_length == 2200


def test_an_instagram_comment_already_answered_privately_has_only_the_reply_under_it() -> None:
    found = verdict(situation(Platform.instagram, Kind.comment, private_reply_used=True), T0 + HOUR)
    assert methods(found) == [ReplyMethod.comment_reply]
    assert found.reason.endswith("; the one private reply to this comment was already sent.")


def test_an_instagram_comment_older_than_7_days_has_no_private_reply() -> None:
    found = verdict(situation(Platform.instagram, Kind.comment), T0 + 7 * DAY)
    assert methods(found) == [ReplyMethod.comment_reply]
    assert found.reason.endswith("; the 7 days for a private reply ended on 9 Mar 2026, 09:00 UTC.")


def test_youtube_needs_50_quota_units_when_they_are_counted() -> None:
    short = verdict(situation(Platform.youtube, Kind.comment, youtube_units_left=49), T0)
    assert short == Verdict((), "YouTube: 49 quota units left today; a reply takes 50.", LINK, 10_000)
    enough = verdict(situation(Platform.youtube, Kind.comment, youtube_units_left=50), T0)
    assert enough.ways == (
        Way(
            ReplyMethod.comment_reply,
            None,
            None,
            "YouTube: a reply under the comment (50 quota units left today)",
        ),
    )
    uncounted = verdict(situation(Platform.youtube, Kind.comment), T0)
    assert uncounted.ways == (
        Way(ReplyMethod.comment_reply, None, None, "YouTube: a reply under the comment"),
    )
    assert (
        uncounted.reason == "YouTube: a reply goes under the comment; each takes 50 of the day's quota units."
    )


# --- X ---------------------------------------------------------------------------------------


def test_x_replies_where_the_author_mentioned_the_brand() -> None:
    mention = situation(Platform.x, Kind.mention, context=ReplyContext(mentions=["42", BRAND]))
    found = verdict(mention, T0 + 30 * DAY)
    assert found == Verdict(
        (Way(ReplyMethod.post, None, None, "X: a reply post"),),
        "X: a reply post; the author mentioned you.",
        LINK,
        280,
    )


def test_x_does_not_reply_where_the_brand_was_not_mentioned() -> None:
    other = situation(Platform.x, Kind.mention, context=ReplyContext(mentions=["42"]))
    assert verdict(other, T0) == Verdict((), "X: this author did not mention you; reply on X.", LINK, 280)
    assert verdict(replace(other, context=None), T0).ways == ()
    assert verdict(replace(other, account_external_id=None), T0).ways == ()


def test_x_replies_to_an_answer_to_the_brands_own_post() -> None:
    answer = situation(Platform.x, Kind.reply, context=ReplyContext(in_reply_to_user=BRAND))
    found = verdict(answer, T0)
    assert methods(found) == [ReplyMethod.post]
    assert found.reason == "X: a reply post; the author answered you."
    quote_of_someone_else = situation(Platform.x, Kind.quote, context=ReplyContext(in_reply_to_user="42"))
    assert verdict(quote_of_someone_else, T0).ways == ()


def test_x_dms_are_answered_in_the_conversation_at_any_time() -> None:
    found = verdict(
        situation(Platform.x, Kind.dm, context=ReplyContext(dm_conversation_id="42-1500000001")),
        T0 + 90 * DAY,
    )
    assert found == Verdict(
        (Way(ReplyMethod.dm, None, None, "X: a direct message"),),
        "X: a message in the direct conversation.",
        LINK,
        10_000,
    )


# --- Mastodon, Bluesky, other ----------------------------------------------------------------


def test_mastodon_keeps_the_visibility_of_the_status_answered() -> None:
    public = verdict(
        situation(Platform.mastodon, Kind.mention, context=ReplyContext(visibility="public")), T0
    )
    assert public.ways == (
        Way(ReplyMethod.status, None, None, "Mastodon: a public reply, like the post answered"),
    )
    assert public.max_length == 500
    direct = verdict(situation(Platform.mastodon, Kind.dm, context=ReplyContext(visibility="direct")), T0)
    assert direct.ways[0].label == (
        "Mastodon: a direct reply, like the message answered: only the people mentioned see it"
    )
    unknown = verdict(situation(Platform.mastodon, Kind.mention), T0)
    assert unknown.ways[0].label == "Mastodon: a reply with your account's default visibility"


def test_bluesky_replies_need_the_posts_cid_and_the_root_defaults_to_the_post() -> None:
    root_is_the_post = situation(Platform.bluesky, Kind.mention, context=ReplyContext(cid="bafyreia"))
    found = verdict(root_is_the_post, T0)
    assert found.ways == (Way(ReplyMethod.post, None, None, "Bluesky: a reply in the thread"),)
    assert found.max_length == 300
    in_a_thread = ReplyContext(
        cid="bafyreia", root_uri="at://did:plc:abc/app.bsky.feed.post/1", root_cid="bafyreib"
    )
    assert methods(verdict(replace(root_is_the_post, context=in_a_thread), T0)) == [ReplyMethod.post]


def test_bluesky_without_the_cid_or_half_a_root_cannot_reply() -> None:
    no_cid = situation(
        Platform.bluesky, Kind.reply, context=ReplyContext(root_uri="at://did:plc:abc/app.bsky.feed.post/1")
    )
    found = verdict(no_cid, T0)
    assert found.ways == () and found.link == LINK
    assert found.reason.startswith("Bluesky: the post's content id (CID) is not known")
    assert verdict(replace(no_cid, context=None), T0).ways == ()
    half_root = ReplyContext(cid="bafyreia", root_uri="at://did:plc:abc/app.bsky.feed.post/1")
    assert verdict(replace(no_cid, context=half_root), T0).ways == ()


def test_other_platforms_reply_through_the_operators_webhook() -> None:
    found = verdict(situation(Platform.other, Kind.review), T0 + 365 * DAY)
    assert found == Verdict(
        (Way(ReplyMethod.webhook, None, None, "Webhook: sent to your endpoint, signed"),),
        "Your endpoint receives the reply, signed.",
        LINK,
        10_000,
    )


# --- accounts that cannot reply --------------------------------------------------------------


def test_an_account_without_reply_credentials_says_where_to_answer() -> None:
    found = verdict(situation(Platform.x, Kind.dm, connected=False), T0)
    assert found == Verdict(
        (), "Replies are not connected for this account; answer on X and mark it responded.", LINK, 10_000
    )
    other = verdict(situation(Platform.other, Kind.comment, connected=False, link=None), T0)
    assert other.reason == (
        "Replies are not connected for this account; answer where it was written and mark it responded."
    )
    assert other.link is None


def test_a_failing_connection_offers_nothing_even_inside_a_window() -> None:
    found = verdict(situation(failing="the access token has expired."), T0 + HOUR)
    assert found == Verdict(
        (), "The Messenger connection is failing: the access token has expired.", LINK, 2000
    )


def test_platform_names_read_as_people_say_them() -> None:
    assert platform_name(Platform.facebook, Kind.dm) == "Messenger"
    assert platform_name(Platform.facebook, Kind.comment) == "Facebook"
    assert platform_name(Platform.instagram, Kind.dm) == "Instagram"
    assert [
        platform_name(p, Kind.mention)
        for p in (Platform.x, Platform.mastodon, Platform.bluesky, Platform.youtube)
    ] == [
        "X",
        "Mastodon",
        "Bluesky",
        "YouTube",
    ]


def test_a_now_without_a_timezone_is_refused() -> None:
    with pytest.raises(ValueError, match="now must carry a timezone"):
        verdict(situation(), datetime(2026, 3, 2, 10, 0))


# --- choose ------------------------------------------------------------------------------------


def test_choose_without_a_method_takes_the_default_way() -> None:
    comment = situation(Platform.instagram, Kind.comment)
    assert choose(comment, T0, None, "Thanks!") == verdict(comment, T0).ways[0]


def test_choose_takes_a_named_way_that_is_offered() -> None:
    comment = situation(Platform.instagram, Kind.comment)
    way = choose(comment, T0 + DAY, ReplyMethod.private_reply, "We sent you the details")
    assert isinstance(way, Way) and way.method is ReplyMethod.private_reply and way.until == T0 + 7 * DAY


def test_choose_refuses_a_named_way_that_is_not_offered_and_says_why() -> None:
    refused = choose(situation(), T0 + 30 * HOUR, ReplyMethod.send_api, "Sorry for the wait")
    assert refused == (
        "A reply within the 24-hour window is not possible now. Messenger: the 24-hour window closed on "
        "3 Mar 2026, 09:00 UTC; a person can still answer as a human agent until 9 Mar 2026, 09:00 UTC."
    )
    used = situation(Platform.instagram, Kind.comment, private_reply_used=True)
    assert str(choose(used, T0, ReplyMethod.private_reply, "Hi")).startswith(
        "A private reply is not possible now. "
    )


def test_choose_says_why_nothing_can_go_out() -> None:
    assert choose(situation(), T0 + 8 * DAY, None, "Hello") == (
        "Messenger: the 7-day window closed on 9 Mar 2026, 09:00 UTC; answer in the Page inbox."
    )


def test_choose_refuses_text_longer_than_the_platform_takes() -> None:
    mention = situation(Platform.x, Kind.mention, context=ReplyContext(mentions=[BRAND]))
    assert isinstance(choose(mention, T0, None, "a" * 280), Way)
    assert choose(mention, T0, None, "a" * 281) == "X takes at most 280 characters; this reply has 281."
    assert (
        choose(situation(), T0, None, "a" * 2001)
        == "Messenger takes at most 2,000 characters; this reply has 2,001."
    )
    comment = situation(Platform.instagram, Kind.comment)
    assert isinstance(choose(comment, T0, None, "a" * 2200), Way)
    assert choose(comment, T0, ReplyMethod.private_reply, "a" * 1001) == (
        "Instagram takes at most 1,000 characters; this reply has 1,001."
    )


def test_x_weighs_other_scripts_double_and_links_as_23() -> None:
    mention = situation(Platform.x, Kind.mention, context=ReplyContext(mentions=[BRAND]))
    assert isinstance(choose(mention, T0, None, "お" * 140), Way)
    assert choose(mention, T0, None, "お" * 141) == (
        "X takes at most 280 characters; this reply has 282 as X counts them "
        "(a link counts 23, most other scripts and emoji 2)."
    )
    long_link = "https://example.com/" + "p" * 300
    assert isinstance(choose(mention, T0, None, "a" * 256 + " " + long_link), Way)  # 256 + 1 + 23


@pytest.mark.parametrize("text", ["", " ", "\n\t "])
def test_choose_refuses_blank_text(text: str) -> None:
    assert choose(situation(), T0, None, text) == "Write something to send."


# --- properties ----------------------------------------------------------------------------------

PROPERTY = properties(300)
ZONES = [
    UTC,
    BERLIN,
    NEW_YORK,
    ZoneInfo("Asia/Kathmandu"),
    timezone(timedelta(hours=14)),
    timezone(-timedelta(hours=12)),
]
# The 2026 DST transitions in Berlin (29 March, 25 October) and New York (8 March, 1 November), in UTC.
TRANSITIONS = [
    datetime(2026, 3, 29, 1, 0, tzinfo=UTC),
    datetime(2026, 10, 25, 1, 0, tzinfo=UTC),
    datetime(2026, 3, 8, 7, 0, tzinfo=UTC),
    datetime(2026, 11, 1, 6, 0, tzinfo=UTC),
]
zones = st.sampled_from(ZONES)
near_transitions = st.builds(
    lambda at, offset: at + offset, st.sampled_from(TRANSITIONS), st.timedeltas(-8 * DAY, 8 * DAY)
)


@st.composite
def contexts(draw: st.DrawFn) -> ReplyContext | None:
    if draw(st.booleans()):
        return None
    did = "at://did:plc:abc/app.bsky.feed.post/1"
    root = draw(st.sampled_from([(None, None), (did, "bafyreib"), (did, None)]))
    return ReplyContext(
        cid=draw(st.sampled_from([None, "bafyreia"])),
        root_uri=root[0],
        root_cid=root[1],
        visibility=draw(st.sampled_from([None, "public", "unlisted", "private", "direct"])),
        mentions=draw(st.lists(st.sampled_from([BRAND, "42", "43"]), max_size=3)),
        in_reply_to_user=draw(st.sampled_from([None, BRAND, "42"])),
    )


@st.composite
def situations(draw: st.DrawFn) -> tuple[Situation, datetime]:
    """Any situation, its times near a DST transition and written in any zone, and a `now` from
    an hour before the customer's latest message to 9 days after it."""
    last = draw(near_transitions)
    now = last + draw(st.timedeltas(-HOUR, 9 * DAY))
    found = Situation(
        platform=draw(st.sampled_from(list(Platform))),
        kind=draw(st.sampled_from(list(Kind))),
        answered_at=(last - draw(st.timedeltas(timedelta(0), 3 * DAY))).astimezone(draw(zones)),
        last_inbound_at=last.astimezone(draw(zones)),
        context=draw(contexts()),
        account_external_id=draw(st.sampled_from([BRAND, None])),
        connected=draw(st.sampled_from([True, True, True, False])),
        failing=draw(st.sampled_from(["", "", "", "token expired"])),
        private_reply_used=draw(st.booleans()),
        youtube_units_left=draw(st.one_of(st.none(), st.integers(0, 200))),
        link=draw(st.sampled_from([None, LINK])),
    )
    return found, now


@PROPERTY
@given(
    last=near_transitions,
    zone=zones,
    now_zone=zones,
    edge=st.sampled_from(
        [(DAY, ReplyMethod.send_api, ReplyMethod.human_agent), (7 * DAY, ReplyMethod.human_agent, None)]
    ),
    step=st.sampled_from([-TICK, timedelta(0), TICK]),
    platform=st.sampled_from([Platform.facebook, Platform.instagram]),
)
def test_dm_windows_close_exactly_24_hours_and_7_days_after_the_latest_message(
    last: datetime,
    zone: ZoneInfo,
    now_zone: ZoneInfo,
    edge: tuple[timedelta, ReplyMethod, ReplyMethod | None],
    step: timedelta,
    platform: Platform,
) -> None:
    length, before, after = edge
    now = (last + length + step).astimezone(now_zone)
    found = verdict(situation(platform, Kind.dm, last_inbound_at=last.astimezone(zone)), now)
    expected = before if step < timedelta(0) else after
    assert methods(found) == ([] if expected is None else [expected])


@PROPERTY
@given(answered=near_transitions, zone=zones, step=st.sampled_from([-TICK, timedelta(0), TICK]))
def test_an_instagram_private_reply_closes_exactly_7_days_after_the_comment(
    answered: datetime, zone: ZoneInfo, step: timedelta
) -> None:
    comment = situation(Platform.instagram, Kind.comment, answered_at=answered.astimezone(zone))
    found = verdict(comment, answered + 7 * DAY + step)
    private = [ReplyMethod.private_reply] if step < timedelta(0) else []
    assert methods(found) == [ReplyMethod.comment_reply, *private]


@PROPERTY
@given(case=situations(), zone=zones)
def test_the_verdict_depends_on_the_instant_not_the_zone_it_is_written_in(
    case: tuple[Situation, datetime], zone: ZoneInfo
) -> None:
    found, now = case
    in_utc = replace(
        found,
        answered_at=found.answered_at.astimezone(UTC),
        last_inbound_at=found.last_inbound_at.astimezone(UTC),
    )
    expected = verdict(in_utc, now.astimezone(UTC))
    assert verdict(found, now.astimezone(zone)) == expected
    assert [way.label for way in verdict(found, now.astimezone(zone)).ways] == [
        way.label for way in expected.ways
    ]
    assert expected.reason


@PROPERTY
@given(case=situations())
def test_every_way_offered_is_open_now_and_chosen_as_offered(case: tuple[Situation, datetime]) -> None:
    found, now = case
    ways = verdict(found, now).ways
    for way in ways:
        assert way.until is None or (way.until > now and way.until.tzinfo is UTC)
        assert choose(found, now, way.method, "Thanks, we are on it.") == way
    if ways:
        assert choose(found, now, None, "Thanks, we are on it.") == ways[0]
    else:
        assert choose(found, now, None, "Thanks, we are on it.") == verdict(found, now).reason
