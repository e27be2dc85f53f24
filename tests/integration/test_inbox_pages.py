"""The inbox's pages over a real database (SQLite and PostgreSQL), without NATS: what each role
sees in the HTML, the business-time countdowns, errors as pages, and nothing of another tenant.

One agency serves two tenants: kettle (team care: lead rosa, agents kai and sam) and
northwind (team north: nils and sam). tina is kettle's admin, vera its client viewer. The
clock stands still on Wednesday 2026-11-25 at 10:00 UTC; kettle's SLA calendar is open
Monday to Friday 09:00-17:00 in London.
"""

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.api.countdown import calendar_of
from services.api.pages import PAGE_CSP, safe_next
from shared.db.migrate import upgrade
from shared.db.models import CalendarRow, SlaPolicyRow, TimelineRow
from tests.api_world import Clock, SignedIn, World, build_api, client
from tests.fuzz import properties

T = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)  # a Wednesday, within kettle's hours
HOURS = {day: [["09:00", "17:00"]] for day in ("mon", "tue", "wed", "thu", "fri")}
STATIC = Path(__file__).resolve().parents[2] / "services" / "api" / "static"


@dataclass
class Agency:
    world: World
    care: str = ""
    north: str = ""
    kettle_fb: str = ""
    north_fb: str = ""
    signed: dict[str, SignedIn] = field(default_factory=dict)

    def as_(self, person: str) -> dict[str, str]:
        return self.signed[person].cookie_only


@pytest.fixture
async def agency(database_url: str) -> AsyncIterator[Agency]:
    async with World(database_url) as world:
        agency = Agency(world)
        await world.tenant("kettle", name="Kettle Coffee", vip=json.dumps(["@vip"]))
        await world.tenant("northwind", name="Northwind Tea")
        for person in ("tina", "rosa", "kai", "sam", "nils", "vera"):
            await world.person(person, name=person.title())
        agency.care = await world.team("kettle", "care", lead="rosa", members=["rosa", "kai", "sam"])
        agency.north = await world.team("northwind", "north", members=["sam", "nils"], name="North")
        agency.kettle_fb = await world.account("kettle", agency.care, account_id="kettle-fb")
        agency.north_fb = await world.account("northwind", agency.north, account_id="north-fb")
        await world.grant("tina", "tenant_admin", "kettle")
        await world.grant("vera", "client_viewer", "kettle")
        await world.add(
            CalendarRow(id="cal-london", tenant_id="kettle", name="office", timezone="Europe/London",
                        hours=json.dumps(HOURS)),
            SlaPolicyRow(id="sla-kettle", tenant_id="kettle", name="standard", first_response_seconds=3600,
                         calendar_id="cal-london"),
        )  # fmt: skip
        for person in ("tina", "rosa", "kai", "sam", "nils", "vera"):
            agency.signed[person] = await world.session_for(person, created_at=T)
        yield agency


@pytest.fixture
def clock() -> Clock:
    return Clock(T)


@pytest.fixture
async def http(database_url: str, clock: Clock) -> AsyncIterator[httpx.AsyncClient]:
    async with client(build_api(database_url, clock=clock)) as http:
        yield http


def text_of(html: str) -> str:
    """The page's words, tags dropped and spaces collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


async def kettle(agency: Agency, **values: object) -> str:
    values.setdefault("team_id", agency.care)
    values.setdefault("sla_policy_id", "sla-kettle")
    values.setdefault("opened_at", T - timedelta(minutes=30))
    return await agency.world.conversation("kettle", agency.kettle_fb, **values)  # type: ignore[arg-type]


async def northwind(agency: Agency, **values: object) -> str:
    values.setdefault("team_id", agency.north)
    values.setdefault("opened_at", T - timedelta(minutes=30))
    return await agency.world.conversation("northwind", agency.north_fb, **values)  # type: ignore[arg-type]


# -- signing in ---------------------------------------------------------------------------------


async def test_a_page_sends_whoever_is_not_signed_in_to_sign_in_and_back(http: httpx.AsyncClient) -> None:
    response = await http.get("/inbox/board?tenant=kettle")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Finbox%2Fboard%3Ftenant%3Dkettle"
    login = await http.get(response.headers["location"])
    assert login.status_code == 200
    assert 'data-next="/inbox/board?tenant=kettle"' in login.text
    assert login.headers["content-security-policy"] == PAGE_CSP


@pytest.mark.parametrize(
    ("given_next", "goes_to"),
    [
        ("/inbox/c/ab", "/inbox/c/ab"),
        ("//evil.example/x", "/inbox"),
        ("https://evil.example", "/inbox"),
        ("/\\evil.example", "/inbox"),
        ("/inbox\n", "/inbox"),
        (None, "/inbox"),
    ],
)
def test_after_signing_in_a_person_goes_only_to_a_page_of_this_site(
    given_next: str | None, goes_to: str
) -> None:
    assert safe_next(given_next) == goes_to


# -- My work ------------------------------------------------------------------------------------


async def test_my_work_lists_what_i_own_in_every_tenant_overdue_first_and_my_teams_queue(
    agency: Agency, http: httpx.AsyncClient
) -> None:
    later = await kettle(agency, owner_id="sam", due_at=T + timedelta(hours=3), text="Where is my grinder?")
    late = await kettle(
        agency, owner_id="sam", due_at=T - timedelta(minutes=5), text="Still waiting on a refund"
    )
    north = await northwind(agency, owner_id="sam", due_at=T + timedelta(hours=1), text="Darjeeling restock?")
    queued = await kettle(agency, due_at=T + timedelta(minutes=20), text="Do you deliver to Leeds?")
    others = await kettle(agency, owner_id="kai", due_at=T, text="Kai's customer")
    done = await kettle(agency, owner_id="sam", state="resolved", text="Thanks, all sorted")

    page = await http.get("/inbox", headers=agency.as_("sam"))

    assert page.status_code == 200, page.text
    mine = page.text.split('id="mine-h"')[1].split('id="queue-h"')[0]
    order = re.findall(r'data-row data-id="([0-9a-f]{32})"', mine)
    assert order == [late, north, later]  # soonest due first: the overdue one leads
    assert "Overdue" in text_of(mine.split(north)[0])
    assert "Northwind Tea" in mine and "Kettle Coffee" in mine
    queue = page.text.split('id="queue-h"')[1]
    assert re.findall(r'data-row data-id="([0-9a-f]{32})"', queue) == [queued]
    assert others not in page.text and done not in page.text


async def test_the_countdown_is_business_time_and_stands_still_outside_working_hours(
    agency: Agency, http: httpx.AsyncClient, clock: Clock
) -> None:
    # Due Thursday 10:00 London (= UTC in November): 24 hours away on the wall, 8 business hours.
    due = T + timedelta(days=1)
    await kettle(agency, owner_id="kai", due_at=due)
    calendar = calendar_of("Europe/London", json.dumps(HOURS))

    page = await http.get("/inbox", headers=agency.as_("kai"))
    assert 'data-clock="running"' in page.text
    assert 'data-seconds="28800"' in page.text  # 8 h: Wednesday 10-17 and Thursday 9-10
    assert "8h 00m left" in text_of(page.text)

    clock.now = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)  # Wednesday evening: closed
    page = await http.get("/inbox", headers=agency.as_("kai"))
    assert 'data-clock="closed"' in page.text
    left = calendar.elapsed(clock.now, due).total_seconds()
    assert left == 3600 and f'data-seconds="{int(left)}"' in page.text
    assert "1h 00m left, paused outside business hours until Thu 26 Nov 09:00 UTC" in text_of(page.text)

    clock.now = datetime(2026, 11, 26, 10, 30, tzinfo=UTC)  # past due, open: overdue by 30 min
    agency.signed["kai"] = await agency.world.session_for("kai", created_at=clock.now)
    page = await http.get("/inbox", headers=agency.as_("kai"))
    assert 'data-clock="overdue"' in page.text
    assert "Overdue overdue by 30m 00s" in text_of(page.text)


async def test_my_work_filters_and_pages_with_a_cursor(agency: Agency, http: httpx.AsyncClient) -> None:
    made = [await kettle(agency, owner_id="kai", due_at=T + timedelta(minutes=n)) for n in range(60)]
    urgent = await kettle(agency, owner_id="kai", due_at=T + timedelta(days=2), priority="urgent")

    first = await http.get("/inbox", headers=agency.as_("kai"))
    shown = re.findall(r'data-row data-id="([0-9a-f]{32})"', first.text)
    assert shown == made[:50]
    following = re.search(r'rel="next" href="([^"]+)"', first.text)
    assert following is not None
    second = await http.get(following.group(1).replace("&amp;", "&"), headers=agency.as_("kai"))
    assert re.findall(r'data-row data-id="([0-9a-f]{32})"', second.text) == [*made[50:], urgent]

    only = await http.get("/inbox", params={"priority": "urgent"}, headers=agency.as_("kai"))
    assert re.findall(r'data-row data-id="([0-9a-f]{32})"', only.text) == [urgent]
    overdue = await http.get("/inbox", params={"overdue": "1"}, headers=agency.as_("kai"))
    assert "Nothing of yours is open with these filters" in text_of(overdue.text)


async def test_a_filter_naming_another_agencys_tenant_is_not_found(
    agency: Agency, http: httpx.AsyncClient
) -> None:
    page = await http.get("/inbox", params={"tenant": "northwind"}, headers=agency.as_("kai"))
    assert page.status_code == 404
    assert "text/html" in page.headers["content-type"]
    assert "Not found" in page.text


async def test_a_client_viewer_is_sent_to_the_reports(agency: Agency, http: httpx.AsyncClient) -> None:
    page = await http.get("/inbox", headers=agency.as_("vera"))
    assert page.status_code == 303
    assert page.headers["location"] == "/inbox/reports"


# -- a conversation -----------------------------------------------------------------------------


async def test_a_conversation_shows_its_thread_timeline_author_and_the_actions_of_the_role(
    agency: Agency, http: httpx.AsyncClient
) -> None:
    earlier = await kettle(agency, owner_id="kai", state="resolved", opened_at=T - timedelta(days=3),
                           responded_at=T - timedelta(days=3) + timedelta(minutes=12), text="Love the beans")  # fmt: skip
    conversation = await kettle(agency, owner_id="kai", due_at=T + timedelta(hours=1), author_followers=12000,
                                language="en", author_handle="@vip")  # fmt: skip
    await agency.world.interaction(
        conversation, text="My order never arrived", created_at=T - timedelta(minutes=30)
    )
    await agency.world.interaction(conversation, text="Sorry! Sending another today.", direction="outbound",
                                   created_at=T - timedelta(minutes=20))  # fmt: skip
    await agency.world.add(
        TimelineRow(id="t1", seq=1, tenant_id="kettle", conversation_id=conversation, person_id="kai",
                    at=T - timedelta(minutes=29), kind="conversation.assigned", actor="router",
                    summary="Assigned to kai: answered this author before (continuity)", detail="{}")
    )  # fmt: skip

    page = await http.get(f"/inbox/c/{conversation}", headers=agency.as_("kai"))

    assert page.status_code == 200, page.text
    words = text_of(page.text)
    assert words.index("My order never arrived") < words.index("Sorry! Sending another today.")
    assert "reply from the brand" in words
    assert "Assigned to kai: answered this author before (continuity)" in words
    assert "VIP of Kettle Coffee" in words and "Followers: 12,000" in words and "Language: en" in words
    assert f'href="/inbox/c/{earlier}"' in page.text and "answered by Kai after 12m 00s" in words
    assert re.findall(r'data-action="([a-z-]+)"', page.text) == ["mark-responded", "pause", "resolve"]

    as_lead = await http.get(f"/inbox/c/{conversation}", headers=agency.as_("rosa"))
    assert re.findall(r'data-action="([a-z-]+)"', as_lead.text) == [
        "claim", "mark-responded", "pause", "reassign", "reassign", "resolve"
    ]  # fmt: skip
    give_to = as_lead.text.split('id="reassign-person"')[1].split("</select>")[0]
    assert re.findall(r'<option value="([a-z]+)"', give_to) == ["rosa", "sam"]  # care's people but its owner
    assert 'name="team" value="care"' in as_lead.text  # or back to care's queue

    await agency.world.deadline(
        conversation, due_at=T - timedelta(minutes=1), state="alerted", owner_id="kai"
    )
    alerted = await http.get(f"/inbox/c/{conversation}", headers=agency.as_("kai"))
    assert "acknowledge" in re.findall(r'data-action="([a-z-]+)"', alerted.text)


@pytest.mark.parametrize("person", ["kai", "rosa", "tina", "vera"])
async def test_another_tenants_conversation_is_not_found_by_its_address(
    agency: Agency, http: httpx.AsyncClient, person: str
) -> None:
    hidden = await northwind(agency, owner_id="nils", text="Secret northwind words")
    for part in ({}, {"HX-Request": "true"}):  # the page, and the part a live refresh asks for
        page = await http.get(f"/inbox/c/{hidden}", headers={**agency.as_(person), **part})
        path = f"/inbox/c/{hidden} {part}"
        assert page.status_code in (403, 404), path
        assert "Secret northwind words" not in page.text
        assert "text/html" in page.headers["content-type"]


async def test_what_customers_wrote_is_shown_as_text_never_as_markup(
    agency: Agency, http: httpx.AsyncClient
) -> None:
    hostile = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    conversation = await kettle(agency, owner_id="kai", text=hostile, author_name='"><b>Eve</b>', due_at=T)
    await agency.world.interaction(conversation, text=hostile, url="javascript:alert(3)")
    for path in ("/inbox", f"/inbox/c/{conversation}"):
        page = await http.get(path, headers=agency.as_("kai"))
        assert (
            "<script>alert" not in page.text and "<img src=x" not in page.text and "<b>Eve" not in page.text
        )
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        assert "javascript:" not in page.text


# -- the board ----------------------------------------------------------------------------------


async def test_the_board_shows_load_queues_and_what_breaches_within_the_hour_per_tenant(
    agency: Agency, http: httpx.AsyncClient
) -> None:
    soon = await kettle(agency, owner_id="kai", due_at=T + timedelta(minutes=40), text="Soon due")
    await kettle(agency, owner_id="kai", due_at=T + timedelta(hours=3), text="Due later")
    await kettle(agency, due_at=T + timedelta(hours=2), text="Queued one")
    await northwind(agency, owner_id="nils", due_at=T + timedelta(minutes=10), text="North soon")

    page = await http.get("/inbox/board", headers=agency.as_("rosa"))

    assert page.status_code == 200, page.text
    words = text_of(page.text)
    assert "Kettle Coffee" in words and "Northwind Tea" not in words and "North soon" not in words
    queues = text_of(page.text.split("<h3>Queues</h3>")[1].split("</table>")[0])
    assert "Care 1 0" in queues  # one queued, none overdue
    breaching = page.text.split("Breaching within the next hour")[1]
    assert re.findall(r'data-row data-id="([0-9a-f]{32})"', breaching) == [soon]
    assert "Due later" not in breaching


# -- what every page carries ----------------------------------------------------------------------


async def test_pages_carry_their_policy_and_the_assets_are_served_from_here(
    agency: Agency, http: httpx.AsyncClient
) -> None:
    page = await http.get("/inbox", headers=agency.as_("kai"))
    assert page.headers["content-security-policy"] == PAGE_CSP
    assert "cdn" not in page.text.lower()
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
        served = await http.get(asset)
        assert served.status_code == 200, asset
    assert {path.name for path in STATIC.iterdir()} == {"inbox.js", "inbox.css"}  # nothing vendored


@pytest.fixture(scope="module")
def fuzzed_inbox(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str]]:
    """One SQLite agency for every fuzzed address."""
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('fuzz') / 'inbox.db'}"

    async def build() -> dict[str, str]:
        await asyncio.to_thread(upgrade, url)
        async with World(url) as world:
            await world.tenant("kettle")
            await world.person("kai")
            team = await world.team("kettle", "care", members=["kai"])
            account = await world.account("kettle", team, account_id="kettle-fb")
            await world.conversation("kettle", account, team_id=team, owner_id="kai", due_at=T)
            return (await world.session_for("kai", created_at=T)).cookie_only

    return url, asyncio.run(build())


@properties(150)
@given(
    path=st.sampled_from(["/inbox", "/inbox/board", "/inbox/reports", "/inbox/configuration", "/login"]),
    part=st.booleans(),
    params=st.dictionaries(
        st.sampled_from(
            ["tenant", "priority", "overdue", "cursor", "next", "team", "person", "since", "until"]
        ),
        st.text(max_size=40),
        max_size=4,
    ),
)
def test_no_address_makes_a_page_fail(
    fuzzed_inbox: tuple[str, dict[str, str]], path: str, part: bool, params: dict[str, str]
) -> None:
    url, headers = fuzzed_inbox

    async def visit() -> httpx.Response:
        async with client(build_api(url, clock=Clock(T))) as http:
            return await http.get(
                path, params=params, headers={**headers, **({"HX-Request": "true"} if part else {})}
            )

    page = asyncio.run(visit())
    assert page.status_code in (200, 303, 400, 403, 404), (page.status_code, page.text)
    if page.status_code == 303:
        assert safe_next(page.headers["location"]) == page.headers["location"]


# -- configuration ------------------------------------------------------------------------------


async def test_the_configuration_page_shows_what_apply_set_to_who_may_read_it(
    agency: Agency, http: httpx.AsyncClient
) -> None:
    page = await http.get("/inbox/configuration", headers=agency.as_("rosa"))
    assert page.status_code == 200, page.text
    words = text_of(page.text)
    assert "Configuration of Kettle Coffee" in words
    assert "Care (care) Rosa Kai, Rosa, Sam" in words  # the team, its lead and members
    assert "Tina tenant_admin" in words and "Vera client_viewer" in words
    assert "standard (business hours: office)" in words and "normal 1h 00m" in words
    assert "office (Europe/London): mon 09:00\u201317:00" in words
    assert "Northwind" not in words and "North" not in words

    assert (await http.get("/inbox/configuration", headers=agency.as_("kai"))).status_code == 403
    other = await http.get("/inbox/configuration", params={"tenant": "northwind"}, headers=agency.as_("tina"))
    assert other.status_code == 404 and "Northwind" not in other.text


async def test_the_filter_form_as_a_browser_submits_it_empty_fields_and_all(
    agency: Agency, http: httpx.AsyncClient
) -> None:
    mine = await kettle(agency, owner_id="kai", due_at=T)
    page = await http.get("/inbox?tenant=&priority=", headers=agency.as_("kai"))
    assert page.status_code == 200, page.text
    assert mine in page.text
    reports = await http.get(
        "/inbox/reports?tenant=&team=&person=&since=&until=&bucket=day", headers=agency.as_("tina")
    )
    assert reports.status_code == 200, reports.text


# -- reports ------------------------------------------------------------------------------------


async def test_a_client_viewer_reads_reports_with_charts_and_csv_and_no_word_a_customer_wrote(
    agency: Agency, http: httpx.AsyncClient
) -> None:
    conversation = await kettle(agency, owner_id="kai", due_at=T, text="My card number is 4111")
    await agency.world.interaction(conversation, text="My card number is 4111")
    await northwind(agency, owner_id="nils", text="Northwind words")

    page = await http.get("/inbox/reports", params={"tenant": "kettle"}, headers=agency.as_("vera"))

    assert page.status_code == 200, page.text
    words = text_of(page.text)
    assert "4111" not in page.text and "Northwind words" not in page.text
    assert "SLA attainment" in words and "First response, median" in words
    assert page.text.count('role="img"') == 2  # the two charts, inline SVG
    assert "<script" not in page.text.split("<main")[1]
    csv_links = re.findall(r'class="csv" href="([^"]+)"', page.text)
    assert len(csv_links) == 3
    for link in csv_links:
        answer = await http.get(link.replace("&amp;", "&"), headers=agency.as_("vera"))
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
        assert "4111" not in answer.text

    other = await http.get("/inbox/reports", params={"tenant": "northwind"}, headers=agency.as_("vera"))
    assert other.status_code == 404 and "Northwind" not in text_of(other.text).replace("northwind", "")


async def test_the_reports_form_offers_the_tenants_teams_and_people_the_viewer_may_see(
    agency: Agency, http: httpx.AsyncClient
) -> None:
    page = await http.get("/inbox/reports", params={"tenant": "kettle"}, headers=agency.as_("tina"))
    assert page.status_code == 200, page.text
    form = page.text.split('<form class="filters"')[1].split("</form>")[0]
    assert re.findall(r'<option value="([a-z]+)"', form.split('name="team"')[1].split("</select>")[0]) == [
        "care"
    ]
    offered = re.findall(r'<option value="([a-z]+)"', form.split('name="person"')[1].split("</select>")[0])
    assert set(offered) == {"kai", "rosa", "sam"} and "nils" not in form  # who answers there
    narrowed = await http.get(
        "/inbox/reports",
        params={"tenant": "kettle", "team": "care", "person": "kai"},
        headers=agency.as_("tina"),
    )
    assert narrowed.status_code == 200 and '<option value="kai" selected>' in narrowed.text

    as_viewer = await http.get("/inbox/reports", params={"tenant": "kettle"}, headers=agency.as_("vera"))
    assert as_viewer.status_code == 200 and 'name="person"' not in as_viewer.text  # figures per tenant only
