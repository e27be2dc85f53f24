"""The reports over a real database (SQLite and PostgreSQL): conversations and their timelines
written as the router, notify and the timeline consumer write them, read back through
`GET /api/reports` and `GET /api/reports/{table}.csv` as each role.

One agency serves two tenants. kettle has the teams care (lead rosa; rosa, kai and sam) and
social (sid), and an SLA policy on Berlin office hours; northwind has north (sam and nils).
ada is the agency admin, tina kettle's tenant admin, vera kettle's client viewer; kettle also
has a client_viewer token; nobody holds no role at all. The clock stands still on Wednesday
25 November 2026 at 10:00 UTC, so the default period is 19 November 00:00 UTC until then.

What happened (kettle, all UTC): dana's first conversation (k0, 10 November) was answered by
kai; her next (k1, Monday 09:00, due 09:30) by kai at 09:20, resolved Tuesday. eli's (k3,
Monday 10:00, due 10:30, rosa's) breached (email and push), escalated once, was acknowledged
by rosa and answered at 11:00; his next (k7, Tuesday 09:00, due 10:00) kai answered at 09:30.
fay wrote on Friday at 16:30 Berlin time (k6, social, sid's, office hours), answered Monday at
09:15 Berlin time: 45 minutes of business time. gus (k4, social, sid's) and hal (k5, care's
queue) still wait. northwind: n1 answered by nils in 5 minutes, n2 by sam in 10.
"""

import asyncio
import csv
import io
import itertools
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastapi.routing
import httpx
import pytest
from fastapi import FastAPI
from hypothesis import example, given
from hypothesis import strategies as st

from services.api.history import entry_of
from services.api.report_reads import reports_router
from shared.db.migrate import upgrade
from shared.db.models import CalendarRow, SlaPolicyRow, TimelineRow
from shared.events import (
    AlertAcknowledged,
    AlertChannel,
    AlertKind,
    AlertSent,
    Author,
    ConversationAssigned,
    ConversationOpened,
    ConversationResolved,
    ConversationResponded,
    DeadlineChanged,
    DeadlineKind,
    Event,
    Platform,
)
from tests.api_world import BASE_URL, Clock, SignedIn, World, bearer, build_api, client
from tests.fuzz import TIMESTAMPS, properties

T = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)  # a Wednesday
MON = datetime(2026, 11, 23, tzinfo=UTC)
PEOPLE = ("ada", "tina", "rosa", "kai", "sam", "sid", "nils", "vera", "nobody")
NAMES = {
    "kai": "Kai Kettle",
    "rosa": "Rosa Kettle",
    "sid": '=HYPERLINK("http://evil.example","Sid")',
    "nils": "Nils Nordmann",
    "sam": "Sam Both",
}
SECRETS = ("SECRET", "Secret", "@secret")  # what customers wrote, and who they are
NORTHWIND = ("northwind", "nils", "Nordmann", "Nordic")


def minutes(n: int) -> timedelta:
    return timedelta(minutes=n)


def reports_app(database_url: str) -> FastAPI:
    """The api as tests build it, with the reports' routes (until tests/api_world.py names them)."""
    app = build_api(database_url, clock=Clock(T))
    walk = getattr(fastapi.routing, "iter_route_contexts", None)  # FastAPI that includes routers lazily
    routes = walk(app.routes) if walk is not None else app.routes
    if not any(getattr(route, "path", None) == "/api/reports" for route in routes):
        app.include_router(reports_router())
    return app


@dataclass
class Agency:
    world: World
    teams: dict[str, str] = field(default_factory=dict)  # tenant/slug: team id
    accounts: dict[str, str] = field(default_factory=dict)  # tenant: account id
    signed: dict[str, SignedIn] = field(default_factory=dict)
    viewer_token: str = ""
    ids: dict[str, str] = field(default_factory=dict)  # label: conversation id
    numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def as_(self, who: str) -> dict[str, str]:
        if who == "token":
            return bearer(self.viewer_token)
        return self.signed[who].headers

    async def story(
        self,
        label: str,
        team: str,
        owner: str | None,
        *,
        author: str,
        opened: datetime,
        due: datetime | None = None,
        responded: datetime | None = None,
        resolved: datetime | None = None,
        policy: str | None = None,
        then: tuple[Event, ...] = (),
    ) -> str:
        """A conversation as the router stores it, and its timeline as the api's consumer keeps it."""
        tenant = team.split("/")[0]
        account = self.accounts[tenant]
        conversation = await self.world.conversation(
            tenant,
            account,
            team_id=self.teams[team],
            owner_id=owner,
            state="resolved" if resolved else "responded" if responded else "open",
            text=f"SECRET-TEXT of {label}: my card number is 4242",
            opened_at=opened,
            author_id=author,
            author_name=f"Secret Author {author}",
            author_handle="@secret",
            responded_at=responded,
            resolved_at=resolved,
            sla_policy_id=policy,
            thread_id=f"thread-{label}",
        )
        self.ids[label] = conversation
        common = {"tenant_id": tenant, "conversation_id": conversation, "account_id": account}
        events: list[Event] = [
            ConversationOpened(
                **common,
                platform=Platform.facebook,
                thread_id=f"thread-{label}",
                author=Author(id=author, name=f"Secret Author {author}", handle="@secret"),
                interaction_id=f"ix-{label}",
                opened_at=opened,
            ),
            ConversationAssigned(
                **common, team_id=self.teams[team], owner_id=owner, reason="least loaded", assigned_at=opened
            ),
        ]
        if due is not None:
            events.append(
                DeadlineChanged(
                    **common,
                    occurred_at=opened,
                    deadline_version=1,
                    kind=DeadlineKind.first_response,
                    owner_id=owner,
                    started_at=opened,
                    warn_at=None,
                    due_at=due,
                    reason="",
                )
            )
        events += then
        if responded is not None:
            events += [
                ConversationResponded(**common, interaction_id=f"reply-{label}", responded_at=responded),
                DeadlineChanged(
                    **common,
                    occurred_at=responded,
                    deadline_version=2,
                    kind=None,
                    owner_id=owner,
                    started_at=None,
                    warn_at=None,
                    due_at=None,
                    reason="cleared",
                ),
            ]
        if resolved is not None:
            events.append(ConversationResolved(**common, reason="resolved", resolved_at=resolved))
        rows = []
        for event in events:
            number = next(self.numbers)
            entry = entry_of(event, message_id=f"msg-{label}-{number}", seq=number)
            assert entry is not None
            rows.append(TimelineRow(**asdict(entry)))
        await self.world.add(*rows)
        return conversation


def alert(
    label_ids: dict[str, str], label: str, step: str, at: datetime, channel: str = "email"
) -> AlertSent:
    kind = AlertKind.breach if step == "breach" else AlertKind.escalation
    return AlertSent(
        tenant_id="kettle",
        occurred_at=at,
        alert_id=f"{label}-{step}-{channel}",
        alert_kind=kind,
        step=step,
        channel=AlertChannel(channel),
        person_id="rosa",
        conversation_id=label_ids.get(label, ""),
        deadline_version=1,
    )


async def build_agency(world: World) -> Agency:
    await world.tenant("kettle")
    await world.tenant("northwind", name="Nordic Northwind")
    for person in PEOPLE:
        await world.person(person, name=NAMES.get(person, person.title()))
    agency = Agency(world)
    agency.teams["kettle/care"] = await world.team(
        "kettle", "care", lead="rosa", members=["rosa", "kai", "sam"]
    )
    agency.teams["kettle/social"] = await world.team("kettle", "social", members=["sid"])
    agency.teams["northwind/north"] = await world.team(
        "northwind", "north", members=["sam", "nils"], name="Nordic care"
    )
    agency.accounts["kettle"] = await world.account(
        "kettle", agency.teams["kettle/care"], account_id="kettle-fb"
    )
    agency.accounts["northwind"] = await world.account(
        "northwind", agency.teams["northwind/north"], account_id="north-fb"
    )
    await world.grant("ada", "agency_admin")
    await world.grant("tina", "tenant_admin", "kettle")
    await world.grant("vera", "client_viewer", "kettle")
    office = {day: [["09:00", "17:00"]] for day in ("mon", "tue", "wed", "thu", "fri")}
    await world.add(
        CalendarRow(
            id="cal-office",
            tenant_id="kettle",
            name="office",
            timezone="Europe/Berlin",
            hours=json.dumps(office),
        )
    )
    await world.add(
        SlaPolicyRow(
            id="sla-office",
            tenant_id="kettle",
            name="office",
            first_response_seconds=1800,
            calendar_id="cal-office",
        )
    )
    day = timedelta(days=1)
    earlier = MON - timedelta(days=13) + timedelta(hours=9)
    await agency.story(
        "k0", "kettle/care", "kai", author="dana", opened=earlier, responded=earlier + minutes(10),
        resolved=earlier + minutes(180),
    )  # fmt: skip
    await agency.story(
        "k1", "kettle/care", "kai", author="dana", opened=MON + timedelta(hours=9),
        due=MON + timedelta(hours=9, minutes=30), responded=MON + timedelta(hours=9, minutes=20),
        resolved=MON + day + timedelta(hours=10),
    )  # fmt: skip
    k3_opened = MON + timedelta(hours=10)
    k3 = await agency.story(
        "k3", "kettle/care", "rosa", author="eli", opened=k3_opened, due=k3_opened + minutes(30),
        responded=k3_opened + minutes(60),
    )  # fmt: skip
    tail = (
        alert(agency.ids, "k3", "breach", k3_opened + minutes(30)),
        alert(agency.ids, "k3", "breach", k3_opened + minutes(30), channel="push"),
        alert(agency.ids, "k3", "escalation-1", k3_opened + minutes(45)),
        AlertAcknowledged(
            tenant_id="kettle", conversation_id=k3, deadline_version=1, person_id="rosa",
            acknowledged_at=k3_opened + minutes(50),
        ),
    )  # fmt: skip
    rows = []
    for number, event in enumerate(tail, start=500):
        entry = entry_of(event, message_id=f"alert-{number}", seq=number)
        assert entry is not None
        rows.append(TimelineRow(**asdict(entry)))
    await world.add(*rows)
    await agency.story(
        "k7", "kettle/care", "kai", author="eli", opened=MON + day + timedelta(hours=9),
        due=MON + day + timedelta(hours=10), responded=MON + day + timedelta(hours=9, minutes=30),
    )  # fmt: skip
    friday = datetime(2026, 11, 20, 15, 30, tzinfo=UTC)  # 16:30 in Berlin
    await agency.story(
        "k6", "kettle/social", "sid", author="fay", opened=friday, policy="sla-office",
        due=datetime(2026, 11, 23, 8, 30, tzinfo=UTC), responded=datetime(2026, 11, 23, 8, 15, tzinfo=UTC),
    )  # fmt: skip
    await agency.story("k4", "kettle/social", "sid", author="gus", opened=MON + day + timedelta(hours=8))
    await agency.story("k5", "kettle/care", None, author="hal", opened=MON + day + timedelta(hours=12))
    await agency.story(
        "n1", "northwind/north", "nils", author="dana", opened=MON + timedelta(hours=9),
        responded=MON + timedelta(hours=9, minutes=5),
    )  # fmt: skip
    await agency.story(
        "n2", "northwind/north", "sam", author="ivy", opened=MON + timedelta(hours=9),
        responded=MON + timedelta(hours=9, minutes=10),
    )  # fmt: skip
    for person in PEOPLE:
        agency.signed[person] = await world.session_for(person, created_at=T)
    agency.viewer_token = await world.token_for("kettle", "client_viewer", name="kettle-dashboard")
    return agency


@pytest.fixture
async def agency(database_url: str) -> AsyncIterator[Agency]:
    async with World(database_url) as world:
        yield await build_agency(world)


@pytest.fixture
async def http(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with client(reports_app(database_url)) as http:
        yield http


async def get_report(http: httpx.AsyncClient, agency: Agency, who: str, **params: Any) -> dict[str, Any]:
    response = await http.get("/api/reports", params=params, headers=agency.as_(who))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def lines(body: dict[str, Any], table: str, key: str) -> dict[Any, dict[str, Any]]:
    return {line[key]: line for line in body[table]}


# -- the figures -----------------------------------------------------------------------------------


async def test_a_tenant_admin_reads_the_figures_of_their_tenant(
    agency: Agency, http: httpx.AsyncClient
) -> None:
    body = await get_report(http, agency, "tina")
    assert body["since"] == "2026-11-19T00:00:00Z" and body["until"] == "2026-11-25T10:00:00Z"
    summary = body["summary"]
    # first responses 20, 30, 45 (business time over the weekend) and 60 minutes
    assert summary["first_responses"] == 4 and summary["responses"] == 4
    assert summary["first_response_median_seconds"] == 30 * 60
    assert summary["first_response_p90_seconds"] == 60 * 60
    assert (summary["responses_with_deadline"], summary["responses_in_time"]) == (4, 3)
    assert summary["attainment"] == pytest.approx(0.75)
    assert (summary["breaches"], summary["escalations"], summary["acknowledgements"]) == (1, 1, 1)
    # dana came back to kai (k1), eli came back and got kai, not rosa (k7)
    assert (summary["returning_authors"], summary["answered_by_same_person"]) == (2, 1)
    assert summary["continuity"] == pytest.approx(0.5)
    assert (summary["open"], summary["awaiting"]) == (5, 2)
    days = body["days"]
    assert [day["label"] for day in days] == [f"2026-11-{d}" for d in range(19, 26)]
    assert [day["open"] for day in days] == [0, 1, 1, 1, 3, 5, 5]  # fay from Friday; k1 resolved on Tuesday
    monday = days[4]
    assert (
        monday["responses"] == 3
        and monday["breaches"] == 1
        and monday["first_response_median_seconds"] == 45 * 60
    )
    people = lines(body, "people", "person")
    assert set(people) == {"kai", "rosa", "sid", None}
    assert people["kai"]["name"] == "Kai Kettle" and people["kai"]["responses"] == 2
    assert (people["kai"]["returning_authors"], people["kai"]["answered_by_same_person"]) == (2, 1)
    assert people["rosa"]["breaches"] == 1 and people["rosa"]["acknowledgements"] == 1
    assert people["sid"]["first_response_median_seconds"] == 45 * 60 and people["sid"]["open"] == 2
    assert people[None]["awaiting"] == 1 and people[None]["responses"] == 0
    teams = lines(body, "teams", "team")
    assert set(teams) == {"care", "social"} and teams["care"]["name"] == "Care"
    assert teams["care"]["responses"] == 3 and teams["social"]["open"] == 2
    assert body["csv"]["people"].startswith("/api/reports/people.csv?")


async def test_the_agency_admin_reads_every_tenant_and_can_narrow_to_one(
    agency: Agency, http: httpx.AsyncClient
) -> None:
    body = await get_report(http, agency, "ada")
    summary = body["summary"]
    assert summary["first_responses"] == 6  # and 5 and 10 minutes in northwind
    assert summary["first_response_median_seconds"] == 20 * 60
    assert summary["first_response_p90_seconds"] == 60 * 60
    assert {(line["tenant"], line["team"]) for line in body["teams"]} == {
        ("kettle", "care"), ("kettle", "social"), ("northwind", "north"),
    }  # fmt: skip
    north = await get_report(http, agency, "ada", tenant="northwind")
    assert north["summary"]["first_responses"] == 2 and set(lines(north, "people", "person")) == {
        "nils",
        "sam",
    }
    assert north["summary"]["returning_authors"] == 0  # dana's answers in kettle are another tenant's


async def test_a_team_lead_reads_their_team_and_their_own_work(
    agency: Agency, http: httpx.AsyncClient
) -> None:
    body = await get_report(http, agency, "rosa")
    summary = body["summary"]
    assert summary["first_responses"] == 3  # not sid's in social
    assert summary["first_response_median_seconds"] == 30 * 60
    assert (summary["open"], summary["awaiting"]) == (3, 1)
    assert set(lines(body, "people", "person")) == {"kai", "rosa", None}
    assert set(lines(body, "teams", "team")) == {"care"}
    kai = await get_report(http, agency, "rosa", person="kai")
    assert kai["summary"]["responses"] == 2
    for refused in ({"person": "sid"}, {"tenant": "kettle", "team": "social"}, {"tenant": "northwind"}):
        response = await http.get("/api/reports", params=refused, headers=agency.as_("rosa"))
        assert response.status_code == 404, (refused, response.text)


async def test_an_agent_reads_only_their_own_work(agency: Agency, http: httpx.AsyncClient) -> None:
    body = await get_report(http, agency, "kai")
    summary = body["summary"]
    assert summary["first_responses"] == 2 and summary["breaches"] == 0
    assert summary["first_response_median_seconds"] == 20 * 60
    assert summary["first_response_p90_seconds"] == 30 * 60
    assert (summary["open"], summary["awaiting"]) == (1, 0)
    assert set(lines(body, "people", "person")) == {"kai"}
    assert "Rosa" not in json.dumps(body) and "sid" not in json.dumps(body)
    in_care = await get_report(http, agency, "kai", tenant="kettle", team="care")
    assert in_care["summary"]["responses"] == 2
    for refused in ({"person": "rosa"}, {"tenant": "kettle", "team": "social"}, {"tenant": "northwind"}):
        response = await http.get("/api/reports", params=refused, headers=agency.as_("kai"))
        assert response.status_code == 404, (refused, response.text)
    # an agent of two tenants: their own work in each
    sam = await get_report(http, agency, "sam")
    assert sam["summary"]["first_responses"] == 1 and sam["summary"]["first_response_median_seconds"] == 600
    assert (await get_report(http, agency, "sam", tenant="kettle"))["summary"]["responses"] == 0


@pytest.mark.parametrize("who", ["vera", "token"])
async def test_a_client_viewer_reads_their_tenants_figures_and_no_message_text(
    agency: Agency, http: httpx.AsyncClient, who: str
) -> None:
    body = await get_report(http, agency, who)
    assert body["summary"]["first_responses"] == 4 and body["summary"]["open"] == 5
    assert all(line["name"] is None for line in body["people"])  # people they may not see, by id
    assert all(line["name"] is None for line in body["teams"])
    answers = [json.dumps(body)]
    for table in ("days", "people", "teams"):
        response = await http.get(f"/api/reports/{table}.csv", headers=agency.as_(who))
        assert response.status_code == 200, response.text
        answers.append(response.text)
    for answer in answers:
        for secret in (*SECRETS, "4242", "Kai Kettle", "HYPERLINK", *NORTHWIND):
            assert secret not in answer, (secret, answer[:400])
    response = await http.get("/api/reports", params={"tenant": "northwind"}, headers=agency.as_(who))
    assert response.status_code == 404


async def test_no_figure_or_name_of_another_tenant_or_message_text_reaches_anyone(
    agency: Agency, http: httpx.AsyncClient
) -> None:
    for who in ("ada", "tina", "rosa", "kai", "vera", "token", "sam"):
        for bucket in ("day", "week"):
            body = await get_report(http, agency, who, bucket=bucket)
            text = json.dumps(body)
            for secret in (*SECRETS, "4242"):
                assert secret not in text, (who, secret)
            if who not in ("ada", "sam"):
                for other in NORTHWIND:
                    assert other not in text, (who, other)
    sam = json.dumps(await get_report(http, agency, "sam"))
    assert "Nils" not in sam and "nils" not in sam  # his teammate's work is not his


# -- CSV -------------------------------------------------------------------------------------------


async def test_every_table_comes_as_csv_with_a_file_name_and_safe_cells(
    agency: Agency, http: httpx.AsyncClient
) -> None:
    response = await http.get("/api/reports/people.csv", headers=agency.as_("tina"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert (
        response.headers["content-disposition"]
        == 'attachment; filename="stayhuman-people-20261119-20261125.csv"'
    )
    people = {row["person"]: row for row in csv.DictReader(io.StringIO(response.text))}
    assert people["sid"]["name"] == "'" + NAMES["sid"]  # a name that starts a formula stays text
    assert people["kai"]["responses"] == "2" and people["kai"]["continuity"] == "0.5000"
    days = list(
        csv.DictReader(
            io.StringIO((await http.get("/api/reports/days.csv", headers=agency.as_("tina"))).text)
        )
    )
    assert [row["label"] for row in days] == [f"2026-11-{d}" for d in range(19, 26)]
    assert days[4]["breaches"] == "1"
    weeks = await http.get(
        "/api/reports/teams.csv", params={"bucket": "week", "tz": "Europe/Berlin"}, headers=agency.as_("tina")
    )
    assert weeks.status_code == 200
    teams = {row["team"]: row for row in csv.DictReader(io.StringIO(weeks.text))}
    assert teams["care"]["name"] == "Care" and teams["social"]["first_response_median_seconds"] == "2700"


async def test_weeks_and_a_timezone_shape_the_rows(agency: Agency, http: httpx.AsyncClient) -> None:
    body = await get_report(http, agency, "tina", bucket="week", tz="Europe/Berlin")
    assert body["since"] == "2026-11-18T23:00:00Z"  # 19 November, midnight in Berlin
    assert [line["label"] for line in body["days"]] == ["2026-11-16", "2026-11-23"]
    assert [line["responses"] for line in body["days"]] == [0, 4]
    body = await get_report(http, agency, "tina", since="2026-11-20", until="2026-11-20", tz="Europe/Berlin")
    assert [line["label"] for line in body["days"]] == ["2026-11-20"] and body["summary"]["open"] == 1
    assert body["until"] == "2026-11-20T23:00:00Z"


# -- refusals --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/reports", {"team": "care"}, "tenant"),
        ("/api/reports", {"since": "2026-11-20", "until": "2026-11-19"}, "until"),
        ("/api/reports", {"since": "2025-01-01", "until": "2026-11-20"}, "until"),
        ("/api/reports", {"since": "yesterday"}, "since"),
        ("/api/reports", {"until": "2026-11-20T10:00:00"}, "until"),
        ("/api/reports", {"tz": "Nowhere/Zone"}, "tz"),
        ("/api/reports/secrets.csv", {}, "table"),
        ("/api/reports/days.csv", {"team": "care"}, "tenant"),
    ],
)
async def test_a_bad_parameter_is_a_400_naming_it(
    agency: Agency, http: httpx.AsyncClient, path: str, params: dict[str, str], field: str
) -> None:
    response = await http.get(path, params=params, headers=agency.as_("tina"))
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field and response.json()["error"]


async def test_an_invalid_parameter_is_a_400_naming_the_problem(
    agency: Agency, http: httpx.AsyncClient
) -> None:
    for params in ({"bucket": "month"}, {"tenant": "Kettle!"}, {"tz": "../../etc/passwd"}):
        response = await http.get("/api/reports", params=params, headers=agency.as_("tina"))
        assert response.status_code == 400 and response.json()["error"] == "invalid request", params


async def test_what_is_beyond_the_viewer_is_not_found_and_no_role_gives_no_reports(
    agency: Agency, http: httpx.AsyncClient
) -> None:
    for who, params in (
        ("tina", {"tenant": "northwind"}),
        ("tina", {"person": "nils"}),
        ("tina", {"tenant": "northwind", "team": "north"}),
        ("tina", {"tenant": "kettle", "team": "north"}),
        ("ada", {"tenant": "nope"}),
        ("ada", {"person": "no-such-person"}),
        ("vera", {"person": "nils"}),
    ):
        response = await http.get("/api/reports", params=params, headers=agency.as_(who))
        assert response.status_code == 404, (who, params, response.text)
        assert "Nordmann" not in response.text
    for path in ("/api/reports", "/api/reports/days.csv"):
        refused = await http.get(path, headers=agency.as_("nobody"))
        assert refused.status_code == 403 and refused.json()["field"] == "action"
        anonymous = await http.get(path)
        assert anonymous.status_code == 401 and anonymous.json()["field"] == "auth"


# -- any parameters --------------------------------------------------------------------------------


class Client:
    """One event loop and one ASGI client for many requests (hypothesis runs examples one by one)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL)
        self.agency: Agency | None = None

    def get(self, path: str, params: dict[str, str], headers: dict[str, str]) -> httpx.Response:
        return self.loop.run_until_complete(self.http.get(path, params=params, headers=headers))

    def close(self) -> None:
        self.loop.run_until_complete(self.http.aclose())
        self.loop.run_until_complete(self.app.state.engine.dispose())
        self.loop.close()


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    url = f"sqlite+aiosqlite:///{Path(tmp_path_factory.mktemp('reports')) / 'stayhuman.db'}"
    upgrade(url)
    running = Client(reports_app(url))

    async def seed() -> Agency:
        async with World(url) as world:
            return await build_agency(world)

    running.agency = running.loop.run_until_complete(seed())
    yield running
    running.close()


texts = st.text(st.characters(codec="utf-8"), max_size=24)
INSTANTS = [*TIMESTAMPS, "2026-11-20", "2026-11-24T12:00:00+01:00", "0001-01-01", "9999-12-31", "2026-02-30"]
PARAMS = st.fixed_dictionaries(
    {},
    optional={
        "tenant": st.sampled_from(["kettle", "northwind", "nope"]) | texts,
        "team": st.sampled_from(["care", "social", "north"]) | texts,
        "person": st.sampled_from(["kai", "rosa", "nils", "nobody"]) | texts,
        "since": st.sampled_from(INSTANTS) | texts,
        "until": st.sampled_from(INSTANTS) | texts,
        "bucket": st.sampled_from(["day", "week", "month", ""]) | texts,
        "tz": st.sampled_from(
            [
                "UTC",
                "Europe/Berlin",
                "Pacific/Kiritimati",
                "Etc/GMT+12",
                "Nowhere/Zone",
                "/etc/passwd",
                "a//b",
                "",
            ]
        )
        | texts,
    },
)


@properties(150)
@given(
    path=st.sampled_from(
        ["/api/reports", "/api/reports/days.csv", "/api/reports/people.csv", "/api/reports/x.csv"]
    ),
    params=PARAMS,
    who=st.sampled_from(["ada", "kai", "vera", "token"]),
)
@example(
    path="/api/reports",
    params={"tenant": "kettle", "team": "care", "bucket": "week", "tz": "Europe/Berlin"},
    who="vera",
)
@example(path="/api/reports/people.csv", params={"since": "2026-11-01", "until": "2026-11-30"}, who="kai")
@example(
    path="/api/reports",
    params={"since": "0001-01-02T00:00:00Z", "until": "0001-01-03", "tz": "Etc/GMT+12"},
    who="ada",
)
def test_any_parameters_get_an_answer_never_a_server_error(
    fuzzed: Client, path: str, params: dict[str, str], who: str
) -> None:
    assert fuzzed.agency is not None
    response = fuzzed.get(path, params, fuzzed.agency.as_(who))
    assert response.status_code < 500, (params, response.text[:500])
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body
    elif who != "ada":
        for other in NORTHWIND:
            assert other not in response.text, (params, other)
        for secret in SECRETS:
            assert secret not in response.text
