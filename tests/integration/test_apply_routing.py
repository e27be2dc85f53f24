"""`stayhuman apply` with routing: rows written, `--prune`, commands queued for the router, on each database."""

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared import ids
from shared.commands import AnyCommand, CheckAvailability, HandOver, Recompute, command_adapter
from shared.db.models import (
    AccountRow,
    ApiTokenRow,
    CalendarRow,
    ConversationRow,
    OutboxBatchRow,
    PersonRow,
    PollStateRow,
    SlaPolicyRow,
    TeamMemberRow,
    TeamRow,
    TenantRow,
    TopicRow,
)
from shared.db.session import create_engine, session_factory, transaction
from shared.outbox import decode
from shared.secrets import PREFIX, SecretBox, new_key
from stayhuman.cli import main
from stayhuman.config import ConfigError, Summary, apply_config, parse_config

Sessions = async_sessionmaker[AsyncSession]
BOX = SecretBox(new_key())
APPRISE = ("ntfy://ntfy.example/maria-alerts", "slack://T1/B2/secret-token")
CHAIN = [
    {"after": "600s", "notify": "lead"},
    {"after": "1800s", "notify": "manager", "repeat": {"every": "1800s", "times": 2}},
    {"after": "7200s", "notify": "person", "person": "li"},
]
TABLES = (
    TenantRow,
    PersonRow,
    CalendarRow,
    SlaPolicyRow,
    TeamRow,
    TeamMemberRow,
    TopicRow,
    AccountRow,
    ApiTokenRow,
    PollStateRow,
)


def person(person_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": person_id, "name": f"Person {person_id}", "email": f"{person_id}@example.com", **extra}


def account(account_id: str, team: str) -> dict[str, Any]:
    return {
        "id": account_id,
        "platform": "facebook",
        "handle": "Bluebird Coffee",
        "team": team,
        "webhook_secret": "s" * 20,
    }


def full() -> dict[str, Any]:
    """One tenant using every routing feature, and one of each thing that a prune can remove."""
    return {
        "people": [
            person(
                "maria",
                skills=["billing", "german"],
                languages=["en", "de"],
                capacity=8,
                priority_weights={"urgent": 3, "high": 2},
                timezone="Europe/Berlin",
                working_hours={"mon": [["09:00", "17:00"]], "tue": [["09:00", "17:00"]]},
                out_of_office={
                    "from": "2026-12-20T00:00:00+01:00",
                    "until": "2027-01-04T09:00:00+01:00",
                    "substitute": "li",
                },
                notify={"warning": ["push"], "breach": ["email", "push"], "escalation": ["email", "apprise"]},
                apprise=list(APPRISE),
                quiet_hours={"from": "22:00", "until": "7:00"},
            ),
            person("li"),
            person("sam"),
        ],
        "tenants": [
            {
                "id": "bluebird",
                "name": "Bluebird Coffee",
                "vip": ["@oprah", "1234567"],
                "auto_resolve_after": "3d",
                "manager": "sam",
                "escalation": [
                    {"after": "10m", "notify": "lead"},
                    {"after": "30m", "notify": "manager", "repeat": {"every": "30m", "times": 2}},
                    {"after": "2h", "notify": "person", "person": "li"},
                ],
                "calendars": [
                    {
                        "name": "office",
                        "timezone": "Europe/Berlin",
                        "hours": {"mon": [["09:00", "18:00"]], "tue": [["09:00", "18:00"]]},
                        "holidays": {"country": "DE", "subdivision": "BY"},
                        "closed_days": ["2026-12-31", "2026-12-24"],
                    },
                    {"name": "shop", "timezone": "UTC"},
                ],
                "sla_policies": [
                    {
                        "name": "standard",
                        "first_response": "1h",
                        "next_response": "2h",
                        "resolution": "2d",
                        "warn_before": "15m",
                        "calendar": "office",
                        "priorities": {
                            "urgent": {"first_response": "15m", "next_response": "30m", "resolution": "4h"},
                            "high": {"first_response": "30m"},
                        },
                        "vip_bump": 2,
                        "high_reach": {"followers": 100000},
                    },
                    {"name": "fast", "first_response": "10m", "calendar": "shop"},
                ],
                "teams": [
                    {
                        "id": "care",
                        "name": "Customer care",
                        "sla_policy": "standard",
                        "lead": "maria",
                        "members": ["maria", "li"],
                    },
                    {"id": "billing", "name": "Billing", "sla_policy": "fast", "members": ["maria", "sam"]},
                ],
                "topics": [
                    {
                        "name": "refunds",
                        "match": {"keywords": ["refund", "money back"], "languages": ["de"]},
                        "team": "billing",
                        "priority": "high",
                        "sla_policy": "standard",
                        "skills": ["billing"],
                        "escalation": [{"after": "5m", "notify": "team"}],
                    },
                    {"name": "spam", "match": {"patterns": [r"https?://\S+\.xyz"]}, "no_sla": True},
                    {"name": "general", "default": True, "team": "care"},
                ],
                "accounts": [account("bluebird-fb", "care"), account("bluebird-x", "billing")],
                "api_tokens": [
                    {"name": "importer", "token": "i" * 24},
                    {"name": "exporter", "token": "e" * 24},
                ],
            }
        ],
    }


def reduced() -> dict[str, Any]:
    """`full()` without calendar shop, policy fast, team billing, topic spam, token exporter, account bluebird-x."""
    document = full()
    tenant = document["tenants"][0]
    tenant["calendars"].pop()
    tenant["sla_policies"].pop()
    tenant["teams"].pop()
    tenant["topics"].pop(1)
    tenant["topics"][0]["team"] = "care"
    tenant["accounts"].pop()
    tenant["api_tokens"].pop()
    return document


async def apply(sessions: Sessions, document: dict[str, Any], **options: bool) -> Summary:
    text = yaml.safe_dump(document, sort_keys=False)
    parsed = parse_config(text, source="config.yaml")
    return await apply_config(sessions, parsed, source="config.yaml", box=BOX, **options)


async def relay(sessions: Sessions) -> list[AnyCommand]:
    """Take the queued commands out of the outbox, as the router's relay does."""
    async with transaction(sessions) as session:
        rows = (await session.exec(select(OutboxBatchRow).order_by(OutboxBatchRow.created_at))).all()
        await session.exec(delete(OutboxBatchRow))
    return [command_adapter.validate_json(m.payload) for row in rows for m in decode(row.messages)]


def brief(commands: list[AnyCommand]) -> set[tuple[str, ...]]:
    result: set[tuple[str, ...]] = set()
    for command in commands:
        match command:
            case HandOver():
                result.add(("hand_over", command.person_id, command.reason))
            case CheckAvailability():
                result.add(("check_availability", command.person_id))
            case Recompute():
                result.add(("recompute", command.tenant_id))
    return result


async def snapshot(sessions: Sessions) -> dict[str, list[dict[str, Any]]]:
    """Every row of the configuration tables and the outbox, to show that nothing changed."""
    async with sessions() as session:
        result = {
            model.__tablename__: sorted(
                (row.model_dump() for row in (await session.exec(select(model))).all()), key=repr
            )
            for model in (*TABLES, OutboxBatchRow)
        }
    return result


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[Sessions]:
    engine = create_engine(database_url)
    yield session_factory(engine)
    await engine.dispose()


async def test_routing_rows_are_written(sessions: Sessions) -> None:
    summary = await apply(sessions, full())
    assert summary.created == {
        "API tokens": 2,
        "SLA policies": 2,
        "accounts": 2,
        "calendars": 2,
        "people": 3,
        "team memberships": 4,
        "teams": 2,
        "tenants": 1,
        "topics": 3,
    }
    t = "bluebird"
    async with sessions() as session:
        maria = await session.get(PersonRow, "maria")
        li = await session.get(PersonRow, "li")
        tenant = await session.get(TenantRow, t)
        office = await session.get(CalendarRow, ids.calendar_id(tenant_id=t, name="office"))
        shop = await session.get(CalendarRow, ids.calendar_id(tenant_id=t, name="shop"))
        standard = await session.get(SlaPolicyRow, ids.sla_policy_id(tenant_id=t, name="standard"))
        care = await session.get(TeamRow, ids.team_id(tenant_id=t, slug="care"))
        topics = (await session.exec(select(TopicRow).order_by(TopicRow.position))).all()
    assert maria is not None and li is not None and tenant is not None and care is not None
    assert json.loads(maria.skills) == ["billing", "german"] and json.loads(maria.languages) == ["en", "de"]
    assert maria.capacity == 8 and json.loads(maria.priority_weights) == {"urgent": 3, "high": 2}
    assert maria.timezone == "Europe/Berlin"
    assert json.loads(maria.working_hours or "") == {"mon": [["09:00", "17:00"]], "tue": [["09:00", "17:00"]]}
    assert maria.out_of_office_from == datetime(2026, 12, 19, 23, 0, tzinfo=UTC)
    assert maria.out_of_office_until == datetime(2027, 1, 4, 8, 0, tzinfo=UTC)
    assert maria.substitute_id == "li" and maria.active
    assert (li.capacity, li.timezone, li.working_hours, li.priority_weights) == (20, "UTC", None, "{}")
    assert json.loads(tenant.vip) == ["@oprah", "1234567"] and tenant.auto_resolve_seconds == 3 * 86400
    assert office is not None and shop is not None
    assert (office.timezone, office.holidays_country, office.holidays_subdivision) == (
        "Europe/Berlin",
        "DE",
        "BY",
    )
    assert json.loads(office.hours) == {"mon": [["09:00", "18:00"]], "tue": [["09:00", "18:00"]]}
    assert json.loads(office.closed_days) == ["2026-12-24", "2026-12-31"]
    assert json.loads(shop.hours) is None  # no hours: open around the clock
    assert standard is not None and standard.calendar_id == office.id
    assert (standard.first_response_seconds, standard.next_response_seconds) == (3600, 7200)
    assert (standard.resolution_seconds, standard.warn_before_seconds) == (2 * 86400, 900)
    assert json.loads(standard.targets) == {
        "urgent": {"first_response": 900, "next_response": 1800, "resolution": 4 * 3600},
        "high": {"first_response": 1800},
    }
    assert (standard.vip_bump, standard.high_reach_followers, standard.high_reach_bump) == (2, 100000, 1)
    assert care.lead_id == "maria" and care.sla_policy_id == standard.id
    assert [(x.name, x.position, x.is_default) for x in topics] == [
        ("refunds", 0, False),
        ("spam", 1, False),
        ("general", 2, True),
    ]
    refunds, spam, general = topics
    assert json.loads(refunds.rule) == {"keywords": ["refund", "money back"], "languages": ["de"]}
    assert refunds.team_id == ids.team_id(tenant_id=t, slug="billing") and refunds.priority == "high"
    assert refunds.sla_policy_id == standard.id and json.loads(refunds.skills) == ["billing"]
    assert json.loads(spam.rule) == {"patterns": [r"https?://\S+\.xyz"]}
    assert spam.no_sla and spam.team_id is None and spam.sla_policy_id is None
    assert json.loads(general.rule) == {} and general.team_id == care.id and general.priority == "normal"
    assert general.sla_policy_id is None  # the team's policy applies
    commands = await relay(sessions)
    assert brief(commands) == {("check_availability", p) for p in ("maria", "li", "sam")}
    assert {c.issued_by for c in commands} == {"stayhuman apply"}
    assert len({c.correlation_id for c in commands}) == 1 and summary.commands == 3


async def test_escalation_and_alert_preferences_are_written(sessions: Sessions) -> None:
    await apply(sessions, full())
    async with sessions() as session:
        tenant = await session.get(TenantRow, "bluebird")
        maria = await session.get(PersonRow, "maria")
        li = await session.get(PersonRow, "li")
        topics = {x.name: x for x in (await session.exec(select(TopicRow))).all()}
    assert tenant is not None and maria is not None and li is not None
    assert tenant.manager_id == "sam"
    assert tenant.escalation == json.dumps(CHAIN, sort_keys=True, separators=(",", ":"))
    assert json.loads(topics["refunds"].escalation or "") == [{"after": "300s", "notify": "team"}]
    assert topics["general"].escalation is None and topics["spam"].escalation is None  # the tenant's
    assert json.loads(maria.notify) == {
        "warning": ["push"],
        "breach": ["email", "push"],
        "escalation": ["email", "apprise"],
    }
    assert json.loads(maria.quiet_hours or "") == {"from": "22:00", "until": "07:00"}
    assert maria.apprise_urls.startswith(PREFIX) and "secret-token" not in maria.apprise_urls
    assert json.loads(BOX.open(maria.apprise_urls)) == list(APPRISE)
    assert (li.notify, li.apprise_urls, li.quiet_hours) == ("{}", "[]", None)
    assert json.loads(BOX.open(li.apprise_urls)) == []


async def test_changed_alert_settings_are_stored_and_removed_ones_cleared(
    sessions: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    await apply(sessions, full())
    async with sessions() as session:
        before = await session.get(PersonRow, "maria")
    assert before is not None
    document = full()
    maria = document["people"][0]
    monkeypatch.setenv("MARIA_SLACK_URL", "slack://T9/B9/from-the-environment")
    maria["apprise"] = [APPRISE[0], "${MARIA_SLACK_URL}"]
    maria["quiet_hours"] = {"from": "12:00", "until": "13:00"}
    tenant = document["tenants"][0]
    tenant["escalation"] = [{"after": "1h", "notify": "team"}]
    tenant["manager"] = "li"
    del tenant["topics"][0]["escalation"]  # back to the tenant's chain
    tenant["topics"][2]["escalation"] = []  # general: no escalation at all
    summary = await apply(sessions, document)
    assert summary.updated == {"people": 1, "tenants": 1, "topics": 2} and summary.created == {}
    async with sessions() as session:
        stored = await session.get(PersonRow, "maria")
        row = await session.get(TenantRow, "bluebird")
        topics = {x.name: x for x in (await session.exec(select(TopicRow))).all()}
    assert stored is not None and row is not None
    assert stored.apprise_urls != before.apprise_urls
    assert json.loads(BOX.open(stored.apprise_urls)) == [APPRISE[0], "slack://T9/B9/from-the-environment"]
    assert json.loads(stored.quiet_hours or "") == {"from": "12:00", "until": "13:00"}
    assert (row.manager_id, json.loads(row.escalation)) == ("li", [{"after": "3600s", "notify": "team"}])
    assert topics["refunds"].escalation is None and topics["general"].escalation == "[]"
    assert await apply(sessions, document) == Summary()  # the environment's URL sealed once, kept

    for key in ("notify", "apprise", "quiet_hours"):
        del maria[key]
    del tenant["escalation"], tenant["manager"]
    await apply(sessions, document)
    async with sessions() as session:
        stored = await session.get(PersonRow, "maria")
        row = await session.get(TenantRow, "bluebird")
    assert stored is not None and row is not None
    assert (stored.notify, stored.apprise_urls, stored.quiet_hours) == ("{}", "[]", None)
    assert (row.manager_id, row.escalation) == (None, "[]")


async def test_a_chain_may_name_people_of_an_earlier_file(sessions: Sessions) -> None:
    document = full()
    await apply(sessions, {"people": document["people"]})
    document["people"] = []
    await apply(sessions, document)
    async with sessions() as session:
        tenant = await session.get(TenantRow, "bluebird")
    assert tenant is not None and tenant.manager_id == "sam" and json.loads(tenant.escalation) == CHAIN
    document["tenants"][0]["escalation"][2]["person"] = "ghost"
    with pytest.raises(ConfigError) as error:
        await apply(sessions, document)
    assert error.value.problems == ["config.yaml: tenants[0].escalation[2].person: no person 'ghost'"]


async def test_a_second_apply_changes_nothing_and_queues_nothing(sessions: Sessions) -> None:
    await apply(sessions, full())
    await relay(sessions)
    before = await snapshot(sessions)
    again = await apply(sessions, full())
    assert str(again) == "created nothing; updated nothing"
    assert again == Summary()
    assert await snapshot(sessions) == before


async def test_changes_queue_hand_overs_and_availability_checks(sessions: Sessions) -> None:
    await apply(sessions, full())
    await relay(sessions)
    document = full()
    maria, li, sam = document["people"]
    maria["active"] = False
    li["name"] = "Li Wei"  # not about availability: nothing to do for the router
    sam["capacity"] = 3
    document["people"].append(person("ana"))
    care, billing = document["tenants"][0]["teams"]
    care["members"] = ["maria"]
    billing["members"] = ["maria", "sam", "ana"]
    summary = await apply(sessions, document)
    assert brief(await relay(sessions)) == {
        ("hand_over", "maria", "deactivated"),
        ("check_availability", "maria"),
        ("check_availability", "sam"),
        ("check_availability", "ana"),  # created, and a new member of billing
        ("hand_over", "li", "removed from team care"),
    }
    assert str(summary).endswith("; queued 5 commands for the router; configuration version bluebird 2")
    maria["active"] = True
    maria["out_of_office"]["until"] = "2027-01-05T09:00:00+01:00"
    await apply(sessions, document)
    assert brief(await relay(sessions)) == {("check_availability", "maria")}


async def test_prune_removes_what_the_file_no_longer_has(sessions: Sessions) -> None:
    await apply(sessions, full())
    async with transaction(sessions) as session:
        session.add(PollStateRow(account_id="bluebird-x", feed="health"))
    await relay(sessions)

    kept = await apply(sessions, reduced())
    assert kept.removed == {} and await relay(sessions) == []
    assert kept.kept == {
        "API tokens": 1,
        "SLA policies": 1,
        "accounts": 1,
        "calendars": 1,
        "teams": 1,
        "topics": 1,
    }
    assert "(--prune removes them)" in str(kept)
    async with sessions() as session:
        assert len((await session.exec(select(TopicRow))).all()) == 3

    pruned = await apply(sessions, reduced(), prune=True)
    assert pruned.removed == {**kept.kept, "team memberships": 2}
    assert pruned.kept == {} and pruned.created == {} and pruned.updated == {}
    assert "removed 1 API token, 1 SLA policy, 1 account" in str(pruned)
    assert brief(await relay(sessions)) == {
        ("hand_over", "maria", "removed from team billing"),
        ("hand_over", "sam", "removed from team billing"),
    }
    async with sessions() as session:
        left = {model.__tablename__: (await session.exec(select(model))).all() for model in TABLES}
    assert sorted((x.position, x.name) for x in left["topic"]) == [(0, "refunds"), (1, "general")]
    assert [c.name for c in left["calendar"]] == ["office"]
    assert [p.name for p in left["slapolicy"]] == ["standard"]
    assert [team.slug for team in left["team"]] == ["care"]
    assert sorted(m.person_id for m in left["teammember"]) == ["li", "maria"]
    assert [a.id for a in left["account"]] == ["bluebird-fb"]
    assert [k.name for k in left["apitoken"]] == ["importer"]
    assert left["pollstate"] == []
    assert sorted(p.id for p in left["person"]) == ["li", "maria", "sam"]  # people are never pruned
    refunds = next(x for x in left["topic"] if x.name == "refunds")
    assert json.loads(refunds.escalation or "") == [{"after": "300s", "notify": "team"}]
    (tenant,) = left["tenant"]
    assert json.loads(tenant.escalation) == CHAIN and tenant.manager_id == "sam"
    (maria,) = [p for p in left["person"] if p.id == "maria"]
    assert json.loads(BOX.open(maria.apprise_urls)) == list(APPRISE)

    again = await apply(sessions, reduced(), prune=True)
    assert again == Summary() and await relay(sessions) == []


async def test_an_account_with_conversations_is_not_pruned(sessions: Sessions) -> None:
    await apply(sessions, full())
    now = datetime.now(UTC)
    async with transaction(sessions) as session:
        session.add(
            ConversationRow(
                id="c" * 32,
                tenant_id="bluebird",
                account_id="bluebird-x",
                platform="facebook",
                thread_id="thread-1",
                state="open",
                author_id="author-1",
                opened_at=now,
                last_inbound_at=now,
            )
        )
    before = await snapshot(sessions)
    document = reduced()
    document["people"][1]["name"] = "Renamed"
    with pytest.raises(ConfigError) as error:
        await apply(sessions, document, prune=True, recompute=True)
    assert error.value.problems == [
        "config.yaml: tenants[0]: account 'bluebird-x' has conversations;"
        " remove it from routing by moving it to another team instead"
    ]
    assert await snapshot(sessions) == before


async def test_recompute_is_queued_for_each_tenant_of_the_file(sessions: Sessions) -> None:
    document = full()
    document["tenants"].append({"id": "acme", "name": "Acme"})
    await apply(sessions, document)
    await relay(sessions)
    assert await apply(sessions, document) == Summary()
    summary = await apply(sessions, document, recompute=True)
    commands = await relay(sessions)
    assert brief(commands) == {("recompute", "bluebird"), ("recompute", "acme")}
    assert summary.commands == 2 and summary.created == summary.updated == {}


async def test_the_apply_command_line(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STAYHUMAN_DATABASE_URL", database_url)
    monkeypatch.setenv("STAYHUMAN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("STAYHUMAN_SECRET_KEY", new_key())

    async def run(document: dict[str, Any] | str, *flags: str) -> tuple[int, str, str]:
        path = tmp_path / "config.yaml"
        path.write_text(document if isinstance(document, str) else yaml.safe_dump(document))
        capsys.readouterr()
        code = await asyncio.to_thread(main, ["apply", "-f", str(path), *flags])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = await run(full())
    assert code == 0 and out.endswith(
        "; queued 3 commands for the router; configuration version bluebird 1\n"
    )
    code, out, _ = await run(reduced())
    assert code == 0 and "kept 1 API token" in out and "queued" not in out
    code, out, _ = await run(reduced(), "--prune", "--recompute")
    assert (code, out) == (
        0,
        f"applied {tmp_path / 'config.yaml'}: created nothing; updated nothing;"
        " removed 1 API token, 1 SLA policy, 1 account, 1 calendar, 2 team memberships, 1 team, 1 topic;"
        " queued 3 commands for the router; configuration version bluebird 3\n",  # two hand-overs, a recompute
    )
    broken = copy.deepcopy(reduced())
    broken["tenants"][0]["topics"][0]["team"] = "billng"
    code, out, err = await run(broken, "--prune")
    assert code == 2 and out == ""
    assert "is invalid, nothing was applied" in err
    assert "config.yaml: tenants[0].topics[0].team: no team 'billng' in tenant 'bluebird'" in err


@pytest.mark.parametrize("name", ["example", "demo"])
async def test_the_shipped_files_apply_and_apply_again_as_a_no_op(
    sessions: Sessions, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stayhuman.config import load_config
    from stayhuman.supervisor import DEMO_CONFIG

    monkeypatch.setenv("STAYHUMAN_DEMO_PLATFORM_URL", "http://127.0.0.1:8086")  # `up --demo` sets it

    path = Path(__file__).parents[2] / "examples" / "stayhuman.yaml" if name == "example" else DEMO_CONFIG
    first = await apply_config(sessions, load_config(path), source=str(path), box=BOX, prune=True)
    assert first.created["topics"] >= 2 and first.commands >= 2
    again = await apply_config(sessions, load_config(path), source=str(path), box=BOX, prune=True)
    assert again == Summary()


async def _versions(sessions: Sessions) -> dict[str, int]:
    async with sessions() as session:
        return {t.id: t.config_version for t in (await session.exec(select(TenantRow))).all()}


async def test_each_apply_that_changes_a_tenant_moves_its_configuration_version_on(
    sessions: Sessions,
) -> None:
    """Events carry the version, so a cache knows it is stale and a replay knows which rules held."""
    document = full()
    other = {"id": "globex", "name": "Globex", "teams": [{"id": "desk", "name": "Desk", "members": ["li"]}]}
    document["tenants"].append(other)
    first = await apply(sessions, document)
    assert first.versions == {"bluebird": 1, "globex": 1}
    assert str(first).endswith("; configuration version bluebird 1, globex 1")
    again = await apply(sessions, document)
    assert again.versions == {} and await _versions(sessions) == {"bluebird": 1, "globex": 1}

    document["tenants"][0]["auto_resolve_after"] = "4d"  # bluebird's own rule
    assert (await apply(sessions, document)).versions == {"bluebird": 2}

    document["people"][2]["capacity"] = 3  # sam: bluebird's manager and team member only
    assert (await apply(sessions, document)).versions == {"bluebird": 3}

    document["people"][1]["capacity"] = 4  # li serves both tenants
    assert (await apply(sessions, document)).versions == {"bluebird": 4, "globex": 2}

    document["tenants"][1]["teams"][0]["name"] = "Front desk"
    changed = await apply(sessions, {"people": [], "tenants": [document["tenants"][1]]})
    assert changed.versions == {"globex": 3}
    assert await _versions(sessions) == {"bluebird": 4, "globex": 3}
