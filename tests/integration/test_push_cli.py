"""`stayhuman push-link` and `stayhuman push revoke`, as an operator runs them: a link names its
person and generation; revoking ends every link issued so far and removes their devices, and
a new link works again. Both need the installation's keys only as the README says."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from services.notify.push import Registration, SqlPushStore, read_push_token
from shared.db.core import PUSH_SUBSCRIPTIONS, fetch_rows
from shared.db.migrate import upgrade
from shared.db.session import create_engine, session_factory
from shared.secrets import SECRET_KEY_FILE, LinkSigner, SecretBox, new_key
from stayhuman.cli import main
from stayhuman.config import apply_config, parse_config
from tests.helpers import config_yaml
from tests.push import Device


@pytest.fixture
async def installation(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[SqlPushStore, LinkSigner]]:
    key = new_key()
    for name, value in {
        "STAYHUMAN_DATABASE_URL": database_url,
        "STAYHUMAN_STATE_DIR": str(tmp_path / "state"),
        "STAYHUMAN_SECRET_KEY": key,
        "STAYHUMAN_PUBLIC_URL": "https://alerts.example.com",
    }.items():
        monkeypatch.setenv(name, value)
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    yaml = config_yaml(tenant="acme", account="acme-fb", secret="s" * 20, people=["maria", "li"])
    await apply_config(sessions, parse_config(yaml, source="t.yaml"), source="t.yaml", box=SecretBox(key))
    yield SqlPushStore(lambda: sessions), LinkSigner.of_secret_key(key)
    await engine.dispose()


def run(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


async def link_of(person: str, signer: LinkSigner, capsys: pytest.CaptureFixture[str]) -> tuple[str, int]:
    code, out, err = await asyncio.to_thread(run, "push-link", person, capsys=capsys)
    assert (code, err) == (0, "")
    token = out.strip().removeprefix("https://alerts.example.com/push/")
    found = read_push_token(signer, token)
    assert found is not None and found[0] == person
    return token, found[1]


async def test_revoke_ends_every_link_so_far_and_a_new_one_works(
    installation: tuple[SqlPushStore, LinkSigner], capsys: pytest.CaptureFixture[str]
) -> None:
    store, signer = installation
    _, generation = await link_of("maria", signer, capsys)
    for n in range(2):
        endpoint = f"https://push.example/maria-{n}"
        registration = Registration("maria", generation, endpoint, **Device().keys)
        assert await store.register(registration) == "registered"
    assert (
        await store.register(Registration("li", 0, "https://push.example/li", **Device().keys))
        == "registered"
    )

    code, out, err = await asyncio.to_thread(run, "push", "revoke", "maria", capsys=capsys)
    assert (code, err) == (0, "")
    assert out == (
        "revoked every push link issued to maria so far and removed the 2 devices registered through "
        "them; `stayhuman push-link maria` makes a new link\n"
    )
    assert await store.generation("maria") == generation + 1  # every earlier link is refused
    late = Registration("maria", generation, "https://push.example/late", **Device().keys)
    assert await store.register(late) == "revoked"
    _, fresh = await link_of("maria", signer, capsys)
    assert fresh == generation + 1
    again = Registration("maria", fresh, "https://push.example/maria-new", **Device().keys)
    assert await store.register(again) == "registered"
    factory = store.sessions()
    assert factory is not None
    async with factory() as session:
        rows = await fetch_rows(
            session, select(PUSH_SUBSCRIPTIONS.c.person_id, PUSH_SUBSCRIPTIONS.c.endpoint)
        )
    assert sorted(rows) == [("li", "https://push.example/li"), ("maria", "https://push.example/maria-new")]
    # nothing else changed: li's links and the keys are as they were
    assert await store.generation("li") == 0
    code, out, _ = await asyncio.to_thread(run, "push", "revoke", "maria", capsys=capsys)
    assert code == 0 and "removed the 1 device registered" in out


async def test_revoke_names_an_unknown_person(
    installation: tuple[SqlPushStore, LinkSigner], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await asyncio.to_thread(run, "push", "revoke", "ghost", capsys=capsys)
    assert (code, out, err) == (2, "", "stayhuman: error: no person 'ghost'\n")


def test_push_link_uses_the_variable_else_the_key_up_made_and_makes_one_only_for_development(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    elsewhere = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    for url in (elsewhere, f"sqlite+aiosqlite:///{state / 'stayhuman.db'}"):
        upgrade(url)
        engine = create_engine(url)
        yaml = config_yaml(tenant="acme", account="acme-fb", secret="s" * 20, people=["maria"])
        asyncio.run(
            apply_config(
                session_factory(engine), parse_config(yaml, source="t"), source="t", box=SecretBox(new_key())
            )
        )
        asyncio.run(engine.dispose())
    monkeypatch.delenv("STAYHUMAN_SECRET_KEY", raising=False)
    monkeypatch.delenv("STAYHUMAN_LINK_KEY", raising=False)
    monkeypatch.setenv("STAYHUMAN_STATE_DIR", str(state))
    # a database that is not the state folder's own: the key must be given
    monkeypatch.setenv("STAYHUMAN_DATABASE_URL", elsewhere)
    code, out, err = run("push-link", "maria", capsys=capsys)
    assert (code, out) == (2, "") and "STAYHUMAN_SECRET_KEY is not set" in err
    assert not (state / SECRET_KEY_FILE).exists()
    # the development database in the state folder: the key is made there, once
    monkeypatch.setenv("STAYHUMAN_DATABASE_URL", f"sqlite+aiosqlite:///{state / 'stayhuman.db'}")
    code, out, _ = run("push-link", "maria", capsys=capsys)
    key = (state / SECRET_KEY_FILE).read_text().strip()
    token = out.strip().rsplit("/", 1)[1]
    assert code == 0 and read_push_token(LinkSigner.of_secret_key(key), token) == ("maria", 0)
    # and a command on the other database now reads the key `up` (or this) made
    monkeypatch.setenv("STAYHUMAN_DATABASE_URL", elsewhere)
    code, out, _ = run("push-link", "maria", capsys=capsys)
    assert code == 0 and read_push_token(LinkSigner.of_secret_key(key), out.strip().rsplit("/", 1)[1])
    # STAYHUMAN_LINK_KEY signs links alone
    link_key = new_key()
    monkeypatch.setenv("STAYHUMAN_LINK_KEY", link_key)
    code, out, _ = run("push-link", "maria", capsys=capsys)
    token = out.strip().rsplit("/", 1)[1]
    assert read_push_token(LinkSigner(link_key), token) == ("maria", 0)
    assert read_push_token(LinkSigner.of_secret_key(key), token) is None
