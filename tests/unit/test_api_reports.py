"""The reports' figures, made from hand-written conversation histories: first response times in
business time (across a closed night and weekend, with a pause), nearest-rank medians and
p90s, attainment, breaches, escalations and acknowledgements counted once per deadline, the
open load per day, continuity, who a figure belongs to, an empty period; the CSV tables (a
name that starts a formula stays text); the SVG charts (well-formed, accessible, a hostile
label escaped); and whose figures each role reads."""

import csv
import io
import itertools
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from fastapi import HTTPException
from hypothesis import given
from hypothesis import strategies as st

from services.api.access import Role, Team, Viewer
from services.api.charts import (
    Series,
    bar_chart,
    duration_text,
    first_response_chart,
    line_chart,
    open_load_chart,
)
from services.api.history import detail_of
from services.api.report_reads import period_of, report_lens, team_reachable
from services.api.reports import (
    TABLES,
    Event,
    History,
    Kind,
    Lens,
    Report,
    ReportFacts,
    TeamLabel,
    bucket_edges,
    build_report,
    event_of,
    nearest_rank,
    report_csv,
)
from shared.businesstime import ALWAYS_OPEN, BusinessCalendar
from shared.events import (
    AlertAcknowledged,
    AlertChannel,
    AlertKind,
    AlertSent,
    ConversationAssigned,
    DeadlineChanged,
    DeadlineKind,
)
from tests.fuzz import properties

UTC_ = UTC
MON = datetime(2026, 11, 23, tzinfo=UTC)  # Monday 23 November 2026, 00:00 UTC
WEEK = (MON - timedelta(days=7), MON + timedelta(days=7))
NOW = MON + timedelta(days=10)
EVERYTHING = Lens(everything=True)
# Berlin office hours, Monday to Friday 09:00-17:00 (UTC+1 in November)
OFFICE = BusinessCalendar.parse(
    timezone="Europe/Berlin", hours={day: [["09:00", "17:00"]] for day in ("mon", "tue", "wed", "thu", "fri")}
)
SVG = "{http://www.w3.org/2000/svg}"


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


def story(
    conversation_id: str,
    *,
    opened: datetime,
    owner: str | None = "kai",
    team: str | None = "care",
    tenant: str = "kettle",
    author: str = "dana",
    due: datetime | None = None,
    responded: datetime | None = None,
    calendar: BusinessCalendar = ALWAYS_OPEN,
    then: Iterable[Event] = (),
) -> History:
    """A conversation opened, assigned, with a first response deadline, answered; then more."""
    events = [
        Event(Kind.opened, opened),
        Event(Kind.assigned, opened, owner_id=owner, team_id=team),
    ]
    if due is not None:
        events.append(
            Event(
                Kind.deadline,
                opened,
                deadline_kind="first_response",
                started_at=opened,
                due_at=due,
                version=1,
            )
        )
    if responded is not None:
        events += [Event(Kind.responded, responded), Event(Kind.deadline, responded, version=2)]
    return History(
        conversation_id=conversation_id,
        tenant_id=tenant,
        platform="facebook",
        author_id=author,
        opened_at=opened,
        calendar=calendar,
        events=(*events, *then),
    )


def report(
    *histories: History,
    lens: Lens = EVERYTHING,
    earlier: Iterable[History] = (),
    start: datetime = WEEK[0],
    end: datetime = WEEK[1],
    now: datetime = NOW,
    bucket: str = "day",
    timezone: str = "UTC",
    names: dict[str, str] | None = None,
    teams: dict[str, TeamLabel] | None = None,
) -> Report:
    facts = ReportFacts(
        conversations=histories, lens=lens, earlier=tuple(earlier), names=names or {}, teams=teams or {}
    )
    return build_report(facts, start=start, end=end, now=now, bucket=bucket, timezone=timezone)  # type: ignore[arg-type]


# -- first response time -------------------------------------------------------------------------


def test_first_response_time_counts_only_business_hours_across_a_closed_weekend_and_night() -> None:
    friday = datetime(2026, 11, 20, 15, 30, tzinfo=UTC)  # 16:30 in Berlin: half an hour before closing
    monday = datetime(2026, 11, 23, 8, 45, tzinfo=UTC)  # 09:45 in Berlin
    tuesday = datetime(2026, 11, 24, 15, 50, tzinfo=UTC)  # 16:50
    wednesday = datetime(2026, 11, 25, 8, 10, tzinfo=UTC)  # 09:10
    weekend = story("c1", opened=friday, responded=monday, calendar=OFFICE)
    night = story("c2", opened=tuesday, responded=wednesday, calendar=OFFICE)
    assert report(weekend).summary.first_response_median == minutes(30 + 45)
    assert report(night).summary.first_response_median == minutes(10 + 10)
    # the same waits around the clock
    around = story("c3", opened=friday, responded=monday)
    assert report(around).summary.first_response_median == monday - friday


def test_the_clock_starts_at_the_first_response_deadline_and_stops_while_paused() -> None:
    written = MON + timedelta(hours=9)  # the customer wrote at 09:00; the conversation opened at 09:05
    opened = written + minutes(5)
    history = History(
        conversation_id="c1",
        tenant_id="kettle",
        platform="facebook",
        author_id="dana",
        opened_at=opened,
        events=(
            Event(Kind.opened, opened),
            Event(Kind.assigned, opened, owner_id="kai", team_id="care"),
            Event(Kind.deadline, opened, deadline_kind="first_response", started_at=written, version=1),
            Event(Kind.paused, opened + minutes(10)),  # waiting on the customer for an hour
            Event(Kind.resumed, opened + minutes(70)),
            Event(Kind.responded, opened + minutes(80)),
        ),
    )
    # 5 before opening + 10 before the pause + 10 after it
    assert report(history).summary.first_response_median == minutes(25)


def test_next_responses_count_as_responses_but_not_as_first_responses() -> None:
    opened = MON + timedelta(hours=9)
    history = story(
        "c1",
        opened=opened,
        responded=opened + minutes(10),
        then=[Event(Kind.reopened, opened + minutes(60)), Event(Kind.responded, opened + minutes(90))],
    )
    figures = report(history).summary
    assert (figures.responses, figures.first_responses) == (2, 1)
    assert figures.first_response_median == minutes(10)


# -- percentiles ---------------------------------------------------------------------------------


def test_median_and_p90_are_nearest_rank() -> None:
    ten = [minutes(n) for n in range(10, 0, -1)]
    assert nearest_rank(ten, 50) == minutes(5)  # the ceil(50 * 10 / 100) = 5th smallest
    assert nearest_rank(ten, 90) == minutes(9)
    four = [minutes(n) for n in (4, 1, 3, 2)]
    assert nearest_rank(four, 50) == minutes(2)  # not the mean of the middle two
    assert nearest_rank(four, 90) == minutes(4)
    eleven = [minutes(n) for n in range(1, 12)]
    assert nearest_rank(eleven, 90) == minutes(10)  # ceil(9.9) = 10
    assert nearest_rank([minutes(7)], 90) == minutes(7)
    assert nearest_rank([], 50) is None
    with pytest.raises(ValueError):
        nearest_rank(four, 0)


def test_a_report_gives_the_nearest_rank_median_and_p90_of_its_first_responses() -> None:
    opened = MON + timedelta(hours=9)
    histories = [
        story(f"c{n}", opened=opened, author=f"a{n}", responded=opened + minutes(n)) for n in range(1, 11)
    ]
    figures = report(*histories).summary
    assert figures.first_response_median == minutes(5)
    assert figures.first_response_p90 == minutes(9)
    monday = report(*histories).buckets[7]
    assert monday.label == "2026-11-23" and monday.figures.first_response_p90 == minutes(9)


@properties(200)
@given(st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=60), st.integers(1, 100))
def test_a_nearest_rank_percentile_is_a_value_with_that_share_at_or_below_it(
    values: list[int], percentile: int
) -> None:
    durations = [timedelta(seconds=v) for v in values]
    found = nearest_rank(durations, percentile)
    assert found in durations
    at_or_below = sum(1 for d in durations if d <= found)
    below = sum(1 for d in durations if d < found)
    assert at_or_below * 100 >= percentile * len(durations) > below * 100


# -- attainment, breaches, escalations, acknowledgements -----------------------------------------


def test_attainment_is_the_share_of_responses_made_by_their_deadline() -> None:
    opened = MON + timedelta(hours=9)
    due = opened + minutes(30)
    early = story("c1", opened=opened, author="a1", due=due, responded=due - minutes(1))
    on_time = story("c2", opened=opened, author="a2", due=due, responded=due)  # at the due time: in time
    late = story("c3", opened=opened, author="a3", due=due, responded=due + minutes(1))
    no_deadline = story("c4", opened=opened, author="a4", responded=opened + minutes(5))
    next_late = story(
        "c5",
        opened=opened,
        author="a5",
        due=due,
        responded=opened + minutes(5),
        then=[
            Event(Kind.reopened, opened + minutes(60)),
            Event(
                Kind.deadline,
                opened + minutes(60),
                deadline_kind="next_response",
                due_at=opened + minutes(90),
            ),
            Event(Kind.responded, opened + minutes(120)),
        ],
    )
    figures = report(early, on_time, late, no_deadline, next_late).summary
    assert figures.responses == 6
    assert (figures.responses_with_deadline, figures.responses_in_time) == (5, 3)
    assert figures.attainment == pytest.approx(3 / 5)


def test_breaches_escalations_and_acknowledgements_count_once_per_deadline() -> None:
    opened = MON + timedelta(hours=9)
    at = opened + minutes(30)
    alerts = [
        Event(Kind.alert_sent, at, version=1, step="warning"),
        Event(Kind.alert_sent, at, version=1, step="breach"),  # by email
        Event(Kind.alert_sent, at, version=1, step="breach"),  # and by Web Push
        Event(Kind.alert_sent, at + minutes(15), version=1, step="escalation-1"),
        Event(Kind.alert_failed, at + minutes(15), version=1, step="escalation-1"),
        Event(Kind.alert_sent, at + minutes(30), version=1, step="escalation-2"),
        Event(Kind.acknowledged, at + minutes(31), version=1),
        Event(Kind.acknowledged, at + minutes(32), version=1),
        Event(
            Kind.alert_failed, at + minutes(90), version=3, step="breach"
        ),  # the next deadline, never delivered
        Event(Kind.alert_sent, at + minutes(90), version=3, step="assignment"),
    ]
    figures = report(story("c1", opened=opened, then=alerts)).summary
    assert (figures.breaches, figures.escalations, figures.acknowledgements) == (2, 2, 1)


def test_a_figure_belongs_to_who_owned_the_conversation_and_its_team_at_the_time() -> None:
    opened = MON + timedelta(hours=9)
    history = story(
        "c1",
        opened=opened,
        owner="kai",
        team="care",
        then=[
            Event(Kind.alert_sent, opened + minutes(30), version=1, step="breach"),  # kai's, in care
            Event(Kind.assigned, opened + minutes(40), owner_id="rosa", team_id="social"),
            Event(Kind.responded, opened + minutes(50)),  # rosa's, in social
            Event(Kind.assigned, opened + minutes(60), owner_id="sid", keeps_team=True),  # names no team
        ],
    )
    whole = report(history, names={"kai": "Kai", "rosa": "Rosa"})
    people = {line.person_id: line for line in whole.people}
    assert people["kai"].figures.breaches == 1 and people["kai"].figures.responses == 0
    assert people["rosa"].figures.responses == 1 and people["rosa"].name == "Rosa"
    assert people["sid"].open == 1 and people["sid"].name is None  # a name the reader may not see
    teams = {line.team_id: line for line in whole.teams}
    assert teams["care"].figures.breaches == 1 and teams["social"].figures.responses == 1
    assert teams["social"].open == 1
    only_rosa = report(history, lens=Lens(people=frozenset({"rosa"})))
    assert only_rosa.summary.responses == 1 and only_rosa.summary.breaches == 0
    assert [line.person_id for line in only_rosa.people] == ["rosa"] and only_rosa.open == 0
    care = report(history, lens=Lens(teams=frozenset({"care"})))
    assert (care.summary.breaches, care.summary.responses, care.open) == (1, 0, 0)


def test_a_lens_counts_only_its_tenants_teams_and_people_narrowed_by_the_request() -> None:
    opened = MON + timedelta(hours=9)
    kettle = story("k1", opened=opened, responded=opened + minutes(5))
    north = story(
        "n1", opened=opened, tenant="northwind", owner="nils", team="north", responded=opened + minutes(7)
    )
    assert report(kettle, north).summary.responses == 2
    theirs = report(kettle, north, lens=Lens(tenants=frozenset({"kettle"})))
    assert theirs.summary.responses == 1 and {line.tenant_id for line in theirs.teams} == {"kettle"}
    assert report(kettle, north, lens=Lens(everything=True, tenant="northwind")).summary.responses == 1
    # an agent of both tenants, while reading only one of them
    sam = Lens(people=frozenset({"kai"}), within=frozenset({"northwind"}))
    assert report(kettle, north, lens=sam).summary.responses == 0
    assert report(kettle, north, lens=Lens(everything=True, team="north")).summary.responses == 1
    assert report(kettle, north, lens=Lens(everything=True, person="nils")).summary.responses == 1
    assert report(kettle, north, lens=Lens()).summary.responses == 0


# -- open load, buckets --------------------------------------------------------------------------


def test_the_open_load_is_counted_just_before_each_bucket_ends() -> None:
    day = timedelta(days=1)
    waits = story("c1", opened=MON + timedelta(hours=9))  # never answered
    answered = story(
        "c2", opened=MON + timedelta(hours=10), author="b", responded=MON + day + timedelta(hours=1)
    )
    resolved = story(
        "c3",
        opened=MON - day + timedelta(hours=12),
        author="c",
        then=[Event(Kind.resolved, MON + timedelta(hours=8))],
    )
    at_midnight = story("c4", opened=MON + 2 * day, author="d")  # opened as the day after begins
    whole = report(waits, answered, resolved, at_midnight, start=MON - day, end=MON + 3 * day)
    assert [line.label for line in whole.buckets] == ["2026-11-22", "2026-11-23", "2026-11-24", "2026-11-25"]
    assert [(line.open, line.awaiting) for line in whole.buckets] == [(1, 1), (2, 2), (2, 1), (3, 2)]
    assert (whole.open, whole.awaiting) == (3, 2)


def test_a_timeline_without_its_beginning_stands_on_the_conversation_row() -> None:
    # kept before the timeline was: no opening, no assignment, resolved according to the row
    row_only = History(
        conversation_id="c1",
        tenant_id="kettle",
        platform="facebook",
        author_id="dana",
        opened_at=MON + timedelta(hours=9),
        team_id="care",
        owner_id="kai",
        resolved_at=MON + timedelta(days=2),
    )
    whole = report(row_only, start=MON, end=MON + timedelta(days=3))
    assert [line.open for line in whole.buckets] == [1, 1, 0]
    assert [line.person_id for line in whole.people] == []  # closed at the end: nobody's load
    assert (
        report(row_only, lens=Lens(people=frozenset({"kai"})), start=MON, end=MON + timedelta(days=1)).open
        == 1
    )


def test_the_period_ends_now_and_a_week_begins_on_monday() -> None:
    now = MON + timedelta(days=2, hours=12)  # Wednesday noon
    whole = report(start=MON - timedelta(days=10), end=MON + timedelta(days=30), now=now, bucket="week")
    assert whole.end == now and whole.until == MON + timedelta(days=30)
    assert [line.label for line in whole.buckets] == ["2026-11-09", "2026-11-16", "2026-11-23"]
    assert whole.buckets[0].start == MON - timedelta(days=10) and whole.buckets[-1].end == now
    assert whole.buckets[1].start == MON - timedelta(days=7)
    future = report(start=NOW + timedelta(days=1), end=NOW + timedelta(days=2))
    assert future.buckets == () and future.end == future.start


def test_days_follow_the_timezone_across_a_change_of_clocks() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    start = datetime(2026, 10, 24, tzinfo=berlin).astimezone(UTC)
    end = datetime(2026, 10, 27, tzinfo=berlin).astimezone(UTC)
    edges = bucket_edges(start, end, "day", "Europe/Berlin")
    assert [label for _, label in edges] == ["2026-10-24", "2026-10-25", "2026-10-26", ""]
    lengths = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(edges)]
    assert lengths == [timedelta(hours=24), timedelta(hours=25), timedelta(hours=24)]  # summer time ends


def test_an_empty_period_has_its_days_and_no_figures() -> None:
    whole = report()
    assert len(whole.buckets) == 14 and all(line.open == 0 for line in whole.buckets)
    figures = whole.summary
    assert figures.responses == 0 and figures.first_response_median is None
    assert figures.attainment is None and figures.continuity is None
    assert whole.people == () and whole.teams == ()
    for table in TABLES:
        rows = list(csv.reader(io.StringIO(report_csv(whole, table))))
        assert len(rows) == (15 if table == "days" else 1)


# -- continuity ----------------------------------------------------------------------------------


def test_continuity_is_the_share_of_returning_authors_answered_by_who_answered_them_last() -> None:
    before = MON - timedelta(days=20)  # outside the period
    opened = MON + timedelta(hours=9)
    dana_then = story("d0", opened=before, author="dana", owner="kai", responded=before + minutes(5))
    dana_now = story("d1", opened=opened, author="dana", owner="kai", responded=opened + minutes(5))
    eli_then = story("e0", opened=before, author="eli", owner="kai", responded=before + minutes(5))
    eli_between = story(
        "e1",
        opened=before + timedelta(days=1),
        author="eli",
        owner="sid",
        responded=before + timedelta(days=1, minutes=3),
    )
    eli_now = story("e2", opened=opened, author="eli", owner="rosa", responded=opened + minutes(5))
    fay = story("f1", opened=opened, author="fay", owner="rosa", responded=opened + minutes(5))  # new
    # the same author id in another tenant is another author
    gus_north = story(
        "g0", opened=before, author="gus", tenant="northwind", owner="rosa", responded=before + minutes(1)
    )
    gus = story("g1", opened=opened, author="gus", owner="rosa", responded=opened + minutes(5))
    # answered while in the queue: nobody in particular answered
    hal_then = story("h0", opened=before, author="hal", owner=None, responded=before + minutes(1))
    hal = story("h1", opened=opened, author="hal", owner="kai", responded=opened + minutes(5))
    whole = report(
        dana_now, eli_now, fay, gus, hal,
        earlier=[dana_then, eli_then, eli_between, gus_north, hal_then],
    )  # fmt: skip
    figures = whole.summary
    assert (figures.returning_authors, figures.answered_by_same_person) == (2, 1)
    assert figures.continuity == pytest.approx(0.5)
    people = {line.person_id: line.figures for line in whole.people}
    assert (people["kai"].returning_authors, people["kai"].answered_by_same_person) == (1, 1)
    assert (people["rosa"].returning_authors, people["rosa"].answered_by_same_person) == (1, 0)
    # an earlier conversation the reader may not count still says who answered
    rosa_only = report(
        dana_now, eli_now, dana_then, eli_then, eli_between, lens=Lens(people=frozenset({"rosa"}))
    )
    assert rosa_only.summary.returning_authors == 1 and rosa_only.summary.answered_by_same_person == 0


# -- reading the timeline --------------------------------------------------------------------------


def test_timeline_rows_are_read_from_the_events_json() -> None:
    at = MON + timedelta(hours=9)
    assigned = ConversationAssigned(
        tenant_id="kettle", conversation_id="c1", account_id="a", team_id="t-care", owner_id="kai",
        reason="least loaded", assigned_at=at,
    )  # fmt: skip
    event = event_of("conversation.assigned", at, detail_of(assigned), "kai")
    assert event == Event(Kind.assigned, at, owner_id="kai", team_id="t-care")
    queued = assigned.model_copy(update={"owner_id": None})
    assert event_of("conversation.assigned", at, detail_of(queued), None) == Event(
        Kind.assigned, at, team_id="t-care"
    )
    deadline = DeadlineChanged(
        tenant_id="kettle", conversation_id="c1", account_id="a", deadline_version=3,
        kind=DeadlineKind.next_response, owner_id="kai", started_at=at, warn_at=None,
        due_at=at + minutes(30), reason="",
    )  # fmt: skip
    read = event_of("deadline.changed", at, detail_of(deadline))
    assert read is not None
    assert (read.deadline_kind, read.started_at, read.due_at, read.version) == (
        "next_response", at, at + minutes(30), 3,
    )  # fmt: skip
    alert = AlertSent(
        tenant_id="kettle", alert_id="x", alert_kind=AlertKind.escalation, step="escalation-2",
        channel=AlertChannel.email, person_id="rosa", conversation_id="c1", deadline_version=3,
    )  # fmt: skip
    assert event_of("alert.sent", at, detail_of(alert)) == Event(
        Kind.alert_sent, at, version=3, step="escalation-2"
    )
    ack = AlertAcknowledged(
        tenant_id="kettle", conversation_id="c1", deadline_version=3, person_id="rosa", acknowledged_at=at
    )
    assert event_of("alert.acknowledged", at, detail_of(ack)) == Event(Kind.acknowledged, at, version=3)
    # what the row says when its detail is no event: the owner is whom the row is about
    assert event_of("conversation.assigned", at, "{}", "kai") == Event(
        Kind.assigned, at, owner_id="kai", keeps_team=True
    )
    assert event_of("conversation.responded", at, "not json") == Event(Kind.responded, at)
    assert event_of("deadline.changed", at, json.dumps({"due_at": "tomorrow", "kind": 5})) == Event(
        Kind.deadline, at
    )
    assert event_of("command.applied", at, "{}") is None


# -- CSV -------------------------------------------------------------------------------------------


def test_every_table_is_csv_and_a_name_that_starts_a_formula_stays_text() -> None:
    opened = MON + timedelta(hours=9)
    hostile = '=HYPERLINK("http://evil.example","click")'
    whole = report(
        story("c1", opened=opened, owner="kai", team="t-care", responded=opened + minutes(5)),
        story("c2", opened=opened, owner="sid", team="t-social", author="b"),
        names={"kai": hostile, "sid": "@SUM(A1)"},
        teams={
            "t-care": TeamLabel("kettle", "care", "-2+3"),
            "t-social": TeamLabel("kettle", "social", None),
        },
    )
    people = list(csv.DictReader(io.StringIO(report_csv(whole, "people"))))
    assert [row["person"] for row in people] == ["kai", "sid"]
    assert people[0]["name"] == "'" + hostile and people[1]["name"] == "'@SUM(A1)"
    assert people[0]["responses"] == "1" and people[0]["first_response_median_seconds"] == "300"
    assert people[1]["open"] == "1" and people[1]["awaiting"] == "1" and people[1]["attainment"] == ""
    teams = list(csv.DictReader(io.StringIO(report_csv(whole, "teams"))))
    assert [(row["tenant"], row["team"], row["name"]) for row in teams] == [
        ("kettle", "care", "'-2+3"),
        ("kettle", "social", ""),
    ]
    days = report_csv(whole, "days")
    assert days.endswith("\r\n") and days.count("\r\n") == 15
    monday = list(csv.DictReader(io.StringIO(days)))[7]
    assert monday["label"] == "2026-11-23" and monday["responses"] == "1" and monday["open"] == "2"
    with pytest.raises(ValueError):
        report_csv(whole, "secrets")


# -- charts ----------------------------------------------------------------------------------------


def parsed(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # well-formed XML, or this raises
    assert root.tag == f"{SVG}svg" and root.get("role") == "img" and root.get("viewBox")
    title, desc = root.find(f"{SVG}title"), root.find(f"{SVG}desc")
    assert title is not None and desc is not None
    assert root.get("aria-labelledby") == f"{title.get('id')} {desc.get('id')}"
    for element in root.iter():
        assert element.tag.removeprefix(SVG) not in ("script", "style", "foreignObject", "image", "a", "use")
        for name in element.attrib:
            assert "href" not in name and name != "style" and not name.startswith("on"), name
    assert "url(" not in svg and "javascript" not in svg.lower()
    return root


HOSTILE = '<script>alert("x")</script> & ]]> \x00\x1b\ud800 "quoted" \'single\''


def test_a_chart_is_well_formed_accessible_svg_that_escapes_a_hostile_label() -> None:
    for chart in (line_chart, bar_chart):
        svg = chart(
            title=HOSTILE,
            description=HOSTILE,
            labels=[HOSTILE, "2026-11-24"],
            series=[Series(HOSTILE, [3.0, None]), Series("p90", [1.0, 7.5])],
            chart_id='x" onload="alert(1)',
        )
        root = parsed(svg)
        title = root.find(f"{SVG}title")
        assert title is not None and title.text is not None
        assert title.text.startswith('<script>alert("x")</script> & ]]> ')  # shown as text
        assert "\x00" not in svg and "\x1b" not in svg and "<script" not in svg
        texts = [element.text or "" for element in root.iter(f"{SVG}text")]
        assert any(text.startswith("<script>") for text in texts)  # the label, as text
        assert "onload" not in root.attrib


def test_a_chart_of_nothing_says_so_and_is_still_svg() -> None:
    for chart in (line_chart, bar_chart):
        root = parsed(chart(title="Open load", description="Nothing yet", labels=[], series=[]))
        assert any("No figures" in (element.text or "") for element in root.iter(f"{SVG}text"))
    root = parsed(line_chart(title="t", description="d", labels=["a"], series=[Series("s", [None])]))
    assert root.find(f"{SVG}path") is None


def test_the_reports_charts_show_the_open_load_and_first_response_times() -> None:
    opened = MON + timedelta(hours=9)
    whole = report(
        story("c1", opened=opened, responded=opened + minutes(90)),
        story("c2", opened=opened, author="b"),
    )
    load = parsed(open_load_chart(whole))
    desc = load.find(f"{SVG}desc")
    assert desc is not None and "highest 2 on 2026-11-23" in (desc.text or "")
    assert len(load.findall(f"{SVG}path")) == 2  # open, and awaiting a reply
    first = parsed(first_response_chart(whole))
    bars = [
        rect.findtext(f"{SVG}title")
        for rect in first.iter(f"{SVG}rect")
        if rect.find(f"{SVG}title") is not None
    ]
    assert bars == [
        "23 Nov: Median 1h 30m",
        "23 Nov: p90 1h 30m",
    ]  # Monday's; no first response on other days
    desc = first.find(f"{SVG}desc")
    assert desc is not None and "median 1h 30m" in (desc.text or "")
    assert "No first responses" in (parsed(first_response_chart(report())).find(f"{SVG}desc").text or "")  # type: ignore[union-attr]


def test_durations_read_as_people_say_them() -> None:
    assert [duration_text(s) for s in (0, 45, 60, 5400, 7200, 86400, 93600)] == [
        "0s", "45s", "1m", "1h 30m", "2h", "1d", "1d 2h",
    ]  # fmt: skip


# -- whose figures each role reads ---------------------------------------------------------------

CARE = Team("t-care", "kettle")
SOCIAL = Team("t-social", "kettle")
NORTH = Team("t-north", "northwind")


def test_each_role_reports_on_its_reach() -> None:
    ada = Viewer.of_person("ada", grants=[("agency_admin", "")], leads=[], teams=[])
    assert report_lens(ada) == Lens(everything=True)
    tina = Viewer.of_person("tina", grants=[("tenant_admin", "kettle")], leads=[], teams=[])
    assert report_lens(tina) == Lens(tenants=frozenset({"kettle"}), within=frozenset({"kettle"}))
    vera = Viewer.of_person("vera", grants=[("client_viewer", "kettle")], leads=[], teams=[])
    assert report_lens(vera) == Lens(tenants=frozenset({"kettle"}), within=frozenset({"kettle"}))
    token = Viewer.of_token("tok", name="dash", tenant_id="kettle", role=Role.client_viewer)
    assert report_lens(token) == Lens(tenants=frozenset({"kettle"}), within=frozenset({"kettle"}))
    rosa = Viewer.of_person("rosa", grants=[], leads=[CARE], teams=[CARE])
    assert report_lens(rosa) == Lens(
        teams=frozenset({"t-care"}), people=frozenset({"rosa"}), within=frozenset({"kettle"})
    )
    kai = Viewer.of_person("kai", grants=[], leads=[], teams=[CARE])
    assert report_lens(kai) == Lens(people=frozenset({"kai"}), within=frozenset({"kettle"}))
    sam = Viewer.of_person("sam", grants=[], leads=[], teams=[CARE, NORTH])
    assert report_lens(sam) == Lens(people=frozenset({"sam"}), within=frozenset({"kettle", "northwind"}))
    nobody = Viewer.of_person("nobody", grants=[], leads=[], teams=[])
    with pytest.raises(HTTPException) as refused:
        report_lens(nobody)
    assert refused.value.status_code == 403
    # a team to narrow to: one of the tenant's for admins and viewers, one's own for a lead or agent
    assert team_reachable(vera, team_id="t-social", tenant_id="kettle")
    assert team_reachable(rosa, team_id="t-care", tenant_id="kettle")
    assert not team_reachable(rosa, team_id="t-social", tenant_id="kettle")
    assert team_reachable(kai, team_id="t-care", tenant_id="kettle")
    assert not team_reachable(kai, team_id="t-social", tenant_id="kettle")
    assert not team_reachable(tina, team_id="t-north", tenant_id="northwind")


# -- the period ------------------------------------------------------------------------------------

BERLIN = ZoneInfo("Europe/Berlin")


def test_the_period_defaults_to_the_last_seven_days_and_a_date_until_includes_its_day() -> None:
    now = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    assert period_of(None, None, zone=ZoneInfo("UTC"), now=now) == (datetime(2026, 11, 19, tzinfo=UTC), now)
    start, end = period_of(None, None, zone=BERLIN, now=now)
    assert start == datetime(2026, 11, 19, tzinfo=BERLIN) and end == now
    assert period_of("2026-11-01", "2026-11-30", zone=BERLIN, now=now) == (
        datetime(2026, 11, 1, tzinfo=BERLIN),
        datetime(2026, 12, 1, tzinfo=BERLIN),
    )
    assert period_of("2026-11-20T09:00:00Z", "2026-11-21T00:00:00+01:00", zone=BERLIN, now=now) == (
        datetime(2026, 11, 20, 9, tzinfo=UTC),
        datetime(2026, 11, 20, 23, tzinfo=UTC),
    )
    assert period_of(None, "2026-11-10", zone=ZoneInfo("UTC"), now=now) == (
        datetime(2026, 11, 4, tzinfo=UTC),
        datetime(2026, 11, 11, tzinfo=UTC),
    )
    assert period_of("2025-11-25", "2026-11-25", zone=ZoneInfo("UTC"), now=now)[0].year == 2025  # 366 days


@pytest.mark.parametrize(
    ("since", "until", "field"),
    [
        ("2026-11-20", "2026-11-19", "until"),  # until before since
        ("2026-11-20T10:00:00Z", "2026-11-20T10:00:00Z", "until"),  # nothing between
        ("2025-11-24", "2026-11-25", "until"),  # 367 days
        ("2026-11-20T10:00:00", None, "since"),  # no offset
        ("yesterday", None, "since"),
        (None, "2026-13-45", "until"),
        (None, "9999-12-31", "until"),  # the day after is past the calendar
        ("0001-01-01T00:00:00+05:00", None, "since"),
        ("2026-12-01", None, "until"),  # after now, so until (now) is before it
    ],
)
def test_a_period_that_cannot_be_is_a_400_naming_its_part(
    since: str | None, until: str | None, field: str
) -> None:
    with pytest.raises(HTTPException) as refused:
        period_of(since, until, zone=BERLIN, now=datetime(2026, 11, 25, 10, tzinfo=UTC))
    detail = refused.value.detail
    assert refused.value.status_code == 400 and isinstance(detail, dict) and detail["field"] == field


# -- any history -----------------------------------------------------------------------------------

KINDS = list(Kind)
moments = st.integers(min_value=-3 * 24 * 60, max_value=17 * 24 * 60).map(lambda m: MON + minutes(m))
events = st.builds(
    Event,
    kind=st.sampled_from(KINDS),
    at=moments,
    owner_id=st.sampled_from([None, "kai", "rosa"]),
    team_id=st.sampled_from([None, "care", "social"]),
    keeps_team=st.booleans(),
    deadline_kind=st.sampled_from([None, "first_response", "next_response", "resolution"]),
    started_at=st.none() | moments,
    due_at=st.none() | moments,
    version=st.sampled_from([None, 1, 2, 3]),
    step=st.sampled_from(["", "warning", "breach", "escalation-1", "escalation-2"]),
)
histories = st.builds(
    History,
    conversation_id=st.sampled_from(["c1", "c2", "c3", "c4"]),
    tenant_id=st.sampled_from(["kettle", "northwind"]),
    platform=st.just("facebook"),
    author_id=st.sampled_from(["dana", "eli"]),
    opened_at=moments,
    team_id=st.sampled_from([None, "care"]),
    owner_id=st.sampled_from([None, "kai"]),
    resolved_at=st.none() | moments,
    calendar=st.sampled_from([ALWAYS_OPEN, OFFICE]),
    events=st.lists(events, max_size=12).map(tuple),
)


@properties(300)
@given(
    st.lists(histories, max_size=5),
    st.lists(histories, max_size=3),
    st.sampled_from(["day", "week"]),
    st.sampled_from(["UTC", "Europe/Berlin", "Pacific/Kiritimati"]),
)
def test_any_histories_make_a_report_whose_rows_add_up(
    conversations: list[History], earlier: list[History], bucket: str, timezone: str
) -> None:
    whole = report(*conversations, earlier=earlier, bucket=bucket, timezone=timezone)
    summary = whole.summary
    assert 0 <= summary.responses_in_time <= summary.responses_with_deadline <= summary.responses
    assert summary.first_responses <= summary.responses
    assert 0 <= summary.answered_by_same_person <= summary.returning_authors <= summary.first_responses
    assert 0 <= whole.awaiting <= whole.open <= len(conversations)
    for rows in (whole.buckets, whole.people, whole.teams):
        for name in (
            "responses",
            "first_responses",
            "breaches",
            "escalations",
            "acknowledgements",
            "returning_authors",
        ):
            assert sum(getattr(row.figures, name) for row in rows) == getattr(summary, name), name
    assert sum(row.open for row in whole.people) == whole.open == sum(row.open for row in whole.teams)
    assert whole.buckets[-1].open == whole.open
    if summary.first_response_median is not None:
        assert summary.first_response_p90 is not None
        assert timedelta(0) <= summary.first_response_median <= summary.first_response_p90
    for table in TABLES:
        report_csv(whole, table)
    parsed(open_load_chart(whole))
    parsed(first_response_chart(whole))
