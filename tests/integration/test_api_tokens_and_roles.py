"""Signing in to the API, sessions, set-password links and API tokens, and the roles `apply`
grants, on each database: what a person or a machine sees in the answers, and what is stored.

Two tenants: kettle (its care team, led by rosa, with kai; tina its admin, vera its client
viewer) and northwind (nils); ada is the agency admin."""

import logging
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import yaml
from sqlmodel import select

from services.api.settings import ApiSettings
from shared import ids
from shared.db.models import (
    ApiTokenRow,
    LoginRow,
    PasswordLinkRow,
    PersonRow,
    RoleGrantRow,
    TenantRow,
    WebSessionRow,
)
from shared.db.session import create_engine, session_factory
from shared.secrets import SecretBox, new_key
from stayhuman.config import ConfigError, Summary, apply_config, parse_config
from stayhuman.invite import InviteError, invite, set_password
from tests.api_world import (
    BASE_URL,
    Clock,
    World,
    api_settings,
    bearer,
    build_api,
    client,
    sign_in,
)
from tests.smtp import SmtpServer

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a new and longer passphrase"
WRONG = {"error": "wrong email or password", "field": "password"}
BOX = SecretBox(new_key())


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    async with World(database_url) as world:
        await world.tenant("kettle", name="Kettle & Co")
        await world.tenant("northwind", name="Northwind")
        for person in ("ada", "tina", "rosa", "kai", "vera", "nils"):
            await world.person(person, password=PASSWORD)
        await world.person("newcomer")  # has never set a password
        await world.team("kettle", "care", lead="rosa", members=["rosa", "kai"])
        await world.team("northwind", "north", members=["nils"])
        await world.grant("ada", "agency_admin")
        await world.grant("tina", "tenant_admin", "kettle")
        await world.grant("vera", "client_viewer", "kettle")
        yield world


def settings(world: World, **overrides: Any) -> ApiSettings:
    return api_settings(world.database_url, **overrides)


async def me(http: Any, headers: dict[str, str] | None = None) -> Any:
    return await http.get("/api/me", headers=headers or {})


# -- signing in ---------------------------------------------------------------------------------


async def test_a_person_signs_in_and_the_cookie_is_what_a_browser_keeps_safe(world: World) -> None:
    async with client(build_api(world.database_url)) as http:
        response = await http.post("/api/session", json={"email": "rosa@example.com", "password": PASSWORD})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["person_id"] == "rosa" and body["name"] == "Person rosa"
        assert body["roles"] == {"agent": ["kettle"], "team_lead": ["kettle"]}
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("sh_session=")
        flags = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "samesite=lax", "path=/", f"max-age={14 * 24 * 3600}"} <= flags
        assert "secure" not in flags  # plain http on loopback: development
        answer = (await me(http)).json()  # the browser sends the cookie back
        assert answer["person"] == {"id": "rosa", "name": "Person rosa", "email": "rosa@example.com"}
        assert answer["csrf_token"] == body["csrf_token"]
        assert answer["tenants"] == [{"id": "kettle", "name": "Kettle & Co"}]
        assert answer["token"] is None
    async with world.sessions() as session:
        stored = (await session.exec(select(WebSessionRow))).all()
    cookie_value = cookie.split(";")[0].removeprefix("sh_session=")
    assert [row.id_sha256 for row in stored] == [ids.token_sha256(cookie_value)]  # never the cookie


async def test_the_cookie_is_secure_when_the_api_is_reached_over_https(world: World) -> None:
    app = build_api(world.database_url, settings(world, api_public_url="https://inbox.example.com"))
    async with client(app) as http:
        response = await http.post("/api/session", json={"email": "kai@example.com", "password": PASSWORD})
    assert response.status_code == 200
    flags = {part.strip().lower() for part in response.headers["set-cookie"].split(";")[1:]}
    assert {"secure", "httponly", "samesite=lax"} <= flags


async def test_a_wrong_password_and_an_unknown_email_get_the_same_answer(world: World) -> None:
    await world.person("gone", password=PASSWORD, active=False)
    async with client(build_api(world.database_url)) as http:
        answers = [
            await http.post("/api/session", json={"email": email, "password": password})
            for email, password in (
                ("kai@example.com", "not the password at all"),
                ("nobody@example.com", PASSWORD),
                ("newcomer@example.com", PASSWORD),  # no password set yet
                ("gone@example.com", PASSWORD),  # deactivated
            )
        ]
        assert [(a.status_code, a.json()) for a in answers] == [(401, WRONG)] * 4
        assert "set-cookie" not in {name.lower() for a in answers for name in a.headers}
        assert (await me(http)).status_code == 401
        # The email is matched whatever its case.
        assert (await sign_in(http, "KAI@Example.com", PASSWORD)).person_id == "kai"


async def test_an_account_locks_after_too_many_failures_and_opens_again_after_the_lockout(
    world: World,
) -> None:
    clock = Clock()
    app = build_api(
        world.database_url,
        settings(world, login_max_failures=3, login_lockout=timedelta(minutes=15)),
        clock=clock,
    )
    async with client(app) as http:
        for email in ("kai@example.com", "nobody@example.com"):  # an unknown email locks alike
            for _ in range(3):
                wrong = await http.post("/api/session", json={"email": email, "password": "wrong guess 123"})
                assert wrong.status_code == 401
            locked = await http.post("/api/session", json={"email": email, "password": PASSWORD})
            assert locked.status_code == 429
            until = (clock.now + timedelta(minutes=15)).strftime("%Y-%m-%dT%H:%M:%SZ")
            assert locked.json() == {
                "error": f"too many failed sign-ins: this account is locked until {until}",
                "field": "email",
            }
            assert locked.headers["retry-after"] == "900"
        # Other accounts are not locked.
        assert (await sign_in(http, "rosa@example.com", PASSWORD)).person_id == "rosa"
        clock.advance(timedelta(minutes=14))
        still = await http.post("/api/session", json={"email": "kai@example.com", "password": PASSWORD})
        assert still.status_code == 429 and still.headers["retry-after"] == "60"
        clock.advance(timedelta(minutes=1))
        assert (await sign_in(http, "kai@example.com", PASSWORD)).person_id == "kai"
    async with world.sessions() as session:
        login = await session.get(LoginRow, "kai")
    assert login is not None and login.failed_attempts == 0 and login.locked_until is None


async def test_a_success_starts_the_count_over(world: World) -> None:
    app = build_api(world.database_url, settings(world, login_max_failures=3), clock=Clock())
    async with client(app) as http:
        for attempt in ("wrong", "wrong", PASSWORD, "wrong", "wrong"):
            response = await http.post("/api/session", json={"email": "kai@example.com", "password": attempt})
            assert response.status_code == (200 if attempt == PASSWORD else 401)
        assert (await sign_in(http, "kai@example.com", PASSWORD)).person_id == "kai"


async def test_an_address_with_too_many_failures_waits_and_others_do_not(world: World) -> None:
    clock = Clock()
    app = build_api(
        world.database_url,
        settings(world, login_max_per_address=4, login_lockout=timedelta(minutes=10)),
        clock=clock,
    )
    async with client(app) as http:
        for person in ("kai", "rosa", "tina", "vera"):  # one failure each: no account is locked
            response = await http.post(
                "/api/session", json={"email": f"{person}@example.com", "password": "guess guess"}
            )
            assert response.status_code == 401
        waiting = await http.post("/api/session", json={"email": "kai@example.com", "password": PASSWORD})
        assert waiting.status_code == 429
        assert waiting.json()["field"] == "address"
        assert "too many failed sign-ins from this address" in waiting.json()["error"]
        assert waiting.headers["retry-after"] == "600"
        elsewhere = httpx.ASGITransport(app=app, client=("127.0.0.2", 50000))
        async with httpx.AsyncClient(transport=elsewhere, base_url=BASE_URL) as other:
            assert (await sign_in(other, "rosa@example.com", PASSWORD)).person_id == "rosa"
        clock.advance(timedelta(minutes=10))
        assert (await sign_in(http, "kai@example.com", PASSWORD)).person_id == "kai"


# -- sessions and CSRF --------------------------------------------------------------------------


async def test_signing_out_needs_the_csrf_token_and_ends_the_session(world: World) -> None:
    async with client(build_api(world.database_url)) as http:
        signed = await sign_in(http, "kai@example.com", PASSWORD)
        for headers in ({}, {"X-CSRF-Token": "not-the-token"}, {"X-CSRF-Token": ""}):
            refused = await http.delete("/api/session", headers=headers)
            assert refused.status_code == 403
            assert refused.json()["field"] == "csrf"
            assert "CSRF token missing or wrong" in refused.json()["error"]
        assert (await me(http)).status_code == 200  # a refused sign-out ended nothing
        out = await http.delete("/api/session", headers={"X-CSRF-Token": signed.csrf_token})
        assert out.status_code == 204
        assert out.headers["set-cookie"].startswith('sh_session=""')
        assert "max-age=0" in out.headers["set-cookie"].lower()
        assert (await me(http, signed.cookie_only)).status_code == 401
        assert (await http.delete("/api/session", headers=signed.headers)).status_code == 401


async def test_signing_out_everywhere_ends_every_session_of_the_person(world: World) -> None:
    async with client(build_api(world.database_url)) as http:
        phone = await sign_in(http, "kai@example.com", PASSWORD)
        laptop = await sign_in(http, "kai@example.com", PASSWORD)
        other = await sign_in(http, "rosa@example.com", PASSWORD)
        http.cookies.clear()
        assert (
            await http.post("/api/session/logout-everywhere", headers=phone.cookie_only)
        ).status_code == 403
        ended = await http.post("/api/session/logout-everywhere", headers=phone.headers)
        assert ended.status_code == 200 and ended.json() == {"ended": 2}
        for gone in (phone, laptop):
            assert (await me(http, gone.cookie_only)).status_code == 401
        assert (await me(http, other.cookie_only)).status_code == 200


async def test_a_session_ends_when_idle_and_at_the_end_of_its_lifetime(world: World) -> None:
    clock = Clock()
    app = build_api(
        world.database_url,
        settings(world, session_idle=timedelta(hours=2), session_lifetime=timedelta(hours=5)),
        clock=clock,
    )
    async with client(app) as http:
        idle = await sign_in(http, "kai@example.com", PASSWORD)
        busy = await sign_in(http, "rosa@example.com", PASSWORD)
        http.cookies.clear()
        for _ in range(3):  # busy is used every 90 minutes; idle not at all
            clock.advance(timedelta(minutes=90))
            assert (await me(http, busy.cookie_only)).status_code == 200
        assert (await me(http, idle.cookie_only)).status_code == 401  # 4.5 hours unused
        clock.advance(timedelta(minutes=30))  # 5 hours after sign-in: its lifetime is over
        assert (await me(http, busy.cookie_only)).status_code == 401
    async with world.sessions() as session:
        assert (await session.exec(select(WebSessionRow))).all() == []  # ended sessions are removed


async def test_a_deactivated_persons_session_is_refused(world: World) -> None:
    signed = await world.session_for("kai")
    async with client(build_api(world.database_url)) as http:
        assert (await me(http, signed.cookie_only)).status_code == 200
        async with world.sessions() as session:
            person = await session.get(PersonRow, "kai")
            assert person is not None
            person.active = False
            await session.commit()
        assert (await me(http, signed.cookie_only)).status_code == 401


# -- set-password links -------------------------------------------------------------------------


def token_of(url: str) -> str:
    assert url.startswith(f"{BASE_URL}/set-password#"), url
    return url.partition("#")[2]


async def test_a_set_password_link_works_once_ends_the_sessions_and_lifts_a_lock(world: World) -> None:
    url = await invite(world.database_url, "kai", public_url=BASE_URL, lifetime=timedelta(hours=24))
    app = build_api(world.database_url, settings(world, login_max_failures=2))
    async with client(app) as http:
        before = await sign_in(http, "kai@example.com", PASSWORD)
        for _ in range(2):
            await http.post("/api/session", json={"email": "kai@example.com", "password": "forgotten it"})
        assert (
            await http.post("/api/session", json={"email": "kai@example.com", "password": PASSWORD})
        ).status_code == 429
        short = await http.post("/api/password", json={"token": token_of(url), "password": "short"})
        assert short.status_code == 400 and short.json()["field"] == "password"
        done = await http.post("/api/password", json={"token": token_of(url), "password": NEW_PASSWORD})
        assert done.status_code == 200 and done.json() == {"person_id": "kai"}
        assert (await me(http, before.cookie_only)).status_code == 401
        assert (await sign_in(http, "kai@example.com", NEW_PASSWORD)).person_id == "kai"
        again = await http.post(
            "/api/password", json={"token": token_of(url), "password": "yet another password"}
        )
        assert again.status_code == 410
        assert again.json() == {"error": "this link was already used: ask for a new one", "field": "token"}
        unknown = await http.post("/api/password", json={"token": "x" * 43, "password": NEW_PASSWORD})
        assert unknown.status_code == 400 and unknown.json()["field"] == "token"
    async with world.sessions() as session:
        links = (await session.exec(select(PasswordLinkRow))).all()
    assert [link.token_sha256 for link in links] == [ids.token_sha256(token_of(url))]  # never the token


async def test_an_expired_link_is_refused(world: World) -> None:
    url = await invite(world.database_url, "newcomer", public_url=BASE_URL, lifetime=timedelta(hours=1))
    clock = Clock()
    async with client(build_api(world.database_url, clock=clock)) as http:
        clock.advance(timedelta(hours=1, seconds=1))
        response = await http.post("/api/password", json={"token": token_of(url), "password": NEW_PASSWORD})
    assert response.status_code == 410
    assert response.json() == {"error": "this link has expired: ask for a new one", "field": "token"}


async def test_invite_and_set_password_refuse_who_cannot_sign_in(world: World) -> None:
    await world.person("left", active=False)
    for person, problem in (("ghost", "no person 'ghost'"), ("left", "person 'left' is inactive")):
        with pytest.raises(InviteError, match=problem):
            await invite(world.database_url, person, public_url=BASE_URL, lifetime=timedelta(hours=1))
    with pytest.raises(InviteError, match="at least 12 characters"):
        await set_password(world.database_url, "newcomer", "short")
    await set_password(world.database_url, "newcomer", NEW_PASSWORD)
    async with client(build_api(world.database_url)) as http:
        assert (await sign_in(http, "newcomer@example.com", NEW_PASSWORD)).person_id == "newcomer"


async def test_an_admin_emails_a_set_password_link_that_the_answer_never_shows(world: World) -> None:
    smtp = SmtpServer().start()
    try:
        app = build_api(
            world.database_url,
            settings(world, smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_security="none"),
        )
        async with client(app) as http:
            tina = await world.session_for("tina")
            sent = await http.post("/api/people/newcomer/password-link", headers=tina.headers)
            # newcomer serves no team of kettle: tina does not see them, the agency admin does.
            assert sent.status_code == 404
            ada = await world.session_for("ada")
            sent = await http.post("/api/people/newcomer/password-link", headers=ada.headers)
            assert sent.status_code == 202 and sent.json() == {"sent_to": "newcomer@example.com"}
            sent = await http.post("/api/people/kai/password-link", headers=tina.headers)
            assert sent.status_code == 202
            for who, person, status in (("rosa", "kai", 403), ("kai", "kai", 403), ("tina", "nils", 404)):
                signed = await world.session_for(who)
                response = await http.post(f"/api/people/{person}/password-link", headers=signed.headers)
                assert response.status_code == status, (who, person, response.text)
            assert len(smtp.messages()) == 2
            mail = smtp.messages()[1]
            assert mail.recipients == ["kai@example.com"]
            assert mail.subject == "Set your StayHuman password"
            url = re.search(r"http://\S+", mail.body)
            assert url is not None
            token = token_of(url.group())
            assert token not in sent.text
            done = await http.post("/api/password", json={"token": token, "password": NEW_PASSWORD})
            assert done.status_code == 200
    finally:
        smtp.stop()


async def test_without_an_smtp_server_or_for_a_deactivated_person_no_link_is_made(world: World) -> None:
    await world.person("left", active=False)
    async with client(build_api(world.database_url)) as http:
        ada = await world.session_for("ada")
        response = await http.post("/api/people/kai/password-link", headers=ada.headers)
        deactivated = await http.post("/api/people/left/password-link", headers=ada.headers)
    assert response.status_code == 409
    assert response.json()["field"] == "smtp" and "no SMTP server is set" in response.json()["error"]
    assert deactivated.status_code == 409
    assert deactivated.json() == {"error": "left is deactivated: a link would not work", "field": "person"}
    async with world.sessions() as session:
        assert (await session.exec(select(PasswordLinkRow))).all() == []


# -- API tokens ---------------------------------------------------------------------------------


async def test_a_token_acts_in_its_one_tenant_with_its_one_role(world: World) -> None:
    viewer = await world.token_for("kettle", "client_viewer", name="reports")
    admin = await world.token_for("kettle", "tenant_admin", name="deploy")
    async with client(build_api(world.database_url)) as http:
        answer = (await me(http, bearer(viewer))).json()
        assert answer["token"] == {"name": "reports", "tenant_id": "kettle", "role": "client_viewer"}
        assert answer["person"] is None and answer["csrf_token"] is None
        assert answer["roles"] == {"client_viewer": ["kettle"]}
        assert answer["tenants"] == [{"id": "kettle", "name": "Kettle & Co"}]
        assert (await http.get("/api/tenants/kettle/tokens", headers=bearer(viewer))).status_code == 403
        listed = await http.get("/api/tenants/kettle/tokens", headers=bearer(admin))
        assert listed.status_code == 200
        assert [t["name"] for t in listed.json()] == ["deploy", "reports"]
        assert (await http.get("/api/tenants/northwind/tokens", headers=bearer(admin))).status_code == 404
        # A token needs no CSRF token: it is no cookie a browser sends by itself.
        made = await http.post("/api/tenants/kettle/tokens", json={"name": "ci"}, headers=bearer(admin))
        assert made.status_code == 201 and made.json()["role"] == "tenant_admin"
        assert (await me(http, bearer("sh_" + "x" * 43))).status_code == 401
        assert (await me(http, {"Authorization": "Bearer "})).status_code == 401


async def test_tokens_are_made_once_per_name_shown_once_and_revoked_for_good(world: World) -> None:
    clock = Clock()
    async with client(build_api(world.database_url, clock=clock)) as http:
        tina = await world.session_for("tina")
        made = await http.post(
            "/api/tenants/kettle/tokens",
            json={"name": "dashboard", "role": "client_viewer"},
            headers=tina.headers,
        )
        assert made.status_code == 201
        token = made.json()["token"]
        assert token.startswith("sh_") and made.json() == {
            "name": "dashboard",
            "role": "client_viewer",
            "token": token,
        }
        again = await http.post(
            "/api/tenants/kettle/tokens", json={"name": "dashboard"}, headers=tina.headers
        )
        assert again.status_code == 409 and again.json()["field"] == "name"
        for body in (
            {"name": "x", "role": "agency_admin"},
            {"name": "Not A Slug"},
            {"name": "x", "role": "agent"},
        ):
            bad = await http.post("/api/tenants/kettle/tokens", json=body, headers=tina.headers)
            assert bad.status_code == 400, body
        assert (await me(http, bearer(token))).status_code == 200
        listed = (await http.get("/api/tenants/kettle/tokens", headers=tina.headers)).json()
        assert listed == [
            {
                "name": "dashboard",
                "role": "client_viewer",
                "source": "api",
                "created_by": "tina",
                "created_at": listed[0]["created_at"],
                "last_used_at": listed[0]["created_at"],
                "revoked_at": None,
            }
        ]
        assert token not in str(listed)
        revoked = await http.delete("/api/tenants/kettle/tokens/dashboard", headers=tina.headers)
        assert revoked.status_code == 204
        assert (await me(http, bearer(token))).status_code == 401
        assert (
            await http.delete("/api/tenants/kettle/tokens/dashboard", headers=tina.headers)
        ).status_code == 204
        assert (
            await http.delete("/api/tenants/kettle/tokens/nothing", headers=tina.headers)
        ).status_code == 404
        reuse = await http.post(
            "/api/tenants/kettle/tokens", json={"name": "dashboard"}, headers=tina.headers
        )
        assert reuse.status_code == 409  # a revoked token keeps its name
    async with world.sessions() as session:
        row = (await session.exec(select(ApiTokenRow))).one()
    assert row.token_sha256 == ids.token_sha256(token) and row.revoked_at == clock.now


async def test_who_may_list_make_and_revoke_tokens(world: World) -> None:
    async with client(build_api(world.database_url)) as http:
        expected = {
            # (person, tenant): (list, make)
            ("ada", "northwind"): (200, 201),
            ("tina", "kettle"): (200, 201),
            ("tina", "northwind"): (404, 404),
            ("rosa", "kettle"): (200, 403),  # a team lead reads their tenant's configuration and tokens
            ("kai", "kettle"): (403, 403),
            ("vera", "kettle"): (403, 403),
            ("nils", "kettle"): (404, 404),
        }
        for (person, tenant), (list_status, make_status) in expected.items():
            signed = await world.session_for(person)
            listed = await http.get(f"/api/tenants/{tenant}/tokens", headers=signed.headers)
            made = await http.post(
                f"/api/tenants/{tenant}/tokens", json={"name": f"by-{person}"}, headers=signed.headers
            )
            revoked = await http.delete(f"/api/tenants/{tenant}/tokens/by-{person}", headers=signed.headers)
            assert (listed.status_code, made.status_code) == (list_status, make_status), (person, tenant)
            assert revoked.status_code == (204 if make_status == 201 else make_status), (person, tenant)
            for response in (listed, made, revoked):
                if response.status_code >= 400:
                    assert response.json()["error"]
        ada = await world.session_for("ada")
        nowhere = await http.post("/api/tenants/nowhere/tokens", json={"name": "x"}, headers=ada.headers)
        assert nowhere.status_code == 404
        listed = await http.get("/api/tenants/nowhere/tokens", headers=ada.headers)
        assert listed.status_code == 404 and listed.json()["field"] == "tenant"


# -- nothing secret in the logs -----------------------------------------------------------------


async def test_passwords_cookies_tokens_and_links_never_reach_the_logs(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = await invite(world.database_url, "newcomer", public_url=BASE_URL, lifetime=timedelta(hours=1))
    async with client(build_api(world.database_url)) as http:
        await http.post("/api/session", json={"email": "kai@example.com", "password": "my secret guess"})
        await http.post("/api/session", json={"email": "my-other-secret@example.com", "password": PASSWORD})
        tina = await sign_in(http, "tina@example.com", PASSWORD)
        made = await http.post("/api/tenants/kettle/tokens", json={"name": "logs"}, headers=tina.headers)
        token = made.json()["token"]
        assert (await me(http, bearer(token))).status_code == 200
        await http.delete("/api/tenants/kettle/tokens/logs", headers=tina.headers)
        await http.post("/api/password", json={"token": token_of(url), "password": NEW_PASSWORD})
        await sign_in(http, "newcomer@example.com", NEW_PASSWORD)
        await http.delete("/api/session", headers=tina.headers)
    logged = "\n".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)
    assert "signed in" in logged and "API token made" in logged  # the flow was logged
    for secret in (PASSWORD, NEW_PASSWORD, "my secret guess", tina.cookie, token, token_of(url)):
        assert secret not in logged


# -- roles granted by `apply` -------------------------------------------------------------------


def document(**tenant: Any) -> dict[str, Any]:
    return {
        "people": [
            {"id": p, "name": f"Person {p}", "email": f"{p}@example.com"}
            for p in ("ada", "tina", "vera", "kai")
        ],
        "tenants": [
            {
                "id": "kettle",
                "name": "Kettle & Co",
                "teams": [{"id": "care", "name": "Care", "members": ["kai"]}],
                **tenant,
            }
        ],
    }


async def applied(database_url: str, doc: dict[str, Any], *, prune: bool = False) -> Summary:
    engine = create_engine(database_url)
    try:
        parsed = parse_config(yaml.safe_dump(doc), source="roles.yaml")
        return await apply_config(session_factory(engine), parsed, source="roles.yaml", box=BOX, prune=prune)
    finally:
        await engine.dispose()


async def grants(database_url: str) -> set[tuple[str, str, str]]:
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            rows = (await session.exec(select(RoleGrantRow))).all()
            return {(row.person_id, row.role, row.tenant_id) for row in rows}
    finally:
        await engine.dispose()


async def version(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            tenant = await session.get(TenantRow, "kettle")
            assert tenant is not None
            return tenant.config_version
    finally:
        await engine.dispose()


async def test_apply_grants_roles_and_removes_those_the_file_no_longer_names(database_url: str) -> None:
    first = {**document(admins=["tina"], viewers=["vera"]), "agency_admins": ["ada"]}
    summary = await applied(database_url, first)
    assert summary.created["role grants"] == 3
    assert await grants(database_url) == {
        ("ada", "agency_admin", ""),
        ("tina", "tenant_admin", "kettle"),
        ("vera", "client_viewer", "kettle"),
    }
    at = await version(database_url)
    assert str(await applied(database_url, first)) == "created nothing; updated nothing"
    assert await version(database_url) == at

    # The agency admins are nobody's tenant: changing them changes no tenant's version.
    summary = await applied(database_url, {**first, "agency_admins": ["tina"]})
    assert (summary.created, summary.removed) == ({"role grants": 1}, {"role grants": 1})
    assert await version(database_url) == at

    # A tenant's list, given, is the whole of it; its tenant's configuration moves on.
    summary = await applied(database_url, document(admins=["kai"], viewers=["vera"]))
    assert (summary.created, summary.removed) == ({"role grants": 1}, {"role grants": 1})
    assert "removed 1 role grant" in str(summary)
    assert await version(database_url) == at + 1
    assert await grants(database_url) == {
        ("tina", "agency_admin", ""),  # the file left agency_admins out: they stay
        ("kai", "tenant_admin", "kettle"),
        ("vera", "client_viewer", "kettle"),
    }

    # A list left out keeps its grants (and says so), unless --prune.
    summary = await applied(database_url, document(admins=["kai"]))
    assert summary.kept == {"role grants": 1}
    assert "kept 1 role grant that the file no longer has (--prune removes them)" in str(summary)
    assert ("vera", "client_viewer", "kettle") in await grants(database_url)
    summary = await applied(database_url, document(admins=["kai"]), prune=True)
    assert summary.removed == {"role grants": 1}
    assert await grants(database_url) == {("tina", "agency_admin", ""), ("kai", "tenant_admin", "kettle")}


async def test_a_person_granted_a_role_signs_in_with_it(world: World) -> None:
    doc = {**document(viewers=["kai"], admins=["nils"]), "agency_admins": []}
    doc["people"] += [{"id": "nils", "name": "Nils", "email": "nils@example.com"}]
    await applied(world.database_url, doc)
    async with client(build_api(world.database_url)) as http:
        kai = await sign_in(http, "kai@example.com", PASSWORD)
        answer = (await me(http, kai.cookie_only)).json()
        assert answer["roles"] == {"agent": ["kettle"], "client_viewer": ["kettle"]}
        nils = (await me(http, (await sign_in(http, "nils@example.com", PASSWORD)).cookie_only)).json()
        assert nils["roles"] == {"agent": ["northwind"], "tenant_admin": ["kettle"]}
        assert [t["id"] for t in nils["tenants"]] == ["kettle", "northwind"]
        ada = (await me(http, (await sign_in(http, "ada@example.com", PASSWORD)).cookie_only)).json()
        assert ada["roles"] == {}  # `agency_admins: []` in the file took the grant away


async def test_an_unknown_person_given_a_role_is_a_clear_error_and_nothing_is_applied(
    database_url: str,
) -> None:
    doc = {**document(admins=["tina", "ghost"]), "agency_admins": ["nobody"]}
    with pytest.raises(ConfigError) as raised:
        await applied(database_url, doc)
    assert raised.value.problems == [
        "roles.yaml: agency_admins[0]: no person 'nobody'",
        "roles.yaml: tenants[0].admins[1]: no person 'ghost'",
    ]
    assert await grants(database_url) == set()


async def test_tokens_made_in_the_api_survive_apply_and_the_files_tokens_are_its_own(
    database_url: str,
) -> None:
    def with_tokens(*tokens: dict[str, str]) -> dict[str, Any]:
        return document(admins=["tina"], api_tokens=list(tokens))

    value = "file-token-" + "v" * 30
    doc = with_tokens({"name": "deploy", "token": value, "role": "client_viewer"})
    await applied(database_url, doc)
    async with World(database_url) as world:
        made_here = await world.token_for("kettle", "tenant_admin", name="dashboard", source="api")
        async with client(build_api(database_url)) as http:
            answer = (await me(http, bearer(value))).json()
            assert answer["roles"] == {"client_viewer": ["kettle"]}
            admin = await world.session_for("tina")
            assert (
                await http.delete("/api/tenants/kettle/tokens/deploy", headers=admin.headers)
            ).status_code == 204

            # The same value in the file: the token stays revoked.
            summary = await applied(database_url, doc)
            assert str(summary) == "created nothing; updated nothing"
            assert (await me(http, bearer(value))).status_code == 401

            # A new value is a new token, active at once, with the role the file gives.
            new_value = "file-token-" + "w" * 30
            doc = with_tokens({"name": "deploy", "token": new_value})
            assert (await applied(database_url, doc)).updated == {"API tokens": 1}
            assert (await me(http, bearer(new_value))).json()["roles"] == {"tenant_admin": ["kettle"]}
            assert (await me(http, bearer(value))).status_code == 401

            # Pruning removes the file's tokens it no longer lists, never those made in the API.
            summary = await applied(database_url, with_tokens(), prune=True)
            assert summary.removed == {"API tokens": 1}
            assert (await me(http, bearer(new_value))).status_code == 401
            assert (await me(http, bearer(made_here))).status_code == 200

    # A name made in the API is not the file's to take.
    clash = with_tokens({"name": "dashboard", "token": "file-token-" + "z" * 30})
    with pytest.raises(ConfigError, match=r"tenants\[0\].api_tokens\[0\].name: tenant 'kettle' has a token"):
        await applied(database_url, clash)
