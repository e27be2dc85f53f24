"""A tenant's configuration, read-only, over a real database (SQLite and PostgreSQL): applied
through the real `apply`, read back through HTTP as each role, with the file it came from.

One agency serves two tenants. kettle: team care (lead rosa; rosa, kai, sam), team social
(lead mo, who answers in no team; kai), manager mo, admin tina, client viewer vera, a chain
that alerts kai. northwind: team care (sam, li-nw), admin nora-nw, a chain that alerts
pia-nw. sam serves both; ada-agency is the agency admin. Secrets come from the environment and from the file.
"""

import asyncio
import copy
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from alembic import command
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.api.config_reads import configuration_router
from shared.db.migrate import alembic_config, upgrade
from shared.db.models import AppliedConfigurationRow, TenantRow
from shared.db.session import create_engine, session_factory
from shared.secrets import SecretBox, new_key
from stayhuman.cli import main
from stayhuman.config import (
    MAX_CONFIG_BYTES,
    ConfigError,
    Summary,
    apply_config,
    parse_config,
    redact,
    scrub,
    secret_values,
)
from tests.api_world import World, bearer, build_api, client

BOX = SecretBox(new_key())
# Every secret of the file, as applied: none may appear in any answer or in the kept text.
KETTLE_SECRET = "kettle-webhook-0123456789-abcdef"  # from the environment
NORTH_SECRET = "north-webhook-written-in-the-file"  # written in the file
IMPORTER = "importer-token-0123456789abcdef"
ACCESS_TOKEN = "yt-access-token-from-env-98765"
URL_PASSWORD = "base-url-password-4242"
LI_APPRISE = "ntfy://ntfy.example/li-private-topic"
SAM_APPRISE = "slack://T111/B222/sam-apprise-token-xyz"  # from the environment
SECRETS = (KETTLE_SECRET, NORTH_SECRET, IMPORTER, ACCESS_TOKEN, URL_PASSWORD, LI_APPRISE, SAM_APPRISE)
ENVIRONMENT = {"KETTLE_SECRET": KETTLE_SECRET, "SAM_APPRISE": SAM_APPRISE, "YT_TOKEN": ACCESS_TOKEN}
R = "<redacted>"


def person(person_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": person_id, "name": f"Person {person_id}", "email": f"{person_id}@example.com", **extra}


def agency() -> dict[str, Any]:
    """The file, as written (`${...}`: from the environment)."""
    return {
        "agency_admins": ["ada-agency"],
        "people": [
            person("ada-agency"),
            person("tina"),
            person(
                "rosa",
                skills=["billing"],
                languages=["en", "de"],
                capacity=8,
                priority_weights={"urgent": 3},
                timezone="Europe/Berlin",
                working_hours={"mon": [["09:00", "17:00"]], "tue": [["09:00", "17:00"]]},
            ),
            person("kai"),
            person(
                "sam",
                notify={"escalation": ["email", "apprise"]},
                apprise=["${SAM_APPRISE}"],
                out_of_office={"from": "2026-12-20T00:00:00+01:00", "until": "2027-01-04T09:00:00+01:00"},
            ),
            person("vera"),
            person("mo"),
            person("nora-nw"),
            person("li-nw", apprise=[LI_APPRISE], notify={"breach": ["apprise"]}),
            person("pia-nw"),
        ],
        "tenants": [
            {
                "id": "kettle",
                "name": "Kettle & Co",
                "vip": ["@oprah"],
                "auto_resolve_after": "3d",
                "manager": "mo",
                "escalation": [
                    {"after": "10m", "notify": "lead"},
                    {
                        "after": "1h",
                        "notify": "person",
                        "person": "kai",
                        "repeat": {"every": "30m", "times": 2},
                    },
                ],
                "calendars": [
                    {
                        "name": "office",
                        "timezone": "Europe/Berlin",
                        "hours": {"mon": [["09:00", "18:00"]], "tue": [["09:00", "18:00"]]},
                        "holidays": {"country": "DE", "subdivision": "BY"},
                        "closed_days": ["2026-12-31"],
                    }
                ],
                "sla_policies": [
                    {
                        "name": "standard",
                        "first_response": "1h",
                        "resolution": "2d",
                        "warn_before": "15m",
                        "calendar": "office",
                        "priorities": {"urgent": {"first_response": "15m"}},
                    }
                ],
                "teams": [
                    {
                        "id": "care",
                        "name": "Customer care",
                        "sla_policy": "standard",
                        "lead": "rosa",
                        "members": ["rosa", "kai", "sam"],
                    },
                    {"id": "social", "name": "Social", "lead": "mo", "members": ["kai"]},
                ],
                "topics": [
                    {
                        "name": "refunds",
                        "match": {"keywords": ["refund", "money back"]},
                        "team": "care",
                        "priority": "high",
                        "skills": ["billing"],
                        "escalation": [{"after": "5m", "notify": "team"}],
                    },
                    {"name": "general", "default": True, "team": "social"},
                ],
                "accounts": [
                    {
                        "id": "kettle-fb",
                        "platform": "facebook",
                        "handle": "Kettle",
                        "team": "care",
                        "webhook_secret": "${KETTLE_SECRET}",
                    },
                    {
                        "id": "kettle-yt",
                        "platform": "youtube",
                        "handle": "Kettle",
                        "team": "care",
                        "external_id": "UC123",
                        "api_base_url": f"https://reader:{URL_PASSWORD}@youtube.example/api",
                        "access_token": "${YT_TOKEN}",
                    },
                ],
                "api_tokens": [{"name": "importer", "token": IMPORTER}],
                "admins": ["tina"],
                "viewers": ["vera"],
            },
            {
                "id": "northwind",
                "name": "Northwind",
                "escalation": [{"after": "20m", "notify": "person", "person": "pia-nw"}],
                "teams": [{"id": "care", "name": "North care", "members": ["sam", "li-nw"]}],
                "accounts": [
                    {
                        "id": "north-fb",
                        "platform": "facebook",
                        "handle": "Northwind",
                        "team": "care",
                        "webhook_secret": NORTH_SECRET,
                    }
                ],
                "admins": ["nora-nw"],
            },
        ],
    }


def expected_kept(document: dict[str, Any], tenant_id: str, named: list[str]) -> dict[str, Any]:
    """The tenant's part of the file as applied, with the people it names, each secret redacted."""
    applied = yaml.safe_load(os.path.expandvars(yaml.safe_dump(document, sort_keys=False)))
    people = [copy.deepcopy(p) for p in applied["people"] if p["id"] in named]
    for one in people:
        if "apprise" in one:
            one["apprise"] = [R for _ in one["apprise"]]
    (tenant,) = [copy.deepcopy(t) for t in applied["tenants"] if t["id"] == tenant_id]
    for account in tenant.get("accounts", []):
        for key in ("webhook_secret", "access_token"):
            if key in account:
                account[key] = R
        if "@" in account.get("api_base_url", ""):
            account["api_base_url"] = R
    for token in tenant.get("api_tokens", []):
        token["token"] = R
    return {"people": people, "tenants": [tenant]}


Sessions = async_sessionmaker[AsyncSession]


async def apply(sessions: Sessions, document: dict[str, Any]) -> Summary:
    text = yaml.safe_dump(document, sort_keys=False)
    return await apply_config(
        sessions, parse_config(text, source="agency.yaml"), source="agency.yaml", box=BOX
    )


async def kept_rows(sessions: Sessions) -> list[tuple[str, int]]:
    async with sessions() as session:
        rows = await session.exec(
            select(AppliedConfigurationRow.tenant_id, AppliedConfigurationRow.config_version).order_by(
                col(AppliedConfigurationRow.tenant_id), col(AppliedConfigurationRow.config_version)
            )
        )
        return [(tenant, int(version)) for tenant, version in rows.all()]


@dataclass
class Agency:
    world: World
    http: httpx.AsyncClient
    headers: dict[str, dict[str, str]] = field(default_factory=dict)

    async def get(self, who: str, tenant: str) -> httpx.Response:
        return await self.http.get(f"/api/tenants/{tenant}/configuration", headers=self.headers[who])


@pytest.fixture
async def agency_api(database_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Agency]:
    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    async with World(database_url) as world:
        await apply(world.sessions, agency())
        app = build_api(database_url)
        app.include_router(configuration_router())
        async with client(app) as http:
            found = Agency(world, http)
            for who in ("ada-agency", "tina", "rosa", "kai", "sam", "vera", "mo", "nora-nw", "li-nw"):
                found.headers[who] = (await world.session_for(who)).headers
            found.headers["kettle-token"] = bearer(await world.token_for("kettle", "tenant_admin"))
            found.headers["kettle-viewer-token"] = bearer(await world.token_for("kettle", "client_viewer"))
            found.headers["anonymous"] = {}
            yield found


# Who gets what, for each tenant: 200, 403 (a role there, without read_config), 404 (no role).
MATRIX = {
    "ada-agency": {"kettle": 200, "northwind": 200},  # agency admin
    "tina": {"kettle": 200, "northwind": 404},  # kettle's admin
    "rosa": {"kettle": 200, "northwind": 404},  # kettle's team lead
    "mo": {"kettle": 200, "northwind": 404},  # leads social without answering in it
    "kai": {"kettle": 403, "northwind": 404},  # an agent
    "sam": {"kettle": 403, "northwind": 403},  # an agent of both
    "vera": {"kettle": 403, "northwind": 404},  # kettle's client viewer
    "nora-nw": {"kettle": 404, "northwind": 200},  # northwind's admin
    "li-nw": {"kettle": 404, "northwind": 403},
    "kettle-token": {"kettle": 200, "northwind": 404},
    "kettle-viewer-token": {"kettle": 403, "northwind": 404},
    "anonymous": {"kettle": 401, "northwind": 401},
}
KETTLE_PEOPLE = ["kai", "mo", "rosa", "sam", "tina", "vera"]  # named by kettle's configuration
NORTH_PEOPLE = ["li-nw", "nora-nw", "pia-nw", "sam"]


async def test_each_role_reads_what_the_roles_table_gives_and_no_secret_ever(agency_api: Agency) -> None:
    bodies = []
    for who, answers in MATRIX.items():
        for tenant, status in answers.items():
            response = await agency_api.get(who, tenant)
            assert response.status_code == status, (who, tenant, response.text)
            body = response.json()
            bodies.append(response.text)
            if status == 200:
                assert body["tenant"]["id"] == tenant
            else:
                assert set(body) == {"error", "field"}, body
    for text in bodies:
        for secret in SECRETS:
            assert secret not in text
    for who in ("ada-agency", "tina"):
        missing = await agency_api.get(who, "no-such-tenant")
        assert missing.status_code == 404 and missing.json()["field"] == "tenant"
    bad = await agency_api.get("ada-agency", "Not A Slug!")
    assert bad.status_code == 400 and "error" in bad.json(), bad.text


async def test_a_tenant_admin_sees_their_tenant_and_the_people_serving_it_only(agency_api: Agency) -> None:
    body = (await agency_api.get("tina", "kettle")).json()
    assert [p["id"] for p in body["people"]] == KETTLE_PEOPLE
    assert {p["id"]: p["email"] for p in body["people"]}["rosa"] == "rosa@example.com"
    kept = yaml.safe_load(body["yaml"])
    assert [p["id"] for p in kept["people"]] == ["tina", "rosa", "kai", "sam", "vera", "mo"]
    assert [t["id"] for t in kept["tenants"]] == ["kettle"]
    everything = str(body)
    for stranger in ("nora-nw", "li-nw", "pia-nw", "ada-agency", "northwind", "North care"):
        assert stranger not in everything, stranger
    north = (await agency_api.get("nora-nw", "northwind")).json()
    assert [p["id"] for p in north["people"]] == NORTH_PEOPLE
    assert [p["id"] for p in yaml.safe_load(north["yaml"])["people"]] == ["sam", "nora-nw", "li-nw", "pia-nw"]
    for stranger in ("tina", "rosa", "kai", "vera", "kettle", "Kettle"):
        assert stranger not in str(north), stranger


async def test_the_view_says_what_apply_set(agency_api: Agency) -> None:
    body = (await agency_api.get("ada-agency", "kettle")).json()
    assert body["tenant"]["name"] == "Kettle & Co"
    assert body["tenant"]["config_version"] == 1 and body["yaml_version"] == 1
    assert body["tenant"]["applied_at"] is not None
    assert body["tenant"]["manager"] == {"id": "mo", "name": "Person mo"}
    assert body["tenant"]["vip"] == ["@oprah"] and body["tenant"]["auto_resolve_after_seconds"] == 3 * 86400
    people = {p["id"]: p for p in body["people"]}
    assert people["rosa"] == {
        "id": "rosa",
        "name": "Person rosa",
        "email": "rosa@example.com",
        "active": True,
        "roles": ["agent", "team_lead"],
        "teams": ["care"],
        "capacity": 8,
        "priority_weights": {"urgent": 3},
        "languages": ["en", "de"],
        "skills": ["billing"],
        "timezone": "Europe/Berlin",
        "working_hours": {"mon": [["09:00", "17:00"]], "tue": [["09:00", "17:00"]]},
    }
    assert people["mo"]["roles"] == ["manager", "team_lead"] and people["mo"]["teams"] == []
    assert people["kai"]["teams"] == ["care", "social"]
    assert people["tina"]["roles"] == ["tenant_admin"] and people["vera"]["roles"] == ["client_viewer"]
    assert [
        (t["slug"], t["lead"]["id"], [m["id"] for m in t["members"]], t["sla_policy"]) for t in body["teams"]
    ] == [
        ("care", "rosa", ["kai", "rosa", "sam"], "standard"),
        ("social", "mo", ["kai"], None),
    ]
    assert [(t["name"], t["default"], t["team"], t["priority"], t["skills"]) for t in body["topics"]] == [
        ("refunds", False, "care", "high", ["billing"]),
        ("general", True, "social", "normal", []),
    ]
    assert body["topics"][0]["rule"]["keywords"] == ["refund", "money back"]
    (policy,) = body["sla_policies"]
    assert policy["calendar"] == "office" and policy["warn_before_seconds"] == 900
    assert policy["targets"]["urgent"] == {
        "first_response_seconds": 900,
        "next_response_seconds": None,
        "resolution_seconds": 2 * 86400,
    }
    assert policy["targets"]["low"]["first_response_seconds"] == 3600
    assert set(policy["targets"]) == {"low", "normal", "high", "urgent"}
    (calendar,) = body["calendars"]
    assert calendar["timezone"] == "Europe/Berlin" and calendar["closed_days"] == ["2026-12-31"]
    assert calendar["holidays"] == {"country": "DE", "subdivision": "BY"}
    assert calendar["hours"]["mon"] == [["09:00", "18:00"]]
    assert body["escalation"]["default"] == [
        {
            "after_seconds": 600,
            "notify": "lead",
            "person": None,
            "repeat_every_seconds": None,
            "repeat_times": 0,
        },
        {
            "after_seconds": 3600,
            "notify": "person",
            "person": "kai",
            "repeat_every_seconds": 1800,
            "repeat_times": 2,
        },
    ]
    assert body["escalation"]["topics"] == [
        {
            "topic": "refunds",
            "steps": [
                {
                    "after_seconds": 300,
                    "notify": "team",
                    "person": None,
                    "repeat_every_seconds": None,
                    "repeat_times": 0,
                }
            ],
        }
    ]


async def test_the_yaml_is_the_tenants_part_of_the_file_with_secrets_redacted(agency_api: Agency) -> None:
    document = agency()
    for who, tenant, named in (
        ("ada-agency", "kettle", KETTLE_PEOPLE),
        ("nora-nw", "northwind", NORTH_PEOPLE),
    ):
        kept = yaml.safe_load((await agency_api.get(who, tenant)).json()["yaml"])
        assert kept == expected_kept(document, tenant, named)
    kettle = yaml.safe_load((await agency_api.get("tina", "kettle")).json()["yaml"])
    assert kettle["tenants"][0]["accounts"][0]["webhook_secret"] == R
    assert kettle["tenants"][0]["api_tokens"] == [{"name": "importer", "token": R}]
    assert {p["id"]: p.get("apprise") for p in kettle["people"]}["sam"] == [R]
    async with agency_api.world.sessions() as session:
        stored = (await session.exec(select(AppliedConfigurationRow.yaml))).all()
    assert len(stored) == 2
    for text in stored:
        for secret in SECRETS:
            assert secret not in text


def test_each_secret_is_redacted_where_it_is_written_and_wherever_it_is_pasted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    document = agency()
    document["tenants"][0]["topics"][0]["match"]["keywords"].append(f"pasted {KETTLE_SECRET}")
    parsed = parse_config(yaml.safe_dump(document, sort_keys=False), source="agency.yaml")
    where_written = yaml.safe_dump(redact(parsed.source()))
    assert [secret for secret in SECRETS if secret in where_written] == [KETTLE_SECRET]  # the pasted one
    assert where_written.count(KETTLE_SECRET) == 1
    everywhere = yaml.safe_dump(scrub(redact(parsed.source()), secret_values(parsed)))
    assert [secret for secret in SECRETS if secret in everywhere] == []
    assert "pasted" not in everywhere and "refund" in everywhere


async def test_a_team_lead_reads_no_email_address(agency_api: Agency) -> None:
    body = (await agency_api.get("rosa", "kettle")).json()
    assert body["people"] and all(p["email"] is None for p in body["people"])
    assert "@example.com" not in body["yaml"]
    kept = yaml.safe_load(body["yaml"])
    assert {p["email"] for p in kept["people"]} == {R}
    assert kept["tenants"][0]["teams"][0]["members"] == ["rosa", "kai", "sam"]
    token = (await agency_api.get("kettle-token", "kettle")).json()
    assert {p["id"]: p["email"] for p in token["people"]}["kai"] == "kai@example.com"


async def test_a_version_keeps_its_file_once_and_a_people_only_file_carries_the_tenants_part(
    agency_api: Agency,
) -> None:
    sessions = agency_api.world.sessions
    assert await kept_rows(sessions) == [("kettle", 1), ("northwind", 1)]
    again = await apply(sessions, agency())
    assert again.versions == {}
    assert await kept_rows(sessions) == [("kettle", 1), ("northwind", 1)]

    # sam serves both tenants: a file of people only moves both on, each keeping its own part
    people_only = {"people": [p for p in agency()["people"] if p["id"] == "sam"]}
    people_only["people"][0]["capacity"] = 5
    assert (await apply(sessions, people_only)).versions == {"kettle": 2, "northwind": 2}
    assert await kept_rows(sessions) == [("kettle", 1), ("kettle", 2), ("northwind", 1), ("northwind", 2)]
    body = (await agency_api.get("ada-agency", "kettle")).json()
    assert body["tenant"]["config_version"] == 2 and body["yaml_version"] == 2
    kept = yaml.safe_load(body["yaml"])
    assert {p["id"]: p.get("capacity") for p in kept["people"]}["sam"] == 5
    expected = expected_kept(agency(), "kettle", KETTLE_PEOPLE)
    assert kept["tenants"] == expected["tenants"]
    assert [p["id"] for p in kept["people"]] == [p["id"] for p in expected["people"]]

    # a change to kettle alone keeps a file for kettle alone
    changed = agency()
    changed["tenants"][0]["name"] = "Kettle and Company"
    next(p for p in changed["people"] if p["id"] == "sam")["capacity"] = 5
    assert (await apply(sessions, changed)).versions == {"kettle": 3}
    assert await kept_rows(sessions) == [
        ("kettle", 1),
        ("kettle", 2),
        ("kettle", 3),
        ("northwind", 1),
        ("northwind", 2),
    ]
    latest = yaml.safe_load((await agency_api.get("tina", "kettle")).json()["yaml"])
    assert latest["tenants"][0]["name"] == "Kettle and Company"
    assert latest == expected_kept(changed, "kettle", KETTLE_PEOPLE)
    async with sessions() as session:
        tenant = await session.get(TenantRow, "kettle")
    assert tenant is not None and tenant.config_version == 3


async def test_a_tenant_applied_before_files_were_kept_answers_without_yaml(database_url: str) -> None:
    async with World(database_url) as world:
        await world.tenant("legacy", config_version=4)
        await world.person("lea")
        await world.grant("lea", "tenant_admin", "legacy")
        signed = await world.session_for("lea")
        app = build_api(database_url)
        app.include_router(configuration_router())
        async with client(app) as http:
            body = (await http.get("/api/tenants/legacy/configuration", headers=signed.headers)).json()
    assert body["yaml"] is None and body["yaml_version"] is None
    assert body["tenant"]["config_version"] == 4 and body["tenant"]["applied_at"] is None
    assert [p["id"] for p in body["people"]] == ["lea"]


def test_a_file_larger_than_apply_takes_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * MAX_CONFIG_BYTES + "\npeople: []\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STAYHUMAN_DATABASE_URL", raising=False)
    monkeypatch.setenv("STAYHUMAN_STATE_DIR", str(tmp_path / "state"))
    code = main(["apply", "-f", str(big)])
    err = capsys.readouterr().err
    assert code != 0
    assert f"more than the {MAX_CONFIG_BYTES} a configuration may have" in err and "Traceback" not in err
    assert not (tmp_path / "state").exists()
    with pytest.raises(ConfigError, match="more than the"):
        parse_config(big.read_text(), source="big.yaml")


async def test_the_migration_runs_up_and_down(empty_database_url: str) -> None:
    await asyncio.to_thread(upgrade, empty_database_url, "0019")

    async def tables() -> set[str]:
        engine = create_engine(empty_database_url)
        try:
            async with engine.connect() as connection:
                return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))
        finally:
            await engine.dispose()

    assert "appliedconfiguration" in await tables()
    engine = create_engine(empty_database_url)
    try:
        async with session_factory(engine)() as session:
            session.add(AppliedConfigurationRow(tenant_id="acme", config_version=1, yaml="people: []\n"))
            await session.commit()
    finally:
        await engine.dispose()
    await asyncio.to_thread(command.downgrade, alembic_config(empty_database_url), "0018")
    assert "appliedconfiguration" not in await tables()
    assert "timeline" in await tables()
    await asyncio.to_thread(upgrade, empty_database_url, "0019")
    assert "appliedconfiguration" in await tables()
