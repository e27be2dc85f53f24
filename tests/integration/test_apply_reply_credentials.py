"""`stayhuman apply` with reply credentials: each account's `reply:` block is stored sealed, sealed
once, and shown nowhere (not in the file kept per tenant, not in what apply prints), on each database."""

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db.models import AccountRow, AppliedConfigurationRow, TenantRow
from shared.db.session import create_engine, session_factory
from shared.secrets import PREFIX, SecretBox, new_key
from stayhuman.cli import main
from stayhuman.config import REDACTED, Summary, apply_config, parse_config

Sessions = async_sessionmaker[AsyncSession]
BOX = SecretBox(new_key())

# Written as ${VAR} in the file, as an operator would; their values are what must never show.
ENVIRONMENT = {
    "KETTLE_PAGE_TOKEN": "EAAG-kettle-page-token-4e1f",
    "KETTLE_X_ACCESS": "kettle-x-access-token-77b0",
    "KETTLE_X_REFRESH": "kettle-x-refresh-token-0c2d",
    "KETTLE_BSKY_PASSWORD": "kvq3-m2xa-pl9z-t7rw",
    "KETTLE_HOOK_SECRET": "kettle-outbound-hook-secret-5a9e",
}
SECRETS = tuple(ENVIRONMENT.values())
REPLIES = {
    "kettle-fb": {"page_access_token": "${KETTLE_PAGE_TOKEN}"},
    "kettle-x": {
        "access_token": "${KETTLE_X_ACCESS}",
        "refresh_token": "${KETTLE_X_REFRESH}",
        "client_id": "kettle-x-client",
        "token_url": "http://127.0.0.1:9/2/oauth2/token",
    },
    "kettle-bsky": {"identifier": "kettle.bsky.social", "app_password": "${KETTLE_BSKY_PASSWORD}"},
    "kettle-hook": {"url": "https://hooks.kettle.example/replies", "secret": "${KETTLE_HOOK_SECRET}"},
}
PLATFORMS = {"kettle-fb": "facebook", "kettle-x": "x", "kettle-bsky": "bluesky", "kettle-hook": "other"}


def applied(block: dict[str, str]) -> dict[str, str]:
    """A reply block as apply reads it: its variables substituted."""
    return {
        key: ENVIRONMENT.get(value.removeprefix("${").removesuffix("}"), value)
        for key, value in block.items()
    }


def document() -> dict[str, Any]:
    """One tenant with an account of each kind of reply credentials, and one that cannot reply."""
    accounts = [
        {
            "id": account_id,
            "platform": platform,
            "handle": "Kettle Coffee",
            "team": "care",
            "webhook_secret": "kettle-inbound-webhook-1",
            "reply": REPLIES[account_id],
        }
        for account_id, platform in PLATFORMS.items()
    ]
    accounts.append({"id": "kettle-ig", "platform": "instagram", "handle": "Kettle Coffee", "team": "care"})
    return {
        "people": [{"id": "rosa", "name": "Rosa", "email": "rosa@example.com"}],
        "tenants": [
            {
                "id": "kettle",
                "name": "Kettle Coffee",
                "sla_policies": [{"name": "standard", "first_response": "1h"}],
                "teams": [{"id": "care", "name": "Care", "sla_policy": "standard", "members": ["rosa"]}],
                "topics": [{"name": "general", "default": True, "team": "care"}],
                "accounts": accounts,
            }
        ],
    }


@pytest.fixture
async def sessions(database_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Sessions]:
    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    engine = create_engine(database_url)
    yield session_factory(engine)
    await engine.dispose()


async def apply(sessions: Sessions, file: dict[str, Any], *, prune: bool = False) -> Summary:
    parsed = parse_config(yaml.safe_dump(file, sort_keys=False), source="kettle.yaml")
    return await apply_config(sessions, parsed, source="kettle.yaml", box=BOX, prune=prune)


async def stored(sessions: Sessions) -> dict[str, str | None]:
    async with sessions() as session:
        rows = (await session.exec(select(AccountRow))).all()
    return {row.id: row.reply_credentials for row in rows}


async def kept_files(sessions: Sessions) -> list[str]:
    async with sessions() as session:
        return list((await session.exec(select(AppliedConfigurationRow.yaml))).all())


async def test_reply_blocks_are_stored_sealed_and_open_to_the_keys_given(sessions: Sessions) -> None:
    await apply(sessions, document())
    rows = await stored(sessions)
    assert rows["kettle-ig"] is None  # no block: replies are not connected
    for account_id, block in REPLIES.items():
        sealed = rows[account_id]
        assert sealed is not None and sealed.startswith(PREFIX)
        assert not any(secret in sealed for secret in SECRETS)
        assert json.loads(BOX.open(sealed)) == applied(block)


async def test_applying_the_same_blocks_again_keeps_the_ciphertext_and_changes_nothing(
    sessions: Sessions,
) -> None:
    await apply(sessions, document())
    before = await stored(sessions)
    assert await apply(sessions, document()) == Summary()
    assert await stored(sessions) == before
    async with sessions() as session:
        tenant = await session.get(TenantRow, "kettle")
    assert tenant is not None and tenant.config_version == 1


async def test_a_changed_block_is_sealed_anew_and_a_removed_one_disconnects_replies(
    sessions: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    await apply(sessions, document())
    before = await stored(sessions)
    monkeypatch.setenv("KETTLE_PAGE_TOKEN", "EAAG-kettle-page-token-rotated")
    without = document()
    del without["tenants"][0]["accounts"][1]["reply"]  # kettle-x
    summary = await apply(sessions, without)
    assert summary.updated == {"accounts": 2} and summary.versions == {"kettle": 2}
    after = await stored(sessions)
    assert after["kettle-x"] is None
    assert after["kettle-fb"] != before["kettle-fb"] and after["kettle-fb"] is not None
    assert json.loads(BOX.open(after["kettle-fb"])) == {"page_access_token": "EAAG-kettle-page-token-rotated"}
    assert after["kettle-bsky"] == before["kettle-bsky"] and after["kettle-hook"] == before["kettle-hook"]


async def test_prune_removes_an_account_that_had_reply_credentials(sessions: Sessions) -> None:
    await apply(sessions, document())
    fewer = document()
    fewer["tenants"][0]["accounts"] = [a for a in fewer["tenants"][0]["accounts"] if a["id"] != "kettle-bsky"]
    summary = await apply(sessions, fewer, prune=True)
    assert summary.removed == {"accounts": 1}
    assert "kettle-bsky" not in await stored(sessions)


async def test_the_file_kept_for_the_tenant_holds_no_reply_secret(sessions: Sessions) -> None:
    file = document()
    file["tenants"][0]["vip"] = [f"pasted {ENVIRONMENT['KETTLE_HOOK_SECRET']} by mistake"]
    await apply(sessions, file)
    (text,) = await kept_files(sessions)
    assert not any(secret in text for secret in SECRETS)
    kept = {account["id"]: account.get("reply") for account in yaml.safe_load(text)["tenants"][0]["accounts"]}
    assert kept == {
        "kettle-fb": {"page_access_token": REDACTED},
        "kettle-x": {
            "access_token": REDACTED,
            "refresh_token": REDACTED,
            "client_id": "kettle-x-client",
            "token_url": "http://127.0.0.1:9/2/oauth2/token",
        },
        "kettle-bsky": {"identifier": "kettle.bsky.social", "app_password": REDACTED},
        "kettle-hook": {"url": "https://hooks.kettle.example/replies", "secret": REDACTED},
        "kettle-ig": None,
    }


async def test_apply_prints_no_reply_secret(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key = new_key()
    for name, value in {
        **ENVIRONMENT,
        "STAYHUMAN_DATABASE_URL": database_url,
        "STAYHUMAN_STATE_DIR": str(tmp_path / "state"),
        "STAYHUMAN_SECRET_KEY": key,
    }.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "kettle.yaml"

    async def run(file: dict[str, Any]) -> tuple[int, str]:
        path.write_text(yaml.safe_dump(file, sort_keys=False))
        capsys.readouterr()
        code = await asyncio.to_thread(main, ["apply", "-f", str(path)])
        out, err = capsys.readouterr()
        return code, out + err

    code, printed = await run(document())
    assert code == 0 and printed.startswith(f"applied {path}: created ")
    assert not any(secret in printed for secret in SECRETS)

    # A block refused: the problem names the key, never a value.
    wrong = copy.deepcopy(document())
    wrong["tenants"][0]["accounts"][0]["reply"]["app_password"] = "${KETTLE_BSKY_PASSWORD}"
    wrong["tenants"][0]["accounts"][3]["reply"]["secret"] = "short-hook-9k2"
    code, printed = await run(wrong)
    assert code == 2 and "nothing was applied" in printed
    assert f"{path}: tenants[0].accounts[3].reply.secret: String should have at least 16" in printed
    wrong["tenants"][0]["accounts"][3]["reply"]["secret"] = "${KETTLE_HOOK_SECRET}"
    code, again = await run(wrong)
    assert code == 2
    assert (
        f"{path}: tenants[0].accounts[0].reply.app_password: a platform: facebook account does not use"
        in again
    )
    assert not any(secret in printed + again for secret in (*SECRETS, "short-hook-9k2"))

    engine = create_engine(database_url)
    try:
        rows = await stored(session_factory(engine))
    finally:
        await engine.dispose()
    sealed = rows["kettle-fb"]
    assert sealed is not None
    assert json.loads(SecretBox(key).open(sealed)) == applied(
        REPLIES["kettle-fb"]
    )  # the refused file changed nothing
