"""The read endpoints over a real database (SQLite and PostgreSQL), without NATS: rows written as
the router, notify and the timeline consumer write them, read back through HTTP as each role.

One agency serves two tenants. kettle has the teams care (lead rosa; rosa, kai and sam) and
social (sid); northwind has a team also called care (sam and nils). ada is the agency admin,
tina kettle's tenant admin, vera kettle's client viewer. The clock stands still on a
Wednesday at 10:00 UTC.
"""

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import HTTPException
from hypothesis import given
from hypothesis import strategies as st

from services.api.actions import KeptCommands
from services.api.reads import decode_cursor, encode_cursor
from shared.db.models import AlertRow, CommandOutcomeRow, DeliveryRow, TimelineRow
from tests.api_world import Clock, SignedIn, World, bearer, build_api, client
from tests.fuzz import properties

T = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)  # a Wednesday
PEOPLE = ("ada", "tina", "rosa", "kai", "sid", "sam", "nils", "vera")


@dataclass
class Agency:
    world: World
    care: str = ""  # kettle's care team (id)
    social: str = ""
    north: str = ""  # northwind's care team
    kettle_fb: str = ""
    kettle_social_fb: str = ""
    north_fb: str = ""
    signed: dict[str, SignedIn] = field(default_factory=dict)

    def as_(self, person: str) -> dict[str, str]:
        return self.signed[person].headers

    async def conversation(self, account: str, **values: Any) -> str:
        tenant = "northwind" if account == self.north_fb else "kettle"
        team = {self.kettle_fb: self.care, self.kettle_social_fb: self.social, self.north_fb: self.north}
        values.setdefault("team_id", team[account])
        values.setdefault("opened_at", T - timedelta(hours=2))
        return await self.world.conversation(tenant, account, **values)


async def build_agency(world: World) -> Agency:
    """The agency of the module's docstring, everyone signed in (sessions of the still clock)."""
    await world.tenant("kettle")
    await world.tenant("northwind")
    for person in PEOPLE:
        await world.person(person, name=person.title())
    agency = Agency(world)
    agency.care = await world.team("kettle", "care", lead="rosa", members=["rosa", "kai", "sam"])
    agency.social = await world.team("kettle", "social", members=["sid"], name="Social media")
    agency.north = await world.team("northwind", "care", members=["sam", "nils"], name="North care")
    agency.kettle_fb = await world.account("kettle", agency.care, account_id="kettle-fb")
    agency.kettle_social_fb = await world.account("kettle", agency.social, account_id="kettle-social")
    agency.north_fb = await world.account("northwind", agency.north, account_id="north-fb")
    await world.grant("ada", "agency_admin")
    await world.grant("tina", "tenant_admin", "kettle")
    await world.grant("vera", "client_viewer", "kettle")
    for person in PEOPLE:
        agency.signed[person] = await world.session_for(person, created_at=T)
    return agency


@pytest.fixture
async def agency(database_url: str) -> AsyncIterator[Agency]:
    async with World(database_url) as world:
        yield await build_agency(world)


@pytest.fixture
def kept() -> KeptCommands:
    return KeptCommands()


@pytest.fixture
async def http(database_url: str, kept: KeptCommands) -> AsyncIterator[httpx.AsyncClient]:
    async with client(build_api(database_url, commands=kept, clock=Clock(T))) as http:
        yield http


async def walk(http: httpx.AsyncClient, path: str, headers: dict[str, str], **params: Any) -> list[str]:
    """Every page of a listing, following next_cursor; the ids in the order shown."""
    ids: list[str] = []
    cursor = None
    for _ in range(200):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await http.get(path, params=query, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        ids += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return ids
    raise AssertionError("the pages never end")


def due_order(rows: list[tuple[datetime | None, str]]) -> list[str]:
    return [ident for due, ident in sorted(rows, key=lambda r: (r[0] is None, r[0] or T, r[1]))]


# -- conversations ------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [4, 7, 200])
async def test_walking_every_page_shows_each_conversation_once_soonest_due_first(
    agency: Agency, http: httpx.AsyncClient, limit: int
) -> None:
    rows: list[tuple[datetime | None, str]] = []
    for number in range(30):  # five due times shared by six each, and six with no deadline
        due = T + timedelta(hours=number % 5 - 2) if number < 24 else None
        rows.append((due, await agency.conversation(agency.kettle_fb, due_at=due)))
    north = [await agency.conversation(agency.north_fb, due_at=T) for _ in range(3)]

    shown = await walk(http, "/api/conversations", agency.as_("tina"), limit=limit)

    assert shown == due_order(rows)
    assert len(set(shown)) == 30
    everything = await walk(http, "/api/conversations", agency.as_("ada"), limit=limit)
    assert sorted(everything) == sorted([ident for _, ident in rows] + north)
    assert len(everything) == len(set(everything)) == 33


async def test_each_item_says_who_where_what_and_whether_it_is_late(
    agency: Agency, http: httpx.AsyncClient
) -> None:
    long_text = "I waited " + "very " * 100 + "long"
    late = await agency.conversation(
        agency.kettle_fb,
        owner_id="kai",
        due_at=T - timedelta(minutes=5),
        warn_at=T - timedelta(minutes=20),
        deadline_kind="first_response",
        topic="refunds",
        priority="high",
        text=long_text,
        last_inbound_url="https://facebook.example/post/1?comment=2",
    )
    trap = await agency.conversation(
        agency.kettle_fb, due_at=T + timedelta(hours=1), last_inbound_url="javascript:alert(1)"
    )

    items = {
        item["id"]: item
        for item in (await http.get("/api/conversations", headers=agency.as_("tina"))).json()["items"]
    }

    item = items[late]
    assert item["tenant"] == "kettle" and item["account"] == "kettle-fb" and item["platform"] == "facebook"
    assert item["team"] == {"slug": "care", "name": "Care"}
    assert item["owner"] == {"id": "kai", "name": "Kai"}
    assert item["author"] == {"id": "author-1", "name": "Dana Reyes", "handle": "@dana"}
    assert (item["topic"], item["priority"], item["state"]) == ("refunds", "high", "open")
    assert len(item["last_inbound_text"]) == 280 and item["last_inbound_text"].endswith("…")
    assert item["last_inbound_text"].startswith("I waited very very")
    assert item["last_inbound_url"] == "https://facebook.example/post/1?comment=2"
    assert item["deadline_kind"] == "first_response"
    assert datetime.fromisoformat(item["due_at"]) == T - timedelta(minutes=5)
    assert datetime.fromisoformat(item["warn_at"]) == T - timedelta(minutes=20)
    assert datetime.fromisoformat(item["awaiting_since"]) == T - timedelta(hours=2)
    assert item["overdue"] is True
    assert items[trap]["overdue"] is False
    assert items[trap]["last_inbound_url"] is None
    assert items[trap]["owner"] is None


async def test_filters_narrow_the_list(agency: Agency, http: httpx.AsyncClient) -> None:
    care_open = await agency.conversation(agency.kettle_fb, due_at=T + timedelta(hours=1))
    care_late = await agency.conversation(
        agency.kettle_fb, owner_id="kai", due_at=T - timedelta(hours=1), text="Where is my LATTE?"
    )
    care_paused = await agency.conversation(agency.kettle_fb, state="paused", topic="refunds")
    social = await agency.conversation(
        agency.kettle_social_fb, platform="instagram", due_at=T + timedelta(minutes=30), text="100% wrong"
    )
    north = await agency.conversation(agency.north_fb, due_at=T - timedelta(hours=3))
    responded_late = await agency.conversation(
        agency.kettle_fb, state="responded", due_at=T - timedelta(hours=1), awaiting_since=None
    )

    async def ids(person: str, **params: Any) -> set[str]:
        response = await http.get("/api/conversations", params=params, headers=agency.as_(person))
        assert response.status_code == 200, response.text
        return {item["id"] for item in response.json()["items"]}

    assert await ids("ada", tenant="kettle", team="care") == {
        care_open,
        care_late,
        care_paused,
        responded_late,
    }
    assert await ids("ada", tenant="northwind", team="care") == {north}  # the same slug, another tenant
    assert await ids("ada", tenant="northwind") == {north}
    assert await ids("tina", tenant="northwind") == set()  # not theirs: nothing, not an error
    assert await ids("ada", owner="kai") == {care_late}
    assert await ids("ada", state="paused") == {care_paused}
    assert await ids("ada", platform="instagram") == {social}
    assert await ids("ada", topic="refunds") == {care_paused}
    assert await ids("ada", q="is MY latte") == {care_late}  # any case
    assert await ids("ada", q="100%") == {social}  # % is a character, not a wildcard
    assert await ids("ada", q="%") == {social}
    assert await ids("ada", overdue="true") == {care_late, north}  # responded: nothing awaits
    assert await ids("ada", overdue="false") == {care_open, care_paused, social, responded_late}
    assert await ids("ada", due_before=(T + timedelta(minutes=45)).isoformat()) == {
        care_late,
        social,
        north,
        responded_late,
    }
    assert await ids("kai") == {care_open, care_late, care_paused, responded_late}  # their team's

    for params, field_name in (
        ({"team": "care"}, "tenant"),  # a team slug means nothing without its tenant
        ({"state": "lost"}, "state"),
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"overdue": "maybe"}, "overdue"),
        ({"due_before": "2026-11-25T10:00:00"}, "due_before"),  # no offset
        ({"due_before": "0001-01-01T00:00:00+01:00"}, "due_before"),  # before year 1 in UTC
        ({"q": "x" * 201}, "q"),
        ({"q": "a\x00b"}, "q"),
        ({"tenant": "Kettle Co"}, "tenant"),
    ):
        response = await http.get("/api/conversations", params=params, headers=agency.as_("ada"))
        assert response.status_code == 400, (params, response.text)
        body = response.json()
        named = {body.get("field")} | {problem["field"] for problem in body.get("problems", [])}
        assert field_name in named, (params, body)


async def test_a_cursor_that_is_not_one_is_refused_naming_the_cursor(
    agency: Agency, http: httpx.AsyncClient
) -> None:
    for number in range(3):
        await agency.conversation(agency.kettle_fb, due_at=T + timedelta(minutes=number))
    first = (await http.get("/api/conversations?limit=1", headers=agency.as_("tina"))).json()
    assert first["next_cursor"]
    history_cursor = encode_cursor("opened", T.isoformat(), "0" * 32)
    for cursor in (
        "!!!",
        "not-a-cursor",
        base64.urlsafe_b64encode(b"[1,2,3]").decode(),
        history_cursor,  # another listing's
        encode_cursor("due", "yesterday", "x"),
        encode_cursor("due", T.isoformat(), {"id": 1}),
        first["next_cursor"][:-3],
    ):
        response = await http.get("/api/conversations", params={"cursor": cursor}, headers=agency.as_("tina"))
        assert response.status_code == 400, (cursor, response.text)
        assert response.json()["field"] == "cursor"
        assert "cursor" in response.json()["error"]


@properties(400)
@given(text=st.text(max_size=80) | st.binary(max_size=60).map(lambda b: base64.urlsafe_b64encode(b).decode()))
def test_any_cursor_text_decodes_or_is_a_400(text: str) -> None:
    for kind, arity in (("due", 2), ("opened", 2)):
        try:
            decode_cursor(kind, text, arity)
        except HTTPException as error:
            assert error.status_code == 400


async def test_a_client_viewer_reads_no_conversation_text(agency: Agency, http: httpx.AsyncClient) -> None:
    conversation = await agency.conversation(agency.kettle_fb, text="my order number is 1234")
    listing = await http.get("/api/conversations", headers=agency.as_("vera"))
    assert listing.status_code == 403
    assert "1234" not in listing.text and listing.json()["field"] == "action"
    one = await http.get(f"/api/conversations/{conversation}", headers=agency.as_("vera"))
    assert one.status_code == 404 and "1234" not in one.text
    assert (await http.get("/api/people", headers=agency.as_("vera"))).status_code == 403
    assert (await http.get("/api/stream?max_seconds=1", headers=agency.as_("vera"))).status_code == 403
    anonymous = await http.get("/api/conversations")
    assert anonymous.status_code == 401 and anonymous.json()["field"] == "auth"


# -- one conversation -----------------------------------------------------------------------------


async def test_a_conversation_shows_its_messages_timeline_deadline_and_alerts(
    agency: Agency, http: httpx.AsyncClient
) -> None:
    world = agency.world
    conversation = await agency.conversation(
        agency.kettle_fb, owner_id="kai", assignment_reason="continuity: kai answered dana last time"
    )
    await world.interaction(conversation, text="Hello?", created_at=T - timedelta(hours=2), external_id="m1")
    await world.interaction(
        conversation,
        text="Hello, how can we help?",
        direction="outbound",
        created_at=T - timedelta(hours=1),
        external_id="m2",
    )
    await world.interaction(  # an edit of m1: shown once, as edited
        conversation,
        text="Hello? Anyone?",
        created_at=T - timedelta(hours=2),
        received_at=T - timedelta(minutes=50),
        external_id="m1",
        edit_version=7,
        id="e" * 32,
    )
    await world.interaction(
        conversation,
        text="never mind",
        created_at=T - timedelta(minutes=30),
        external_id="m3",
        retracted_at=T - timedelta(minutes=20),
        url="data:text/html,<script>",
    )
    await world.deadline(
        conversation,
        due_at=T + timedelta(minutes=30),
        version=3,
        acknowledged_by="kai",
        acknowledged_at=T - timedelta(minutes=1),
    )
    await world.add(
        TimelineRow(
            id="b",
            seq=12,
            tenant_id="kettle",
            conversation_id=conversation,
            at=T,
            kind="x.second",
            summary="2",
        ),
        TimelineRow(
            id="a",
            seq=11,
            tenant_id="kettle",
            conversation_id=conversation,
            at=T - timedelta(hours=2),
            kind="conversation.opened",
            actor="router",
            summary="Opened",
            detail='{"thread_id": "t-1"}',
        ),
        AlertRow(
            id="alert-1",
            conversation_id=conversation,
            deadline_version=3,
            step="warning",
            tenant_id="kettle",
            recipients="kai@example.com",
            status="sent",
            last_error="smtp said something about kai@example.com",
        ),
        DeliveryRow(
            id="alert-1|email|kai",
            alert_id="alert-1",
            conversation_id=conversation,
            deadline_version=3,
            step="warning",
            tenant_id="kettle",
            channel="email",
            person_id="kai",
            status="sent",
        ),
    )

    response = await http.get(f"/api/conversations/{conversation}", headers=agency.as_("kai"))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["conversation"]["id"] == conversation
    assert body["why"] == "continuity: kai answered dana last time"
    messages = body["messages"]
    assert [(m["text"], m["direction"], m["edited"], m["retracted"]) for m in messages] == [
        ("Hello? Anyone?", "inbound", True, False),
        ("Hello, how can we help?", "outbound", False, False),
        ("never mind", "inbound", False, True),
    ]
    assert messages[2]["url"] is None  # not http(s)
    assert body["messages_complete"] is True
    assert [(entry["seq"], entry["kind"]) for entry in body["timeline"]] == [
        (11, "conversation.opened"),
        (12, "x.second"),
    ]
    assert body["timeline"][0]["detail"] == {"thread_id": "t-1"}
    assert body["deadline"]["version"] == 3 and body["deadline"]["acknowledged_by"] == "kai"
    assert [alert["step"] for alert in body["alerts"]] == ["warning"]
    assert [(d["channel"], d["person"], d["status"]) for d in body["deliveries"]] == [
        ("email", "kai", "sent")
    ]
    assert "kai@example.com" not in response.text  # recipients and errors stay inside


async def test_a_conversation_the_viewer_may_not_see_is_not_found(
    agency: Agency, http: httpx.AsyncClient
) -> None:
    social = await agency.conversation(agency.kettle_social_fb)
    north = await agency.conversation(agency.north_fb)
    for person, conversation in (("kai", social), ("rosa", social), ("tina", north), ("nils", social)):
        response = await http.get(f"/api/conversations/{conversation}", headers=agency.as_(person))
        assert response.status_code == 404, (person, response.text)
        assert response.json() == {"error": "no conversation", "field": "conversation"}
    assert (await http.get(f"/api/conversations/{'f' * 32}", headers=agency.as_("ada"))).status_code == 404
    malformed = await http.get("/api/conversations/not-an-id", headers=agency.as_("ada"))
    assert malformed.status_code == 400
    assert (await http.get(f"/api/conversations/{north}", headers=agency.as_("sam"))).status_code == 200


async def test_author_history_lists_the_same_authors_earlier_conversations_newest_first(
    agency: Agency, http: httpx.AsyncClient
) -> None:
    earlier = [
        await agency.conversation(agency.kettle_fb, opened_at=T - timedelta(days=day), state="resolved")
        for day in (30, 20, 10)
    ]
    social = await agency.conversation(agency.kettle_social_fb, opened_at=T - timedelta(days=5))
    now = await agency.conversation(agency.kettle_fb, opened_at=T - timedelta(days=1))
    await agency.conversation(agency.kettle_fb, opened_at=T)  # later than the one asked about
    await agency.conversation(agency.north_fb, opened_at=T - timedelta(days=3))  # another tenant
    await agency.conversation(agency.kettle_fb, opened_at=T - timedelta(days=4), author_id="someone-else")
    await agency.conversation(agency.kettle_fb, opened_at=T - timedelta(days=6), platform="x")

    path = f"/api/conversations/{now}/author-history"
    assert await walk(http, path, agency.as_("tina"), limit=2) == [social, *reversed(earlier)]
    # kai sees care's conversations only: social's is not in his history
    assert await walk(http, path, agency.as_("kai"), limit=1) == list(reversed(earlier))
    north = await agency.conversation(agency.north_fb)
    assert (
        await http.get(f"/api/conversations/{north}/author-history", headers=agency.as_("kai"))
    ).status_code == 404


# -- people and teams -----------------------------------------------------------------------------


async def test_people_show_load_status_shift_absence_visible_teams_and_what_they_own(
    agency: Agency, http: httpx.AsyncClient
) -> None:
    world = agency.world
    await world.person("lena", name="Lena", working_hours='{"wed": [["09:00", "17:00"]]}', load=3, capacity=5)
    await world.person("otto", name="Otto", working_hours='{"wed": [["18:00", "22:00"]]}')
    await world.person(
        "omar",
        name="Omar",
        out_of_office_from=T - timedelta(days=1),
        out_of_office_until=T + timedelta(days=1),
    )
    await world.person("zoe", name="Zoe", status="away", working_hours='{"wed": [["nine", "five"]]}')
    shift = await world.team("kettle", "shift", members=["lena", "otto", "omar", "zoe"])
    await agency.conversation(agency.kettle_fb, owner_id="sam")
    await agency.conversation(agency.kettle_fb, owner_id="sam", state="resolved")
    await agency.conversation(agency.north_fb, owner_id="sam")
    await agency.conversation(agency.north_fb, owner_id="sam", state="paused")

    async def people(person: str, **params: str) -> dict[str, dict[str, Any]]:
        response = await http.get("/api/people", params=params, headers=agency.as_(person))
        assert response.status_code == 200, response.text
        return {item["id"]: item for item in response.json()["items"]}

    seen = await people("tina")  # her tenant's teams, and those it gives a role without a team
    assert {"lena", "otto", "omar", "zoe", "rosa", "kai", "sid", "sam", "tina", "vera"} == set(seen)
    lena, otto, omar, zoe = seen["lena"], seen["otto"], seen["omar"], seen["zoe"]
    assert (lena["on_shift"], lena["available"], lena["load"], lena["capacity"]) == (True, True, 3, 5)
    assert (otto["on_shift"], otto["available"]) == (False, False)
    assert (omar["on_shift"], omar["out_of_office"], omar["available"]) == (True, True, False)
    assert datetime.fromisoformat(omar["out_of_office_until"]) == T + timedelta(days=1)
    assert (zoe["status"], zoe["on_shift"], zoe["available"]) == ("away", None, None)  # hours unreadable
    assert lena["teams"] == [{"tenant": "kettle", "slug": "shift", "name": "Shift"}]
    # sam serves both tenants: kettle's admin sees kettle's team and what sam owns there only
    assert seen["sam"]["teams"] == [{"tenant": "kettle", "slug": "care", "name": "Care"}]
    assert seen["sam"]["open_owned"] == 1
    everything = await people("ada")
    assert [team["tenant"] for team in everything["sam"]["teams"]] == ["kettle", "northwind"]
    assert everything["sam"]["open_owned"] == 3

    assert set(await people("ada", tenant="northwind")) == {"sam", "nils"}
    assert set(await people("ada", tenant="kettle", team="care")) == {"rosa", "kai", "sam"}
    assert set(await people("kai")) == {"rosa", "kai", "sam"}  # themselves and their team
    assert set(await people("nils")) == {"sam", "nils"}
    assert (await http.get("/api/people?team=care", headers=agency.as_("ada"))).status_code == 400
    assert shift


async def test_teams_show_lead_members_queue_overdue_and_who_waits_longest(
    agency: Agency, http: httpx.AsyncClient
) -> None:
    await agency.conversation(
        agency.kettle_fb, awaiting_since=T - timedelta(hours=5), due_at=T - timedelta(hours=1)
    )
    await agency.conversation(
        agency.kettle_fb, awaiting_since=T - timedelta(hours=1), due_at=T + timedelta(hours=1)
    )
    await agency.conversation(
        agency.kettle_fb, owner_id="kai", awaiting_since=T - timedelta(hours=9), due_at=T - timedelta(hours=2)
    )
    await agency.conversation(agency.kettle_fb, state="resolved", awaiting_since=None)
    await agency.conversation(agency.north_fb, due_at=T - timedelta(hours=1))

    response = await http.get("/api/teams", headers=agency.as_("tina"))

    assert response.status_code == 200, response.text
    teams = {team["slug"]: team for team in response.json()["items"]}
    assert set(teams) == {"care", "social"}
    care = teams["care"]
    assert care["tenant"] == "kettle" and care["name"] == "Care"
    assert care["lead"] == {"id": "rosa", "name": "Rosa"}
    assert [member["id"] for member in care["members"]] == ["kai", "rosa", "sam"]
    assert (care["queue"], care["overdue"]) == (2, 2)
    assert datetime.fromisoformat(care["oldest_waiting"]) == T - timedelta(hours=5)
    assert (teams["social"]["queue"], teams["social"]["overdue"], teams["social"]["oldest_waiting"]) == (
        0,
        0,
        None,
    )
    everything = (await http.get("/api/teams", headers=agency.as_("ada"))).json()["items"]
    assert [(team["tenant"], team["slug"]) for team in everything] == [
        ("kettle", "care"),
        ("kettle", "social"),
        ("northwind", "care"),
    ]
    assert [t["slug"] for t in (await http.get("/api/teams", headers=agency.as_("kai"))).json()["items"]] == [
        "care"
    ]
    only_north = (await http.get("/api/teams?tenant=northwind", headers=agency.as_("ada"))).json()["items"]
    assert [(team["slug"], team["queue"], team["overdue"]) for team in only_north] == [("care", 1, 1)]


# -- my work ----------------------------------------------------------------------------------------


async def test_my_work_lists_what_i_own_in_every_tenant_i_serve(
    agency: Agency, http: httpx.AsyncClient
) -> None:
    kettle = await agency.conversation(agency.kettle_fb, owner_id="sam", due_at=T + timedelta(hours=2))
    north = await agency.conversation(agency.north_fb, owner_id="sam", due_at=T + timedelta(hours=1))
    paused = await agency.conversation(agency.north_fb, owner_id="sam", state="paused")
    responded = await agency.conversation(
        agency.kettle_fb, owner_id="sam", state="responded", due_at=T + timedelta(hours=3)
    )
    await agency.conversation(agency.kettle_fb, owner_id="sam", state="resolved")
    await agency.conversation(agency.kettle_fb, owner_id="kai", due_at=T)
    await agency.conversation(agency.kettle_fb, due_at=T)  # the queue: nobody's

    assert await walk(http, "/api/my-work", agency.as_("sam"), limit=1) == [north, kettle, responded, paused]
    assert await walk(http, "/api/my-work", agency.as_("nils")) == []

    token = await agency.world.token_for("kettle")
    response = await http.get("/api/my-work", headers=bearer(token))
    assert response.status_code == 403
    assert response.json()["field"] == "auth" and "token" in response.json()["error"]


# -- command outcomes -------------------------------------------------------------------------------


async def test_a_commands_outcome_is_seen_by_who_may_see_what_it_was_about(
    agency: Agency, http: httpx.AsyncClient
) -> None:
    conversation = await agency.conversation(agency.kettle_fb)
    pending = await http.get("/api/commands/cmd-00000001", headers=agency.as_("kai"))
    assert pending.status_code == 200
    assert pending.json() == {
        "command_id": "cmd-00000001",
        "status": "pending",
        "outcome_url": "/api/commands/cmd-00000001",
    }
    await agency.world.add(
        CommandOutcomeRow(
            command_id="cmd-claimed",
            tenant_id="kettle",
            conversation_id=conversation,
            command_type="conversation.claim",
            issued_by="kai",
            outcome="applied",
            reason="kai owns it now",
            at=T,
        ),
        CommandOutcomeRow(
            command_id="cmd-refused",
            tenant_id="kettle",
            conversation_id=conversation,
            command_type="conversation.claim",
            issued_by="sam",
            outcome="rejected",
            code="at_capacity",
            reason="sam is at capacity",
            at=T,
        ),
        CommandOutcomeRow(
            command_id="cmd-status",
            person_id="kai",
            command_type="person.set_status",
            issued_by="kai",
            outcome="applied",
            at=T,
        ),
    )

    applied = (await http.get("/api/commands/cmd-claimed", headers=agency.as_("tina"))).json()
    assert (applied["status"], applied["reason"], applied["conversation_id"]) == (
        "applied",
        "kai owns it now",
        conversation,
    )
    rejected = (await http.get("/api/commands/cmd-refused", headers=agency.as_("kai"))).json()
    assert (rejected["status"], rejected["code"], rejected["reason"]) == (
        "rejected",
        "at_capacity",
        "sam is at capacity",
    )
    for person, command, status in (
        ("nils", "cmd-claimed", 404),  # another tenant's conversation
        ("sid", "cmd-claimed", 404),  # another team's
        ("vera", "cmd-claimed", 404),
        ("kai", "cmd-status", 200),  # their own status
        ("rosa", "cmd-status", 200),  # their team's person
        ("sid", "cmd-status", 404),
        ("nils", "cmd-status", 404),
    ):
        response = await http.get(f"/api/commands/{command}", headers=agency.as_(person))
        assert response.status_code == status, (person, command, response.text)
    assert (await http.get("/api/commands/short", headers=agency.as_("kai"))).status_code == 400


# -- the stream -------------------------------------------------------------------------------------


async def test_the_stream_checks_who_asks_and_what_before_saying_live_updates_are_not_running(
    agency: Agency, http: httpx.AsyncClient
) -> None:
    """The stream itself is tested with NATS (tests/integration/test_api_live.py); an app served
    without its live hub refuses it plainly, after the checks every request gets."""
    assert (await http.get("/api/stream")).status_code == 401
    assert (await http.get("/api/stream", headers=agency.as_("vera"))).status_code == 403
    bad = await http.get("/api/stream", headers={**agency.as_("kai"), "Last-Event-ID": "garbage"})
    assert bad.status_code == 400 and bad.json()["field"] == "Last-Event-ID"
    assert (await http.get("/api/stream?max_seconds=301", headers=agency.as_("kai"))).status_code == 400
    for headers in (agency.as_("kai"), {**agency.as_("kai"), "Last-Event-ID": "42"}):
        answer = await http.get("/api/stream", headers=headers)
        assert answer.status_code == 503 and answer.json() == {"error": "live updates are not running"}
