"""Isolation: every route of the API, asked by every kind of viewer about every target of two
tenants, shows and does only what the roles table gives that viewer (SQLite and PostgreSQL).

The agency: kettle has the teams care (lead rosa; rosa, kai and sam) and social (sid), and a
conversation no team holds; northwind has north (lead nora; nora, nils and sam) and a team also
called care (nils). sam serves both tenants. ada is the agency admin, tina kettle's tenant
admin, vera its client viewer, nadia northwind's tenant admin; kettle has a tenant_admin token
and a client_viewer token. Every conversation has a message, a deadline, a timeline entry and a
command outcome and a reply written in the inbox (every account is connected for replies, so a
reply a viewer may send is sent); every person and tenant has a timeline entry and an outcome of their own. Each
carries a marker naming what it belongs to (`MARK<conv:kettle-care-1>`), so a body showing
something outside the viewer's scope says what.

The routes are read from the app as the service composes it (`create_app`), so a route added
later is walked without touching this file; a path parameter this file cannot fill fails the
test. What each viewer may see and do (`SIGHTS`) is written out by hand from the roles table,
not asked of services/api/access.py: that is what is under test.

For every route, method, viewer, target (each id of both tenants, and one that exists nowhere)
and body (one per person or team a body can name), the test checks:
(a) never a 5xx, and every 4xx is JSON with an "error" (a page of the inbox: an HTML page
    saying what went wrong);
(b) a target the viewer may not see answers 403 or 404 (or the very 400 the same request gets
    for a target that does not exist), and a write succeeds only on a target they may act on;
(c) no body (a listing, a page, an error, a stream) shows a marker outside the viewer's scope
    (a tenant's configuration also shows its people and teams to who may read it);
(d) every command sent is about a conversation or person the viewer may act on, as the viewer;
(e) an anonymous request answers 401 with JSON on every route but sign-in, setting a password
    and /healthz (a page of the inbox sends them to sign in instead).
And the other way round, so that the walk cannot pass by refusing everything: each viewer was
shown every conversation the table lets them see (its text, message, history and outcome),
and sent a command about every conversation and person the table lets them act on.
"""

import asyncio
import enum
import itertools
import re
import time
import types
import typing
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastapi.routing
import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from nats.aio.client import Client
from pydantic import BaseModel
from sqlalchemy import update
from sqlmodel import col
from starlette.routing import Mount

from services.api.actions import KeptCommands, Sendable
from services.api.live import LiveHub
from services.api.main import create_app
from services.router.service import subject_for
from shared import ids, subjects
from shared.commands import Acknowledge, Claim, Reassign, SendReply
from shared.db.core import execute
from shared.db.models import AccountRow, ApiTokenRow, CommandOutcomeRow, ReplyRow, TimelineRow
from shared.db.session import create_engine, session_factory, transaction
from shared.events import (
    CommandApplied,
    CommandRejected,
    ConversationPaused,
    Event,
    Platform,
    Rejection,
    ReplyEvent,
    ReplyState,
)
from shared.jetstream import StreamSettings, ensure_streams, publish_pipelined, stream_configs
from shared.messages import Outgoing
from tests.api_world import BASE_URL, Clock, SignedIn, World, api_settings, bearer
from tests.helpers import eventually

T = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)

# -- the agency ---------------------------------------------------------------------------------

TENANTS = ("kettle", "northwind")
TEAMS: dict[str, tuple[str, str, str | None, tuple[str, ...]]] = {  # key: tenant, slug, lead, members
    "kettle/care": ("kettle", "care", "rosa", ("rosa", "kai", "sam")),
    "kettle/social": ("kettle", "social", None, ("sid",)),
    "northwind/north": ("northwind", "north", "nora", ("nora", "nils", "sam")),
    "northwind/care": ("northwind", "care", None, ("nils",)),
}
PEOPLE = ("ada", "tina", "rosa", "kai", "sid", "vera", "sam", "nils", "nora", "nadia")
GRANTS = (
    ("ada", "agency_admin", ""),
    ("tina", "tenant_admin", "kettle"),
    ("vera", "client_viewer", "kettle"),
    ("nadia", "tenant_admin", "northwind"),
)
CONVERSATIONS: dict[str, tuple[str, str | None, str | None]] = {  # label: tenant, team, owner
    "kettle-care-1": ("kettle", "kettle/care", "kai"),
    "kettle-care-2": ("kettle", "kettle/care", "rosa"),
    "kettle-care-3": ("kettle", "kettle/care", None),
    "kettle-care-4": ("kettle", "kettle/care", "sam"),
    "kettle-social-1": ("kettle", "kettle/social", "sid"),
    "kettle-social-2": ("kettle", "kettle/social", None),
    "kettle-social-3": ("kettle", "kettle/social", "kai"),  # kai's, in a team he is not in
    "kettle-noteam-1": ("kettle", None, None),
    "northwind-north-1": ("northwind", "northwind/north", "nils"),
    "northwind-north-2": ("northwind", "northwind/north", "sam"),
    "northwind-north-3": ("northwind", "northwind/north", None),
    "northwind-care-1": ("northwind", "northwind/care", None),
}
# Who wrote the reply of each conversation nobody owns (an owner wrote their own's): someone every
# viewer who sees the conversation also sees.
REPLIED_BY = {
    "kettle-care-3": "rosa",
    "kettle-social-2": "sid",
    "kettle-noteam-1": "kai",
    "northwind-north-3": "nils",
    "northwind-care-1": "nils",
}
TOKENS: dict[str, tuple[str, str]] = {  # name: tenant, role
    "marktok-kettle-admin": ("kettle", "tenant_admin"),
    "marktok-kettle-viewer": ("kettle", "client_viewer"),
    "marktok-kettle-spare": ("kettle", "tenant_admin"),
    "marktok-northwind-admin": ("northwind", "tenant_admin"),
}
# Who serves each tenant (a member of one of its teams): the only people a command about one
# of its conversations may name.
SERVING = {
    tenant: frozenset(person for t, _, _, members in TEAMS.values() if t == tenant for person in members)
    for tenant in TENANTS
}

# The people of a tenant: those, and whom the configuration gives a role in it (admins, viewers).
PEOPLE_OF = {
    tenant: SERVING[tenant] | {person for person, _, granted in GRANTS if granted == tenant}
    for tenant in TENANTS
}

# -- what each viewer may see and do, by hand from the roles table -------------------------------


def labels(*prefixes: str) -> frozenset[str]:
    return frozenset(label for label in CONVERSATIONS if label.startswith(prefixes))


EVERY = frozenset(CONVERSATIONS)
KETTLE = labels("kettle-")
CARE = labels("kettle-care-")
CARE_PEOPLE = frozenset({"rosa", "kai", "sam"})
KETTLE_PEOPLE = frozenset({"rosa", "kai", "sam", "sid"})
EVERYONE = frozenset(PEOPLE)
# The people of a tenant: who serves in its teams, and whom the configuration gives a role in it.
KETTLE_PEOPLE_ALL = KETTLE_PEOPLE | {"tina", "vera"}
NOTHING: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Sight:
    """What one viewer may see and do. Conversations by label, people by id, teams by key."""

    sees: frozenset[str] = NOTHING  # conversations: their text, messages, history, outcomes
    acts: frozenset[str] = NOTHING  # claim for oneself, mark responded, pause, resume, resolve, acknowledge
    reassigns: frozenset[str] = NOTHING  # reassign, or claim for someone else
    gives_to: frozenset[str] = NOTHING  # people they may hand work to
    gives_to_teams: frozenset[str] = NOTHING  # teams whose queue they may hand work to
    sets_status: frozenset[str] = NOTHING
    people: frozenset[str] = NOTHING  # people whose names and own history they see
    tenants: frozenset[str] = NOTHING  # tenants they hold a role in (their names)
    teams: frozenset[str] = NOTHING  # teams whose names they see
    config: frozenset[str] = NOTHING  # tenants whose tokens and tenant-wide history they read
    manages: frozenset[str] = NOTHING  # tenants whose tokens and set-password links they manage
    own_token: str | None = None
    issuer: str = ""  # how a command they send names them

    def manages_people(self) -> frozenset[str]:
        return frozenset(person for tenant in self.manages for person in PEOPLE_OF[tenant])


KETTLE_ADMIN = Sight(
    sees=KETTLE,
    acts=KETTLE,
    reassigns=KETTLE,
    gives_to=KETTLE_PEOPLE,
    gives_to_teams=frozenset({"kettle/care", "kettle/social"}),
    sets_status=KETTLE_PEOPLE_ALL,
    people=KETTLE_PEOPLE_ALL,
    tenants=frozenset({"kettle"}),
    teams=frozenset({"kettle/care", "kettle/social"}),
    config=frozenset({"kettle"}),
    manages=frozenset({"kettle"}),
)
SIGHTS: dict[str, Sight] = {
    # agency admin: everything, everywhere
    "ada": Sight(
        sees=EVERY,
        acts=EVERY,
        reassigns=EVERY,
        gives_to=EVERYONE,
        gives_to_teams=frozenset(TEAMS),
        sets_status=EVERYONE,
        people=EVERYONE,
        tenants=frozenset(TENANTS),
        teams=frozenset(TEAMS),
        config=frozenset(TENANTS),
        manages=frozenset(TENANTS),
        issuer="ada",
    ),
    # tenant admin: all of their tenant (themselves serving no team)
    "tina": Sight(**{**KETTLE_ADMIN.__dict__, "issuer": "tina"}),
    # team lead: their team; as its member also an agent, which adds nothing here; reads (never
    # changes) their tenant's configuration: its tokens and its tenant-wide history
    "rosa": Sight(
        sees=CARE,
        acts=CARE,
        reassigns=CARE,
        gives_to=CARE_PEOPLE,
        gives_to_teams=frozenset({"kettle/care"}),
        sets_status=CARE_PEOPLE,
        people=CARE_PEOPLE,
        tenants=frozenset({"kettle"}),
        teams=frozenset({"kettle/care"}),
        config=frozenset({"kettle"}),
        issuer="rosa",
    ),
    # agent: sees their own and their team's; acts on their own and their team's queue
    "kai": Sight(
        sees=CARE | {"kettle-social-3"},
        acts=frozenset({"kettle-care-1", "kettle-care-3", "kettle-social-3"}),
        sets_status=frozenset({"kai"}),
        people=CARE_PEOPLE,
        tenants=frozenset({"kettle"}),
        teams=frozenset({"kettle/care", "kettle/social"}),  # social: the team of his own conversation
        issuer="kai",
    ),
    # client viewer: no conversation text, no actions; reports only
    "vera": Sight(people=frozenset({"vera"}), tenants=frozenset({"kettle"}), issuer="vera"),
    # an agent of two tenants: both teams, nothing else of either tenant
    "sam": Sight(
        sees=CARE | labels("northwind-north-"),
        acts=frozenset({"kettle-care-3", "kettle-care-4", "northwind-north-2", "northwind-north-3"}),
        sets_status=frozenset({"sam"}),
        people=CARE_PEOPLE | {"nils", "nora"},
        tenants=frozenset(TENANTS),
        teams=frozenset({"kettle/care", "northwind/north"}),
        issuer="sam",
    ),
    "token:kettle-admin": Sight(
        **{
            **KETTLE_ADMIN.__dict__,
            "own_token": "marktok-kettle-admin",
            "issuer": "token:marktok-kettle-admin",
        }
    ),
    "token:kettle-viewer": Sight(
        tenants=frozenset({"kettle"}),
        own_token="marktok-kettle-viewer",
        issuer="token:marktok-kettle-viewer",
    ),
    "anonymous": Sight(),
}
VIEWERS = tuple(SIGHTS)
ACTING = ("ada", "tina", "rosa", "kai", "sam", "token:kettle-admin")
# What anyone may ask without signing in.
PUBLIC = {
    ("POST", "/api/session"),
    ("POST", "/api/password"),
    ("GET", "/healthz"),
    ("GET", "/login"),  # the sign-in page
    ("GET", "/"),  # sends everyone to My work (and so to sign in)
}

# -- markers ----------------------------------------------------------------------------------


def mark(kind: str, label: str) -> str:
    return f"MARK<{kind}:{label}>"


# Each marker, and what it belongs to: a conversation, a person, a tenant's configuration, a
# tenant (its name), a team (its name) or a token (its name).
MARKERS: dict[str, tuple[str, str]] = {
    **{
        mark(kind, label): ("conversation", label)
        for label in CONVERSATIONS
        for kind in ("conv", "message", "timeline", "outcome", "live", "liveoutcome", "past", "reply")
    },
    **{
        mark(kind, f"person-{person}"): ("person", person)
        for person in PEOPLE
        for kind in ("person", "timeline", "outcome", "live", "past")
    },
    **{
        mark(kind, f"tenant-{tenant}"): ("config", tenant)
        for tenant in TENANTS
        for kind in ("timeline", "outcome", "live", "past")
    },
    **{mark("tenant", tenant): ("tenant", tenant) for tenant in TENANTS},
    **{mark("team", key): ("team", key) for key in TEAMS},
    **{name: ("token", name) for name in TOKENS},
}


def may_see(sight: Sight, kind: str, key: str) -> bool:
    match kind:
        case "conversation":
            return key in sight.sees
        case "person":
            return key in sight.people
        case "config":
            return key in sight.config
        case "tenant":
            return key in sight.tenants
        case "team":
            return key in sight.teams
        case "token":
            return TOKENS[key][0] in sight.config or key == sight.own_token
    raise AssertionError(kind)


def allowed_markers(sight: Sight) -> frozenset[str]:
    return frozenset(marker for marker, (kind, key) in MARKERS.items() if may_see(sight, kind, key))


def configuration_markers(sight: Sight) -> frozenset[str]:
    """What a tenant's configuration shows to who may read it (a team lead too): its people and
    its teams. Allowed on the configuration routes only, so no other route may show them."""
    people = {person for tenant in sight.config for person in PEOPLE_OF[tenant]}
    teams = {key for key, (tenant, *_rest) in TEAMS.items() if tenant in sight.config}
    return frozenset(
        marker
        for marker, (kind, key) in MARKERS.items()
        if (kind == "person" and key in people) or (kind == "team" and key in teams)
    )


def markers_in(text: str) -> set[str]:
    return {marker for marker in MARKERS if marker in text}


# -- targets: what a path parameter names -----------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One value of a path parameter and what it is (None: an id that exists nowhere)."""

    param: str
    value: str
    kind: str | None  # conversation, person, tenant, token, command
    key: str | None


def command_subject(command_id: str) -> tuple[str, str]:
    """What one of the world's command outcomes is about: (marker kind, key)."""
    rest = command_id.removeprefix("cmd-")
    if rest.startswith("person-"):
        return "person", rest.removeprefix("person-")
    if rest.startswith("tenant-"):
        return "config", rest.removeprefix("tenant-")
    return "conversation", rest


def visible(sight: Sight, target: Target) -> bool:
    if target.key is None:
        return False
    match target.kind:
        case "conversation":
            return target.key in sight.sees
        case "person":
            return target.key in sight.people
        case "tenant":
            return target.key in sight.tenants
        case "token":
            return TOKENS[target.key][0] in sight.config
        case "command":
            return may_see(sight, *command_subject(target.key))
    raise AssertionError(target)


def writable(sight: Sight, target: Target) -> bool:
    """Whether a write naming this target may succeed for the viewer."""
    if target.key is None:
        return False
    match target.kind:
        case "conversation":
            return target.key in sight.acts | sight.reassigns
        case "person":
            return target.key in sight.sets_status | sight.manages_people()
        case "tenant":
            return target.key in sight.manages
        case "token":
            return TOKENS[target.key][0] in sight.manages
    return False


# -- the world, and who asks --------------------------------------------------------------------


@dataclass
class Agency:
    world: World
    conversation_ids: dict[str, str] = field(default_factory=dict)  # label: id
    signed: dict[str, SignedIn] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)  # name: the token

    def label_of(self, conversation_id: str) -> str | None:
        return next(
            (label for label, ident in self.conversation_ids.items() if ident == conversation_id), None
        )

    def headers(self, viewer: str) -> dict[str, str]:
        if viewer == "anonymous":
            return {}
        own_token = SIGHTS[viewer].own_token
        if own_token is not None:
            return bearer(self.tokens[own_token])
        return self.signed[viewer].headers

    async def refresh(self, viewer: str) -> None:
        """The viewer signed in again (a walked route may have signed them out or revoked their token)."""
        own_token = SIGHTS[viewer].own_token
        if own_token is not None:
            async with transaction(self.world.sessions) as session:
                await execute(
                    session,
                    update(ApiTokenRow).where(col(ApiTokenRow.name) == own_token).values(revoked_at=None),
                )
        else:
            self.signed[viewer] = await self.world.session_for(viewer, created_at=T)


async def build_agency(world: World) -> Agency:
    agency = Agency(world)
    for tenant in TENANTS:
        await world.tenant(tenant, name=mark("tenant", tenant))
    for person in PEOPLE:
        await world.person(person, name=mark("person", f"person-{person}"))
    accounts = {}
    for key, (tenant, slug, lead, members) in TEAMS.items():
        team_id = await world.team(tenant, slug, lead=lead, members=members, name=mark("team", key))
        accounts[key] = (team_id, await world.account(tenant, team_id, account_id=key.replace("/", "-")))
    for person, role, tenant in GRANTS:
        await world.grant(person, role, tenant)
    async with transaction(world.sessions) as session:  # connected for replies, as `apply` leaves it
        await execute(session, update(AccountRow).values(reply_credentials="sealed:page-token"))
    rows: list[Any] = []
    for number, (label, (tenant, team, owner)) in enumerate(CONVERSATIONS.items()):
        team_id, account = accounts[team or f"{tenant}/care"]
        conversation = await world.conversation(
            tenant,
            account,
            team_id=team_id if team else None,
            owner_id=owner,
            text=f"Where is my order? {mark('conv', label)}",
            opened_at=T - timedelta(hours=number + 1),  # each author's history has earlier ones
            due_at=T + timedelta(minutes=number),
            thread_id=f"thread-{label}",
        )
        agency.conversation_ids[label] = conversation
        message = await world.interaction(conversation, text=f"Still waiting {mark('message', label)}")
        await world.deadline(conversation, due_at=T + timedelta(hours=1), version=2)
        rows += [
            TimelineRow(
                id=f"tl-{label}",
                seq=number + 1,
                tenant_id=tenant,
                conversation_id=conversation,
                person_id=owner,
                at=T - timedelta(minutes=30),
                kind="conversation.assigned",
                actor="router",
                summary=f"Assigned {mark('timeline', label)}",
            ),
            ReplyRow(
                id=f"reply-{label}",
                tenant_id=tenant,
                conversation_id=conversation,
                account_id=account,
                platform="facebook",
                person_id=owner or REPLIED_BY[label],
                text=f"We are on it {mark('reply', label)}",
                reply_to=message,
                target=f"msg-{label}",
                thread_id=f"thread-{label}",
                method="comment_reply",
                key=f"reply-{label}",
                state="failed",
                error="(#1) An unknown error occurred",
                requested_at=T - timedelta(minutes=25),
                updated_at=T - timedelta(minutes=25),
            ),
            CommandOutcomeRow(
                command_id=f"cmd-{label}",
                tenant_id=tenant,
                conversation_id=conversation,
                person_id=owner,
                command_type="conversation.claim",
                issued_by="router",
                outcome="applied",
                reason=mark("outcome", label),
                at=T - timedelta(minutes=30),
            ),
        ]
    for number, person in enumerate(PEOPLE):
        rows += [
            TimelineRow(
                id=f"tl-person-{person}",
                seq=100 + number,
                person_id=person,
                at=T - timedelta(minutes=20),
                kind="person.status_changed",
                actor=person,
                summary=f"Away {mark('timeline', f'person-{person}')}",
            ),
            CommandOutcomeRow(
                command_id=f"cmd-person-{person}",
                person_id=person,
                command_type="person.set_status",
                issued_by=person,
                outcome="applied",
                reason=mark("outcome", f"person-{person}"),
                at=T - timedelta(minutes=20),
            ),
        ]
    for number, tenant in enumerate(TENANTS):
        rows += [
            TimelineRow(
                id=f"tl-tenant-{tenant}",
                seq=200 + number,
                tenant_id=tenant,
                at=T - timedelta(minutes=10),
                kind="tenant.recomputed",
                actor="apply",
                summary=f"Recomputed {mark('timeline', f'tenant-{tenant}')}",
            ),
            CommandOutcomeRow(
                command_id=f"cmd-tenant-{tenant}",
                tenant_id=tenant,
                command_type="tenant.recompute",
                issued_by="apply",
                outcome="applied",
                reason=mark("outcome", f"tenant-{tenant}"),
                at=T - timedelta(minutes=10),
            ),
        ]
    await world.add(*rows)
    for name, (tenant, role) in TOKENS.items():
        agency.tokens[name] = await world.token_for(tenant, role, name=name)
    for viewer, sight in SIGHTS.items():
        if viewer != "anonymous" and sight.own_token is None:
            agency.signed[viewer] = await world.session_for(viewer, created_at=T)
    return agency


def subject_of(event: Event) -> str:
    """Where the event is published: the router's subjects, and the outbound service's for replies."""
    if isinstance(event, ReplyEvent):
        return subjects.reply_event(tenant_id=event.tenant_id, conversation_id=event.conversation_id)
    return subject_for(event)


def live_events(agency: Agency, kind: str) -> list[Event]:
    """Events published on SH_EVENTS, as the router and notify publish them, while the streams
    are open (`live`) or before they are (`past`): a pause and a refused command for every
    conversation, a status for every person, a recompute of every tenant, each marked."""
    events: list[Event] = []
    for label, (tenant, _team, _owner) in CONVERSATIONS.items():
        conversation = agency.conversation_ids[label]
        events += [
            ConversationPaused(
                tenant_id=tenant,
                conversation_id=conversation,
                account_id=f"{tenant}-account",
                occurred_at=T,
                reason=mark(kind, label),
                paused_at=T,
            ),
            CommandRejected(
                tenant_id=tenant,
                occurred_at=T,
                command_id=f"cmd-{kind}-{label}",
                command_type="conversation.pause",
                issued_by="router",
                issued_at=T,
                conversation_id=conversation,
                code=Rejection.closed,
                reason=mark("liveoutcome" if kind == "live" else kind, label),
            ),
            ReplyEvent(
                tenant_id=tenant,
                conversation_id=conversation,
                account_id=f"{tenant}-account",
                occurred_at=T,
                reply_id=f"reply-{kind}-{label}",
                platform=Platform.facebook,
                person_id="kai",
                state=ReplyState.failed,
                error=mark(kind, label),
            ),
        ]
    for person in PEOPLE:
        events.append(
            CommandApplied(
                tenant_id="",
                occurred_at=T,
                command_id=f"cmd-{kind}-person-{person}",
                command_type="person.set_status",
                issued_by="router",
                issued_at=T,
                person_id=person,
                summary=f"Back {mark(kind, f'person-{person}')}",
            )
        )
    for tenant in TENANTS:
        events.append(
            CommandApplied(
                tenant_id=tenant,
                occurred_at=T,
                command_id=f"cmd-{kind}-tenant-{tenant}",
                command_type="tenant.recompute",
                issued_by="apply",
                issued_at=T,
                summary=f"Again {mark(kind, f'tenant-{tenant}')}",
            )
        )
    return events


@pytest.fixture
async def agency(database_url: str) -> AsyncIterator[Agency]:
    async with World(database_url) as world:
        yield await build_agency(world)


@dataclass
class Service:
    app: FastAPI
    http: httpx.AsyncClient
    kept: KeptCommands
    hub: LiveHub

    async def publish(self, events: list[Event]) -> None:
        """Events on SH_EVENTS, on their real subjects; back once the live hub has read them all."""
        assert self.hub.js is not None
        await publish_pipelined(
            self.hub.js,
            [Outgoing(subject_of(e), e.model_dump_json().encode(), f"walk:{e.event_id}") for e in events],
        )
        head = (await self.hub.js.stream_info("SH_EVENTS")).state.last_seq

        async def read() -> bool:
            return self.hub.head >= head

        await eventually(read, what="the live hub read what was published")


@pytest.fixture
async def service(database_url: str, nc: Client) -> AsyncIterator[Service]:
    """The app as `create_app` composes it (every router, /healthz), without its lifespan: its
    database sessions, clock and command sender are set by hand, the commands kept in memory;
    its live hub reads SH_EVENTS of a real nats-server, where the walk publishes."""
    kept = KeptCommands()
    app = create_app(api_settings(database_url, nats_url="nats://127.0.0.1:1"))  # never connected
    engine = create_engine(database_url)
    app.state.sessions = session_factory(engine)
    app.state.commands = kept
    app.state.clock = Clock(T)
    js = nc.jetstream()
    await ensure_streams(js, stream_configs(StreamSettings()))
    hub = LiveHub(js, app.state.sessions)
    await hub.start()
    app.state.live = hub
    # An exception in a route answers 500, as a server would, and the walk counts it.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=("127.0.0.1", 50000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
            yield Service(app, http, kept, hub)
    finally:
        await hub.stop()
        await engine.dispose()


# -- the routes, as the app has them ------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    path: str
    methods: tuple[str, ...]
    params: tuple[str, ...]  # path parameters, in order
    body: type[BaseModel] | None
    query: frozenset[str]
    headers: frozenset[str]  # header parameters, by the name sent
    streams: bool
    page: bool = False  # a page of the inbox (HTML): errors are pages, strangers go to sign in


def _model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model of a body annotation (`ClaimBody | None` too)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [model for arg in typing.get_args(annotation) if (model := _model(arg)) is not None]
        if len(models) == 1:
            return models[0]
    return None


def routes_of(app: FastAPI) -> list[Route]:
    """Every route the app serves, through the routers included in it."""
    walk = getattr(fastapi.routing, "iter_route_contexts", None)  # FastAPI that includes routers lazily
    found = []
    for route in walk(app.routes) if walk is not None else app.routes:
        mounted = getattr(route, "route", route)
        if isinstance(mounted, Mount) and isinstance(mounted.app, StaticFiles):
            # The pages' script and styles: the same files for everyone, no tenant's data.
            folder = Path(str(mounted.app.directory))
            assert mounted.path == "/static" and {p.name for p in folder.iterdir()} == STATIC
            continue
        path: str | None = getattr(route, "path", None)
        methods = getattr(route, "methods", None)
        if path is None or not methods:
            pytest.fail(f"the walk does not know how to ask {route!r}: no path or no methods")
        dependant = getattr(route, "dependant", None)
        body_field = getattr(route, "body_field", None)
        body = None
        if body_field is not None:
            body = _model(body_field.field_info.annotation)
            if body is None:
                pytest.fail(f"{path}: a body of {body_field.field_info.annotation} the walk cannot build")
        response_class = getattr(route, "response_class", None)
        streams = (isinstance(response_class, type) and issubclass(response_class, StreamingResponse)) or (
            "text/event-stream" in repr(getattr(route, "responses", {}))
        )
        page = isinstance(response_class, type) and issubclass(response_class, HTMLResponse)
        found.append(
            Route(
                page=page,
                path=path,
                methods=tuple(sorted(methods)),
                params=tuple(re.findall(r"{(\w+)(?::\w+)?}", path)),
                body=body,
                query=frozenset(p.alias for p in dependant.query_params) if dependant else frozenset(),
                headers=frozenset(p.alias for p in dependant.header_params) if dependant else frozenset(),
                streams=streams,
            )
        )
    return found


STATIC = {"inbox.js", "inbox.css"}

NOWHERE = {
    "conversation_id": "5eed" * 8,
    "person_id": "nobody-here",
    "tenant_id": "no-such-tenant",
    "name": "no-such-token",
    "command_id": "cmd-no-such-command",
}


def targets(agency: Agency, param: str) -> list[Target]:
    """Every value a path parameter is filled with: the id that exists nowhere first, then every
    id of both tenants."""
    nowhere = [Target(param, NOWHERE[param], None, None)] if param in NOWHERE else []
    match param:
        case "conversation_id":
            known = [
                Target(param, ident, "conversation", label)
                for label, ident in agency.conversation_ids.items()
            ]
        case "person_id":
            known = [Target(param, person, "person", person) for person in PEOPLE]
        case "tenant_id":
            known = [Target(param, tenant, "tenant", tenant) for tenant in TENANTS]
        case "name":
            known = [Target(param, name, "token", name) for name in TOKENS]
        case "table":  # a report's CSV: the same figures as JSON, walked for every table
            known = [Target(param, table, None, None) for table in ("days", "people", "teams")]
        case "command_id":
            commands = [f"cmd-{label}" for label in CONVERSATIONS]
            commands += [f"cmd-person-{person}" for person in PEOPLE]
            commands += [f"cmd-tenant-{tenant}" for tenant in TENANTS]
            known = [Target(param, command, "command", command) for command in commands]
        case _:
            pytest.fail(f"the walk does not know how to fill the path parameter {param!r}: teach it")
    return nowhere + known


# Values of body fields, by name: the first for a required field; an optional field naming a
# person or a team gets one body for each of these.
CHOICES: dict[str, list[Any]] = {
    "person": ["kai", "sid", "sam", "nils"],
    "team": ["care", "social", "north"],
    "status": ["away"],
    "reason": ["x"],
    "note": ["x"],
    "text": ["Thanks, we are on it"],
    "email": ["kai@example.com"],
    "password": ["correct horse battery staple"],
    "token": ["A" * 32],
    "name": ["made-by-the-walk"],
    "role": ["tenant_admin"],
}
VARIED = ("person", "team")
TEXT = ("reason", "note")


def _default_for(model: type[BaseModel], name: str) -> Any:
    """A value of a required field the walk has no choices for, from its type."""
    annotation = model.model_fields[name].annotation
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)[0]
    if isinstance(annotation, type):
        if issubclass(annotation, bool):
            return True
        if issubclass(annotation, int):
            return 1
        if issubclass(annotation, enum.Enum):
            return next(iter(annotation)).value
        if issubclass(annotation, str):
            return "x"
    pytest.fail(f"{model.__name__}.{name}: the walk cannot fill a required {annotation}")


def bodies(route: Route) -> list[dict[str, Any] | None]:
    """The bodies sent to a route: what its model requires (and a reason where it takes one),
    then the same naming each person or team in turn."""
    if route.body is None:
        return [None]
    model = route.body
    base: dict[str, Any] = {}
    varied: list[dict[str, Any]] = []
    for name, info in model.model_fields.items():
        if info.is_required():
            base[name] = CHOICES[name][0] if name in CHOICES else _default_for(model, name)
        elif name in TEXT:
            base[name] = CHOICES[name][0]
    for name in VARIED:
        if name in model.model_fields:
            varied += [{**base, name: value} for value in CHOICES[name]]
    if any(name in base for name in VARIED):  # each varied body already holds what is required
        return list(varied)
    return [base, *varied]


# -- the walk ----------------------------------------------------------------------------------


@dataclass
class Walk:
    agency: Agency
    service: Service
    violations: list[str] = field(default_factory=list)
    sent: Counter[tuple[str, str]] = field(default_factory=Counter)  # (viewer, command type)
    acted: dict[str, set[str]] = field(default_factory=dict)  # viewer: conversations a command was about
    statuses: dict[str, set[str]] = field(default_factory=dict)  # viewer: people whose status they set
    seen: dict[str, set[str]] = field(default_factory=dict)  # viewer: markers shown
    requests: int = 0
    cells: set[tuple[str, str, str]] = field(default_factory=set)  # (route, viewer, targets)

    def fail(self, check: str, viewer: str, what: str, response: httpx.Response, problem: str) -> None:
        self.violations.append(
            f"({check}) {viewer} {what}: {problem} -> {response.status_code} {response.text[:300]}"
        )

    async def ask(
        self,
        viewer: str,
        method: str,
        url: str,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One request as the viewer; asked again once, signed in afresh, if a walked route had
        signed them out (a 401 for a signed-in viewer)."""
        http = self.service.http
        for attempt in (1, 2):
            http.cookies.clear()  # nothing a response set is sent back: each viewer sends their own
            response = await http.request(
                method,
                url,
                json=body,
                params=params,
                headers={**self.agency.headers(viewer), **(headers or {})},
            )
            self.requests += 1
            if response.status_code != 401 or viewer == "anonymous" or attempt == 2:
                return response
            await self.agency.refresh(viewer)
        raise AssertionError("unreachable")

    def check_answer(
        self,
        viewer: str,
        method: str,
        route: Route,
        what: str,
        response: httpx.Response,
        asked: str,
    ) -> None:
        """(a), (c) and (e) for any answer."""
        status = response.status_code
        if status >= 500:
            self.fail("a", viewer, what, response, "a server error")
        if 400 <= status < 500 and method != "HEAD" and route.page:
            if (
                "text/html" not in response.headers.get("content-type", "")
                or "data-error" not in response.text
            ):
                self.fail("a", viewer, what, response, "a 4xx page that does not say what went wrong")
        elif 400 <= status < 500 and method != "HEAD":
            try:
                error = response.json().get("error")
            except ValueError:
                error = None
            if not isinstance(error, str) or not error:
                self.fail("a", viewer, what, response, "a 4xx without a JSON error")
        if viewer == "anonymous" and (method, route.path) not in PUBLIC:
            if route.page and not (status == 303 and response.headers["location"].startswith("/login?next=")):
                self.fail("e", viewer, what, response, "a page not sending a stranger to sign in")
            elif not route.page and status != 401:
                self.fail("e", viewer, what, response, "not 401 without signing in")
        shown = markers_in(response.text)
        self.seen.setdefault(viewer, set()).update(shown)
        allowed = allowed_markers(SIGHTS[viewer])
        if route.path.endswith("/configuration"):
            allowed |= configuration_markers(SIGHTS[viewer])
        leaked = shown - allowed - markers_in(asked)
        if leaked:
            self.fail("c", viewer, what, response, f"shows {sorted(leaked)}")

    def check_commands(
        self, viewer: str, what: str, response: httpx.Response, commands: list[Sendable]
    ) -> None:
        """(d): each command sent is one the viewer may send."""
        sight = SIGHTS[viewer]
        for command in commands:
            self.sent[(viewer, type(command).__name__)] += 1
            conversation = self.agency.label_of(getattr(command, "conversation_id", None) or "")
            if conversation is not None:
                self.acted.setdefault(viewer, set()).add(conversation)
            elif (person := getattr(command, "person_id", None)) is not None:
                self.statuses.setdefault(viewer, set()).add(person)
            for problem in command_problems(self.agency, sight, command):
                self.fail("d", viewer, what, response, f"sent {command!r}: {problem}")

    async def route(self, route: Route) -> None:
        if route.streams:
            await self.stream(route)
            return
        combos = list(itertools.product(*(targets(self.agency, param) for param in route.params)))
        for method, body in itertools.product(route.methods, bodies(route)):
            for viewer in VIEWERS:
                nowhere: tuple[int, str] | None = None
                for combo in combos:
                    url = route.path.format(**{target.param: target.value for target in combo})
                    what = f"{method} {url} {body or ''}"
                    before = len(self.service.kept.sent)
                    response = await self.ask(viewer, method, url, body)
                    self.cells.add((f"{method} {route.path}", viewer, ",".join(t.value for t in combo)))
                    self.check_answer(viewer, method, route, what, response, f"{url} {body}")
                    self.check_commands(viewer, what, response, self.service.kept.sent[before:])
                    error = _error(response)
                    if combo and all(target.key is None for target in combo):
                        nowhere = (response.status_code, _without(error, combo))
                    sight = SIGHTS[viewer]
                    exists = all(target.key is not None for target in combo)
                    if viewer != "anonymous" and exists and not all(visible(sight, t) for t in combo):
                        same_as_nowhere = nowhere == (response.status_code, _without(error, combo))
                        if response.status_code not in (403, 404) and not (
                            response.status_code == 400 and same_as_nowhere
                        ):
                            self.fail("b", viewer, what, response, "not 403 or 404 for what they may not see")
                    if (
                        method not in ("GET", "HEAD")
                        and combo
                        and 200 <= response.status_code < 300
                        and not all(writable(sight, target) for target in combo)
                    ):
                        self.fail("b", viewer, what, response, "a write done where they may not act")

    async def stream(self, route: Route) -> None:
        """Every viewer's stream at once, from now (while everything gets a new event) and from
        the first event of SH_EVENTS on (what happened before they connected, then live)."""
        if "max_seconds" not in route.query:
            pytest.fail(f"{route.path} streams with no max_seconds: the walk cannot bound it")
        if route.params:
            pytest.fail(f"{route.path}: a stream with path parameters; teach the walk")
        resume = next((name for name in route.headers if name.lower() == "last-event-id"), None)
        variants: list[tuple[str, str, dict[str, Any], dict[str, str]]] = []
        for method, viewer in itertools.product(route.methods, VIEWERS):
            variants.append((method, viewer, {"max_seconds": 2}, {}))
            if resume is not None:
                variants.append((method, viewer, {"max_seconds": 1}, {resume: "0"}))
        await self.service.publish(live_events(self.agency, "past"))

        async def later() -> None:
            await asyncio.sleep(0.5)
            await self.service.publish(live_events(self.agency, "live"))

        writer = asyncio.create_task(later())
        answers = await asyncio.gather(
            *(
                self.ask(viewer, method, route.path, params=params, headers=headers)
                for method, viewer, params, headers in variants
            )
        )
        await writer
        for (method, viewer, params, headers), response in zip(variants, answers, strict=True):
            what = f"{method} {route.path} {params} {headers}"
            self.cells.add((f"{method} {route.path}", viewer, str(headers)))
            self.check_answer(viewer, method, route, what, response, what)
            sight = SIGHTS[viewer]
            shown = markers_in(response.text)
            if headers and response.status_code == 200:
                expected = (
                    {mark("past", label) for label in sight.sees}
                    | {mark("past", f"person-{person}") for person in sight.people}
                    | {mark("past", f"tenant-{tenant}") for tenant in sight.config}
                )
                if missing := expected - shown:
                    self.fail("c", viewer, what, response, f"replayed without {sorted(missing)}")
            if not headers and any(m.startswith("MARK<past") for m in shown):
                self.fail("c", viewer, what, response, "a stream from now replayed the past")
            if not headers and viewer == "ada" and not any(m.startswith("MARK<live") for m in shown):
                self.fail("c", viewer, what, response, "the live stream showed nothing that happened")


def _error(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text
    return str(body.get("error")) if isinstance(body, dict) else str(body)


def _without(text: str, combo: Iterable[Target]) -> str:
    for target in combo:
        text = text.replace(target.value, "<id>")
    return text


def command_problems(agency: Agency, sight: Sight, command: Sendable) -> list[str]:
    """Why the viewer should not have sent this command (none: they may)."""
    problems = []
    if command.issued_by != sight.issuer:
        problems.append(f"issued by {command.issued_by!r}, not {sight.issuer!r}")
    person = getattr(command, "person_id", None)
    conversation_id = getattr(command, "conversation_id", None)
    if conversation_id is None:
        if person is None:
            return [*problems, "about neither a conversation nor a person"]
        if person not in sight.sets_status:
            problems.append(f"a status of {person}, whom they may not set")
        return problems
    label = agency.label_of(conversation_id)
    if label is None:
        return [*problems, "a conversation of nobody's"]
    tenant = CONVERSATIONS[label][0]
    if getattr(command, "tenant_id", None) != tenant:
        problems.append(f"tenant {getattr(command, 'tenant_id', None)} for {label} of {tenant}")
    me = sight.issuer
    if isinstance(command, SendReply):  # a reply: the person's own, from their own session
        if label not in sight.acts:
            problems.append(f"a reply on {label}, on which they may not act")
        if person != me or me.startswith("token:"):
            problems.append(f"a reply written as {person}")
        if command.session != ids.token_sha256(agency.signed[me].cookie if me in agency.signed else ""):
            problems.append("a reply carrying another session than theirs")
        return problems
    if isinstance(command, Reassign) or (isinstance(command, Claim) and person != me):
        if label not in sight.reassigns:
            problems.append(f"{label}, which they may not reassign")
        if person is not None and person not in sight.gives_to & SERVING[tenant]:
            problems.append(f"given to {person}, whom they may not give {label}")
        team = getattr(command, "team", None)
        if team is not None and f"{tenant}/{team}" not in sight.gives_to_teams:
            problems.append(f"given to team {team}, which they may not give {label}")
    else:
        if label not in sight.acts:
            problems.append(f"{label}, on which they may not act")
        if person is not None and person not in SERVING[tenant]:
            problems.append(f"names {person}, who does not serve {tenant}")
        if isinstance(command, Acknowledge) and person != me:
            problems.append(f"acknowledged for {person}")
    return problems


# -- the test ---------------------------------------------------------------------------------


async def test_every_route_keeps_every_viewer_within_their_scope(agency: Agency, service: Service) -> None:
    started = time.monotonic()
    walk = Walk(agency, service)
    routes = routes_of(service.app)
    assert {route.path for route in routes} >= {"/api/conversations", "/api/stream", "/healthz"}
    for route in routes:
        await walk.route(route)

    # The walk saw and did what the table gives each viewer, no less: it cannot pass by refusing.
    for viewer, sight in SIGHTS.items():
        for kind in ("conv", "message", "timeline", "outcome", "reply"):
            expected = {mark(kind, label) for label in sight.sees}
            shown = {mark(kind, label) for label in CONVERSATIONS} & walk.seen.get(viewer, set())
            if shown != expected:
                walk.violations.append(f"(c) {viewer} was shown {sorted(shown ^ expected)} against the table")
        acted = walk.acted.get(viewer, set())
        if acted != sight.acts | sight.reassigns:
            walk.violations.append(
                f"(d) {viewer} acted on {sorted(acted)}, not {sorted(sight.acts | sight.reassigns)}"
            )
        statuses = walk.statuses.get(viewer, set())
        if statuses != sight.sets_status:
            walk.violations.append(
                f"(d) {viewer} set the status of {sorted(statuses)}, not {sorted(sight.sets_status)}"
            )
    for viewer in ACTING:
        if not any(count for (who, _), count in walk.sent.items() if who == viewer):
            walk.violations.append(f"(d) {viewer} sent no command at all")

    print(
        f"\n{len(routes)} routes, {len(walk.cells)} route x viewer x target cells, {walk.requests} requests "
        f"in {time.monotonic() - started:.1f} s; commands sent: {dict(sorted(walk.sent.items()))}"
    )
    assert not walk.violations, f"{len(walk.violations)} violations:\n" + "\n".join(walk.violations[:40])
