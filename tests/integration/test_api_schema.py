"""The API fuzzed from its own OpenAPI document (schemathesis): every operation, with parameters
and bodies generated to fit the document and to break it, asked as each role, never answers a
5xx, and every 4xx names the problem in JSON (`{"error": ...}`).

The document is the one the service's operations listener serves (`create_app(...).openapi()`),
and the requests go in process to the app as the service composes it, less its lifespan (no
NATS: commands are kept in memory, and the live stream's hub reads no events) over a migrated
SQLite database with two tenants in it. Each generated request is sent as the agency admin, an
agent and a client viewer (session cookie and CSRF token), a tenant_admin token, and anonymously.
A request that ends its own session or revokes its own token (signing out, revoking) is followed
by a fresh one, so the next requests are still asked as that role.
"""

import asyncio
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from sqlalchemy import update
from sqlmodel import Session, col
from sqlmodel import create_engine as create_sync_engine
from starlette.types import Receive, Scope, Send

from services.api.actions import KeptCommands
from services.api.live import LiveHub
from services.api.main import create_app
from shared import ids
from shared.db.migrate import upgrade
from shared.db.models import ApiTokenRow, WebSessionRow
from shared.db.session import create_engine, session_factory
from tests.api_world import Clock, World, api_settings
from tests.fuzz import properties

T = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
NATS_URL = "nats://127.0.0.1:1"  # the app is built, never started: nothing connects to it
ROLES = ("agency admin", "agent", "client viewer", "tenant_admin token", "anonymous")
PEOPLE = {"agency admin": "ada", "agent": "kai", "client viewer": "vera"}
TOKEN_NAME = "fuzzed-admin"
STREAM_CUT = 0.3  # seconds of an event stream read before the request is cut


def composed(database_url: str) -> FastAPI:
    return create_app(api_settings(database_url, nats_url=NATS_URL))


schema = schemathesis.openapi.from_dict(composed("sqlite+aiosqlite://").openapi())


class WithoutLifespan:
    """The app without its lifespan, which would connect to NATS: its state is set by hand."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)


@dataclass
class Fuzzed:
    app: WithoutLifespan
    database: Path
    token: str = ""
    sessions: dict[str, tuple[str, str]] = field(default_factory=dict)  # person: cookie, csrf token

    def headers(self, role: str) -> dict[str, str]:
        if role == "anonymous":
            return {}
        if role == "tenant_admin token":
            return {"Authorization": f"Bearer {self.token}"}
        cookie, csrf_token = self.sessions[PEOPLE[role]]
        return {"Cookie": f"sh_session={cookie}", "X-CSRF-Token": csrf_token}

    def sign_in_again(self, role: str) -> None:
        """A fresh session for the role, or its token made live again."""
        engine = create_sync_engine(f"sqlite:///{self.database}")
        try:
            with Session(engine) as session:
                if role == "tenant_admin token":
                    session.exec(
                        update(ApiTokenRow).where(col(ApiTokenRow.name) == TOKEN_NAME).values(revoked_at=None)
                    )
                elif role in PEOPLE:
                    cookie, csrf_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
                    session.add(
                        WebSessionRow(
                            id_sha256=ids.token_sha256(cookie),
                            person_id=PEOPLE[role],
                            csrf_token=csrf_token,
                            address="testclient",
                            created_at=T,
                            last_seen_at=T,
                            expires_at=T + timedelta(days=14),
                        )
                    )
                    self.sessions[PEOPLE[role]] = (cookie, csrf_token)
                session.commit()
        finally:
            engine.dispose()


async def _agency(database_url: str) -> str:
    """Two tenants with teams, people, conversations and messages; returns the token."""
    async with World(database_url) as world:
        for tenant in ("kettle", "northwind"):
            await world.tenant(tenant)
        for person in ("ada", "tina", "rosa", "kai", "vera", "nils"):
            await world.person(person)
        care = await world.team("kettle", "care", lead="rosa", members=["rosa", "kai"])
        north = await world.team("northwind", "care", members=["nils"])
        await world.grant("ada", "agency_admin")
        await world.grant("tina", "tenant_admin", "kettle")
        await world.grant("vera", "client_viewer", "kettle")
        for tenant, team, owner in (
            ("kettle", care, "kai"),
            ("kettle", care, None),
            ("northwind", north, "nils"),
        ):
            account = await world.account(tenant, team)
            conversation = await world.conversation(
                tenant, account, team_id=team, owner_id=owner, opened_at=T
            )
            await world.interaction(conversation, created_at=T)
            await world.deadline(conversation, due_at=T + timedelta(hours=1))
        return await world.token_for("kettle", "tenant_admin", name=TOKEN_NAME)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    database = tmp_path_factory.mktemp("schema") / "stayhuman.db"
    url = f"sqlite+aiosqlite:///{database}"
    upgrade(url)
    token = asyncio.run(_agency(url))
    app = composed(url)
    engine = create_engine(url)
    app.state.sessions = session_factory(engine)
    app.state.commands = KeptCommands()
    app.state.clock = Clock(T)
    app.state.live = LiveHub(None, app.state.sessions)
    world = Fuzzed(WithoutLifespan(app), database, token=token)
    for role in PEOPLE:
        world.sign_in_again(role)
    yield world
    # The engine's connections live on schemathesis's own event loop, which ends with the process.


def streams(case: schemathesis.Case) -> bool:
    responses: dict[str, Any] = case.operation.definition.raw.get("responses", {})
    return any("text/event-stream" in (answer.get("content") or {}) for answer in responses.values())


@schema.parametrize()
@settings(
    properties(20),
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
def test_no_request_gets_a_server_error_and_every_4xx_names_the_problem(
    case: schemathesis.Case, fuzzed: Fuzzed
) -> None:
    # An event stream goes on for as long as asked: what it sent in its first moments is read.
    cut: dict[str, Any] = {"timeout": STREAM_CUT} if streams(case) else {}
    for role in ROLES:
        response = case.call(app=fuzzed.app, headers=fuzzed.headers(role), **cut)
        case.validate_response(response, checks=[not_a_server_error])
        if 400 <= response.status_code < 500:
            try:
                body = response.json()
            except ValueError:
                body = None
            assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], (
                f"{role}: {case.method} {case.formatted_path} answered {response.status_code} "
                f"without naming the problem: {response.text[:300]}"
            )
        if case.method != "GET" and response.status_code < 300:
            fuzzed.sign_in_again(role)  # it may have signed out or revoked its own token


def test_the_document_gives_the_error_answers_the_api_gives(tmp_path: Path) -> None:
    """An invalid request is answered 400 naming each problem, never FastAPI's 422: so says the document."""
    document = composed(f"sqlite+aiosqlite:///{tmp_path / 'doc.db'}").openapi()
    answers = {
        code for path in document["paths"].values() for op in path.values() for code in op["responses"]
    }
    assert "422" not in answers and "400" in answers
    assert "HTTPValidationError" not in document["components"]["schemas"]
