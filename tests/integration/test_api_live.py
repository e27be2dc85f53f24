"""Live updates end to end: a real nats-server, each database, the api's app served by uvicorn, and
browsers reading `GET /api/stream` as an EventSource does (resuming with Last-Event-ID).

kettle has the teams care (lead rosa; rosa and kai) and social (sid); northwind has north (nils).
ada is the agency admin, tina kettle's tenant admin, nadia northwind's. Events are published on
their real subjects in SH_EVENTS, as the router and notify publish them; every event's text
carries a marker of its tenant, so a stream showing another tenant's event says so.
"""

import asyncio
import contextlib
import json
import re
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from nats.aio.client import Client
from nats.js import JetStreamContext
from sqlalchemy import delete, update
from sqlmodel import col

from services.api.live import LiveHub
from services.api.main import create_app
from services.router.service import subject_for
from shared.db.core import execute
from shared.db.models import ConversationRow, RoleGrantRow, WebSessionRow
from shared.events import (
    CommandApplied,
    CommandRejected,
    ConversationAssigned,
    ConversationPaused,
    Event,
    Rejection,
)
from shared.jetstream import StreamSettings, ensure_streams, publish_pipelined, stream_configs
from shared.messages import Outgoing
from stayhuman.natsserver import EmbeddedNats
from tests.api_world import World, api_settings, build_api
from tests.helpers import eventually

T = datetime(2026, 12, 1, 13, 40, tzinfo=UTC)
MARKER = re.compile(r"mark:([a-z]+-[0-9a-z-]+)")
VIEWERS = ("ada", "tina", "nadia", "rosa", "kai", "sid", "nils")


# -- the app, served --------------------------------------------------------------------------------


class QuietServer(uvicorn.Server):
    """uvicorn inside the test's event loop, leaving the test runner's signals alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def served(app: FastAPI, *, lifespan: str = "off") -> AsyncIterator[str]:
    """The app on a free loopback port; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = QuietServer(
        uvicorn.Config(app, log_config=None, access_log=False, lifespan=lifespan, timeout_graceful_shutdown=1)
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await eventually(lambda: _true(server.started or task.done()), what="uvicorn started")
        assert server.started, task.result() if task.done() else "not started"
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=15)
        sock.close()


async def _true(value: bool) -> bool:
    return value


# -- a browser ------------------------------------------------------------------------------------


@dataclass
class Browser:
    """An EventSource: it keeps every event it was sent and the id it would resume from, and
    reconnects with Last-Event-ID as a browser does."""

    base: str
    headers: dict[str, str]
    events: list[dict[str, Any]] = field(default_factory=list)
    body: list[str] = field(default_factory=list)
    last_id: str | None = None
    connections: int = 0
    ended: int = 0  # streams the server ended
    _task: asyncio.Task[None] | None = None

    def open(self, max_seconds: int = 30) -> None:
        self._task = asyncio.create_task(self.listen(max_seconds))

    async def cut(self) -> None:
        """The connection drops (a laptop closed, a network change)."""
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def listen(self, max_seconds: int = 30) -> None:
        """One connection, until the server ends the stream."""
        headers = dict(self.headers)
        if self.last_id is not None:
            headers["Last-Event-ID"] = self.last_id
        id_buffer = self.last_id
        async with (
            httpx.AsyncClient(base_url=self.base, timeout=30) as http,
            http.stream("GET", "/api/stream", params={"max_seconds": max_seconds}, headers=headers) as answer,
        ):
            assert answer.status_code == 200, await answer.aread()
            self.connections += 1
            fields: dict[str, str] = {}
            async for line in answer.aiter_lines():
                self.body.append(line)
                if line == "":  # dispatch, as the HTML standard says an EventSource does
                    self.last_id = id_buffer
                    if "data" in fields:
                        self.events.append(
                            {
                                "id": id_buffer,
                                "event": fields.get("event"),
                                "data": json.loads(fields["data"]),
                            }
                        )
                    fields = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if name == "id":
                        id_buffer = value
                    else:
                        fields[name] = value
        self.ended += 1

    def seen(self) -> list[str]:
        """What each event was about, in order: its marker, or `outcome:<command id>`."""
        return [
            MARKER.findall(e["data"]["summary"])[0]
            if e["event"] == "timeline"
            else f"outcome:{e['data']['command_id']}"
            for e in self.events
        ]

    def text(self) -> str:
        return "\n".join(self.body)


# -- the agency ---------------------------------------------------------------------------------


@dataclass
class Agency:
    js: JetStreamContext
    world: World
    app: FastAPI
    hub: LiveHub
    conversations: dict[str, str]  # label: id
    cookies: dict[str, dict[str, str]]
    base: str = ""

    def browser(self, viewer: str) -> Browser:
        return Browser(self.base, self.cookies[viewer])

    async def publish(self, *events: Event) -> None:
        await publish_pipelined(
            self.js,
            [
                Outgoing(subject_for(event), event.model_dump_json().encode(), f"test:{event.event_id}")
                for event in events
            ],
        )

    async def connected(self, count: int) -> None:
        await eventually(lambda: _true(len(self.hub.listeners()) == count), what=f"{count} sessions")

    def paused(self, label: str, marker: str | None = None) -> ConversationPaused:
        tenant = label.split("-")[0]
        return ConversationPaused(
            tenant_id=tenant,
            conversation_id=self.conversations[label],
            account_id=f"{tenant}-acct",
            occurred_at=T,
            reason=f"mark:{marker or label}",
            paused_at=T,
        )

    def reassigned(
        self, label: str, team: str, owner: str, previous: str, marker: str
    ) -> ConversationAssigned:
        """The conversation `label` given to `owner` in `team` (one of `self.teams`)."""
        tenant = label.split("-")[0]
        return ConversationAssigned(
            tenant_id=tenant,
            conversation_id=self.conversations[label],
            account_id=f"{tenant}-acct",
            occurred_at=T,
            team_id=self.teams[team],  # type: ignore[attr-defined]
            owner_id=owner,
            previous_owner_id=previous,
            reason=f"mark:{marker}",
            assigned_at=T,
            step="reassign",
        )


async def build_agency(world: World) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, str]]]:
    for tenant in ("kettle", "northwind"):
        await world.tenant(tenant)
    for person in VIEWERS:
        await world.person(person)
    teams = {
        "care": await world.team("kettle", "care", lead="rosa", members=["rosa", "kai"]),
        "social": await world.team("kettle", "social", members=["sid"]),
        "north": await world.team("northwind", "north", members=["nils"]),
    }
    await world.grant("ada", "agency_admin")
    await world.grant("tina", "tenant_admin", "kettle")
    await world.grant("nadia", "tenant_admin", "northwind")
    accounts = {
        "kettle": await world.account("kettle", teams["care"], account_id="kettle-acct"),
        "northwind": await world.account("northwind", teams["north"], account_id="northwind-acct"),
    }
    conversations = {}
    for label, team, owner in (
        ("kettle-care-kai", "care", "kai"),
        ("kettle-care-queue", "care", None),
        ("kettle-social-sid", "social", "sid"),
        ("northwind-north-nils", "north", "nils"),
    ):
        tenant = label.split("-")[0]
        conversations[label] = await world.conversation(
            tenant, accounts[tenant], team_id=teams[team], owner_id=owner, thread_id=label
        )
    cookies = {person: (await world.session_for(person)).headers for person in VIEWERS}
    return teams, conversations, cookies


@contextlib.asynccontextmanager
async def agency_served(
    nc: Client, database_url: str, *, recheck: timedelta = timedelta(seconds=30), **hub: Any
) -> AsyncIterator[Agency]:
    """The agency, and the api's app with a live hub of these sizes, served."""
    js = nc.jetstream()
    await ensure_streams(js, stream_configs(StreamSettings()))
    async with World(database_url) as world:
        teams, conversations, cookies = await build_agency(world)
        app = build_api(database_url, api_settings(database_url, live_recheck=recheck))
        live = LiveHub(js, app.state.sessions, **hub)
        await live.start()
        app.state.live = live
        agency = Agency(js, world, app, live, conversations, cookies)
        agency.teams = teams  # type: ignore[attr-defined]
        try:
            async with served(app) as base:
                agency.base = base
                yield agency
        finally:
            await live.stop()
            await app.state.engine.dispose()


# -- the tests ----------------------------------------------------------------------------------


async def test_every_viewer_receives_exactly_what_they_may_see_and_nothing_of_another_tenant(
    nc: Client, database_url: str
) -> None:
    async with agency_served(nc, database_url) as agency:
        browsers = {viewer: agency.browser(viewer) for viewer in VIEWERS}
        for browser in browsers.values():
            browser.open()
        await agency.connected(len(VIEWERS))
        care = agency.teams["care"]  # type: ignore[attr-defined]
        social = agency.teams["social"]  # type: ignore[attr-defined]
        kai_s = agency.conversations["kettle-care-kai"]
        events: list[Event] = [
            agency.paused("kettle-care-kai", "kettle-1"),
            agency.paused("kettle-social-sid", "kettle-2"),
            agency.paused("northwind-north-nils", "northwind-1"),
            # rosa gives kai's conversation to sid in social: both sides see it go
            ConversationAssigned(
                tenant_id="kettle",
                conversation_id=kai_s,
                account_id="kettle-acct",
                occurred_at=T,
                team_id=social,
                owner_id="sid",
                previous_owner_id="kai",
                reason="mark:kettle-3",
                assigned_at=T,
                step="reassign",
            ),
            agency.paused("kettle-care-kai", "kettle-4"),  # now social's: care sees it no more
            agency.paused("kettle-care-queue", "kettle-5"),
            # nils's status: his tenant's people, not kettle's
            CommandApplied(
                tenant_id="",
                occurred_at=T,
                command_id="cmd-nils-status",
                command_type="person.set_status",
                issued_by="nils",
                issued_at=T,
                person_id="nils",
                summary="mark:northwind-6",
            ),
            # a recompute of kettle: who reads its configuration
            CommandApplied(
                tenant_id="kettle",
                occurred_at=T,
                command_id="cmd-recompute",
                command_type="tenant.recompute",
                issued_by="apply",
                issued_at=T,
                summary="mark:kettle-7",
            ),
            # kai's claim of social's conversation refused: he hears it, though he sees it not
            CommandRejected(
                tenant_id="kettle",
                occurred_at=T,
                command_id="cmd-kai-claims",
                command_type="conversation.claim",
                issued_by="kai",
                issued_at=T,
                conversation_id=agency.conversations["kettle-social-sid"],
                code=Rejection.not_a_member,
                reason="mark:kettle-8",
            ),
        ]
        await agency.publish(*events)
        kettle_all = ["kettle-1", "kettle-2", "kettle-3", "kettle-4", "kettle-5"]
        expected = {
            "ada": [*kettle_all[:2], "northwind-1", *kettle_all[2:], "northwind-6", "outcome:cmd-nils-status",
                    "kettle-7", "outcome:cmd-recompute", "kettle-8", "outcome:cmd-kai-claims"],
            "tina": [*kettle_all, "kettle-7", "outcome:cmd-recompute", "kettle-8", "outcome:cmd-kai-claims"],
            "nadia": ["northwind-1", "northwind-6", "outcome:cmd-nils-status"],
            "rosa": ["kettle-1", "kettle-3", "kettle-5", "kettle-7", "outcome:cmd-recompute"],
            "kai": ["kettle-1", "kettle-3", "kettle-5", "kettle-8", "outcome:cmd-kai-claims"],
            "sid": ["kettle-2", "kettle-3", "kettle-4", "kettle-8", "outcome:cmd-kai-claims"],
            "nils": ["northwind-1", "northwind-6", "outcome:cmd-nils-status"],
        }  # fmt: skip
        for viewer, browser in browsers.items():
            last = expected[viewer][-1]
            await eventually(lambda b=browser, m=last: _true(m in b.seen()), what=f"{viewer}'s last event")
        # Every session got its last event, and each gets them in stream order: all has arrived.
        for viewer, browser in browsers.items():
            assert browser.seen() == expected[viewer], viewer
            ids = [int(e["id"]) for e in browser.events]
            assert ids == sorted(ids), viewer
        for viewer in ("tina", "rosa", "kai", "sid"):
            assert "northwind" not in browsers[viewer].text(), viewer
        for viewer in ("nadia", "nils"):
            assert "kettle" not in browsers[viewer].text(), viewer
        entry = next(
            e["data"] for e in browsers["rosa"].events if e["data"].get("kind") == "conversation.assigned"
        )
        assert (entry["conversation_id"], entry["summary"]) == (
            kai_s,
            "Assigned to sid, from kai (mark:kettle-3)",
        )
        assert entry["detail"]["team_id"] == social and entry["detail"]["team_id"] != care
        for browser in browsers.values():
            await browser.cut()
        await agency.connected(0)


async def test_a_browser_resumes_from_the_buffer_and_from_beyond_it_losing_and_repeating_nothing(
    nc: Client, database_url: str
) -> None:
    async with agency_served(nc, database_url, buffer_events=4) as agency:
        tina = agency.browser("tina")
        tina.open()
        await agency.connected(1)
        labels = ["kettle-care-kai", "kettle-care-queue", "kettle-social-sid"]
        await agency.publish(*(agency.paused(labels[n % 3], f"kettle-{n}") for n in range(3)))
        await eventually(lambda: _true(len(tina.events) == 3), what="the first three")
        await tina.cut()
        await agency.connected(0)

        # Missed while away, within the buffer: sent on reconnecting, then the live ones.
        await agency.publish(*(agency.paused(labels[n % 3], f"kettle-{n}") for n in range(3, 6)))
        await eventually(lambda: _true(agency.hub.head >= 6), what="the hub read them")
        assert tina.last_id is not None and agency.hub.recent.holds_after(int(tina.last_id))
        tina.open()
        await agency.connected(1)
        await agency.publish(agency.paused("kettle-care-kai", "kettle-6"))
        await eventually(lambda: _true(len(tina.events) == 7), what="the missed and the live one")
        await tina.cut()

        # Missed while away, more than the buffer holds (and northwind's between): from JetStream.
        away: list[Event] = []
        for n in range(7, 17):
            away.append(agency.paused(labels[n % 3], f"kettle-{n}"))
            away.append(agency.paused("northwind-north-nils", f"northwind-{n}"))
        await agency.publish(*away)
        await eventually(lambda: _true(agency.hub.head >= 27), what="the hub read them")
        assert tina.last_id is not None and not agency.hub.recent.holds_after(int(tina.last_id))
        tina.open()
        await agency.connected(1)
        await agency.publish(agency.paused("kettle-care-queue", "kettle-17"))
        await eventually(lambda: _true(len(tina.events) == 18), what="all of kettle's")
        assert tina.seen() == [f"kettle-{n}" for n in range(18)]
        assert tina.connections == 3 and "northwind" not in tina.text()

        # A resumption from nothing missed sends nothing again.
        await tina.cut()
        tina.open()
        await agency.connected(1)
        await agency.publish(agency.paused("kettle-care-kai", "kettle-18"))
        await eventually(lambda: _true(len(tina.events) == 19), what="the next live one")
        assert tina.seen() == [f"kettle-{n}" for n in range(19)]
        await tina.cut()


async def test_what_happened_while_nobody_was_connected_is_resumed_as_each_viewer_may_see_it(
    nc: Client, database_url: str
) -> None:
    async with agency_served(nc, database_url) as agency:
        browsers = {viewer: agency.browser(viewer) for viewer in ("rosa", "kai", "sid", "tina", "nadia")}
        for browser in browsers.values():
            browser.open()
        await agency.connected(len(browsers))
        await agency.publish(agency.paused("kettle-care-kai", "kettle-0"))
        await eventually(lambda: _true(browsers["kai"].seen() == ["kettle-0"]), what="kai's first event")
        for browser in browsers.values():
            await browser.cut()
        await agency.connected(0)

        # Nobody is connected: kai's conversation goes to sid in social, and on.
        await agency.publish(
            agency.paused("kettle-care-kai", "kettle-1"),
            agency.reassigned("kettle-care-kai", "social", "sid", "kai", "kettle-2"),
            agency.paused("kettle-care-kai", "kettle-3"),
            agency.paused("northwind-north-nils", "northwind-4"),
            agency.paused("kettle-care-queue", "kettle-5"),
        )
        await eventually(lambda: _true(agency.hub.head >= 6), what="the hub read them")
        for browser in browsers.values():
            browser.open()
        await agency.connected(len(browsers))
        await agency.publish(agency.paused("kettle-social-sid", "kettle-6"))
        expected = {
            "rosa": ["kettle-0", "kettle-1", "kettle-2", "kettle-5"],
            "kai": ["kettle-0", "kettle-1", "kettle-2", "kettle-5"],
            "sid": ["kettle-2", "kettle-3", "kettle-6"],
            "tina": ["kettle-0", "kettle-1", "kettle-2", "kettle-3", "kettle-5", "kettle-6"],
            "nadia": ["northwind-4"],
        }
        await eventually(lambda: _true("kettle-6" in browsers["tina"].seen()), what="the live one")
        await eventually(lambda: _true("kettle-6" in browsers["sid"].seen()), what="sid's live one")
        for viewer, browser in browsers.items():
            assert browser.seen() == expected[viewer], viewer
            assert browser.connections == 2, viewer
            await browser.cut()


async def test_a_conversation_moved_while_its_events_left_the_buffer_unseen_is_read_again(
    nc: Client, database_url: str
) -> None:
    async with agency_served(nc, database_url, buffer_events=4) as agency:
        kai = agency.browser("kai")
        kai.open()
        await agency.connected(1)
        await agency.publish(agency.paused("kettle-care-kai", "kettle-0"))  # the hub learns it is care's
        await eventually(lambda: _true(kai.seen() == ["kettle-0"]), what="kai's event")
        await kai.cut()
        await agency.connected(0)

        # Nobody is connected: the conversation goes to sid, and more than the buffer holds passes.
        await agency.publish(agency.reassigned("kettle-care-kai", "social", "sid", "kai", "kettle-1"))
        async with agency.world.sessions() as session:
            await execute(
                session,
                update(ConversationRow)
                .where(col(ConversationRow.id) == agency.conversations["kettle-care-kai"])
                .values(team_id=agency.teams["social"], owner_id="sid"),  # type: ignore[attr-defined]
            )
            await session.commit()
        await agency.publish(*(agency.paused("northwind-north-nils", f"northwind-{n}") for n in range(6)))
        await eventually(lambda: _true(agency.hub.head >= 8), what="the hub read them")
        assert not agency.hub.recent.holds_after(2)

        sid, kai = agency.browser("sid"), agency.browser("kai")
        sid.open()
        kai.open()
        await agency.connected(2)
        await agency.publish(
            agency.paused("kettle-care-kai", "kettle-2"), agency.paused("kettle-care-queue", "kettle-3")
        )
        await eventually(lambda: _true(sid.seen() == ["kettle-2"]), what="sid's event")
        await eventually(lambda: _true(kai.seen() == ["kettle-3"]), what="kai's event")
        assert "kettle-2" not in kai.seen() and "kettle-3" not in sid.seen()
        await sid.cut()
        await kai.cut()


async def test_a_session_too_slow_to_keep_up_is_closed_and_resumes_without_loss(
    nc: Client, database_url: str
) -> None:
    async with agency_served(nc, database_url, queue_events=2) as agency:
        tina = agency.browser("tina")

        async def browsing() -> None:  # an EventSource reconnects whenever the stream ends
            while True:
                await tina.listen(max_seconds=30)

        task = asyncio.create_task(browsing())
        try:
            await agency.connected(1)
            sent = 0
            for _burst in range(5):  # a burst the hub hands out at once overflows a queue of 2
                await agency.publish(
                    *(agency.paused("kettle-care-queue", f"kettle-{sent + n}") for n in range(40))
                )
                sent += 40
                await eventually(
                    lambda s=sent: _true(len(tina.events) >= s), what=f"{sent} events", timeout=20
                )
                if tina.ended:
                    break
            assert tina.ended >= 1 and tina.connections >= 2, "the slow session was never closed"
            assert tina.seen() == [f"kettle-{n}" for n in range(sent)]
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_a_stream_ends_once_its_viewer_signs_out_or_loses_a_role(nc: Client, database_url: str) -> None:
    async with agency_served(nc, database_url, recheck=timedelta(milliseconds=300)) as agency:
        kai, tina, rosa = agency.browser("kai"), agency.browser("tina"), agency.browser("rosa")
        for browser in (kai, tina, rosa):
            browser.open(max_seconds=60)
        await agency.connected(3)
        async with agency.world.sessions() as session:
            await execute(session, delete(WebSessionRow).where(col(WebSessionRow.person_id) == "kai"))
            await execute(session, delete(RoleGrantRow).where(col(RoleGrantRow.person_id) == "tina"))
            await session.commit()
        for n in range(20):  # the streams write, and check who they write for
            await agency.publish(agency.paused("kettle-care-kai", f"kettle-after-{n}"))
            await asyncio.sleep(0.1)
        await eventually(lambda: _true(kai.ended == 1 and tina.ended == 1), what="both streams ended")
        assert rosa.ended == 0 and "kettle-after-19" in rosa.seen()  # still who she was: still live
        await rosa.cut()
        async with httpx.AsyncClient(base_url=agency.base) as http:
            again = await http.get("/api/stream", params={"max_seconds": 1}, headers=kai.headers)
        assert again.status_code == 401


async def test_a_last_event_id_that_is_no_position_is_a_400_naming_it(nc: Client, database_url: str) -> None:
    async with agency_served(nc, database_url) as agency, httpx.AsyncClient(base_url=agency.base) as http:
        for bad in ("abc", "-1", "1.5", "1e3", "99999999999999999999999", "x" * 500):
            answer = await http.get(
                "/api/stream",
                headers={**agency.cookies["tina"], "Last-Event-ID": bad},
                params={"max_seconds": 1},
            )
            assert answer.status_code == 400, (bad, answer.text)
            assert answer.json()["field"] == "Last-Event-ID", bad
        anonymous = await http.get("/api/stream", params={"max_seconds": 1})
        assert anonymous.status_code == 401


async def test_the_service_runs_one_hub_from_its_lifespan(
    nats_server: EmbeddedNats, database_url: str
) -> None:
    async with World(database_url) as world:
        _teams, conversations, cookies = await build_agency(world)
    app = create_app(api_settings(database_url, nats_url=nats_server.url))
    async with served(app, lifespan="on") as base:
        hub = app.state.live
        assert isinstance(hub, LiveHub) and hub.running
        nc_js = hub.js
        assert nc_js is not None
        agency = Agency(nc_js, world, app, hub, conversations, cookies, base)
        tina = agency.browser("tina")
        tina.open()
        await agency.connected(1)
        await agency.publish(agency.paused("kettle-care-kai", "kettle-lifespan"))
        await eventually(lambda: _true(tina.seen() == ["kettle-lifespan"]), what="the event, live")
        await tina.cut()
    assert not hub.running
