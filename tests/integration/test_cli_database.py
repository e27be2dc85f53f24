"""Every command that needs the database, on a fresh state folder, an unmigrated database and an
unreachable one: it migrates (apply, on the state folder's own SQLite file) or says what to run,
never with a traceback, and a refusal leaves nothing behind."""

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text

from shared.db.migrate import current_revision, head_revision, upgrade
from shared.db.session import create_engine
from shared.secrets import new_key
from stayhuman.cli import main
from stayhuman.natsserver import free_port
from tests.helpers import config_yaml

READERS = [
    ["conversations"],
    ["conversations", "--json"],
    ["accounts"],
    ["accounts", "--json"],
    ["status", "maria", "away"],
    ["claim", "0123456789ab", "--person", "maria"],
    ["reassign", "0123456789ab", "--team", "care"],
    ["pause", "0123456789ab"],
    ["resume", "0123456789ab"],
    ["resolve", "0123456789ab"],
    ["push-link", "maria"],
]
SERVICES = [
    ["ingest"],
    ["router"],
    ["notify"],
    ["outbound"],
]  # they refuse a missing or unmigrated database too
CONFIG = config_yaml(tenant="acme", account="acme-fb", secret="acme-secret-0123456789", people=["maria"])


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A state folder that does not exist yet, with the settings a newcomer has (no database URL)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STAYHUMAN_DATABASE_URL", raising=False)
    monkeypatch.delenv("STAYHUMAN_SECRET_KEY", raising=False)
    monkeypatch.setenv("STAYHUMAN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("STAYHUMAN_NATS_URL", "nats://127.0.0.1:1")
    return tmp_path / "state"


@pytest.mark.parametrize("argv", READERS + SERVICES, ids=" ".join)
def test_reading_a_fresh_state_folder_says_what_to_run_and_creates_nothing(
    state: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith(f"stayhuman: error: no database at {state / 'stayhuman.db'}")
    assert "stayhuman migrate" in err and "Traceback" not in err
    assert not state.exists()


def test_apply_on_a_fresh_state_folder_migrates_it(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = state.parent / "acme.yaml"
    config.write_text(CONFIG)
    code, out, err = run(capsys, "apply", "-f", str(config))
    assert (code, err) == (0, "")
    assert out.startswith(f"created the database {state / 'stayhuman.db'}\napplied {config}: created ")
    code, out, _ = run(capsys, "accounts")
    assert code == 0 and "acme-fb" in out
    code, out, _ = run(capsys, "conversations")
    assert (code, out) == (0, "no conversations\n")
    code, out, _ = run(capsys, "apply", "-f", str(config))
    assert (code, out) == (0, f"applied {config}: created nothing; updated nothing\n")


def test_a_refused_file_leaves_a_fresh_state_folder_as_it_was(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = state.parent / "acme.yaml"
    config.write_text(CONFIG.replace("members: [maria]", "members: [maria, ghost]"))
    code, out, err = run(capsys, "apply", "-f", str(config))
    assert code == 2 and out == ""
    assert "no person 'ghost'" in err and "Traceback" not in err
    assert not state.exists()


async def test_an_unmigrated_database_is_named_with_what_to_run(
    empty_database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A database named by STAYHUMAN_DATABASE_URL is never migrated behind the operator's back."""
    monkeypatch.setenv("STAYHUMAN_DATABASE_URL", empty_database_url)
    monkeypatch.setenv("STAYHUMAN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("STAYHUMAN_NATS_URL", "nats://127.0.0.1:1")
    monkeypatch.delenv("STAYHUMAN_SECRET_KEY", raising=False)
    config = tmp_path / "acme.yaml"
    config.write_text(CONFIG)
    sqlite = empty_database_url.startswith("sqlite")
    for argv in [*READERS, *SERVICES, ["apply", "-f", str(config)]]:
        code, out, err = await asyncio.to_thread(run, capsys, *argv)
        assert code == 2 and out == "", argv
        assert "stayhuman migrate" in err and "Traceback" not in err, err
        if not sqlite:
            assert "has no StayHuman tables yet" in err
    assert not (tmp_path / "state").exists()  # no key file either
    if sqlite:
        assert not Path(empty_database_url.rpartition("///")[2]).exists()
    else:
        assert await current_revision(empty_database_url) is None
    await asyncio.to_thread(upgrade, empty_database_url, "0001")
    code, _, err = await asyncio.to_thread(run, capsys, "conversations")
    assert code == 2
    assert f"is at schema revision 0001, this version needs {head_revision()}: run `stayhuman migrate`" in err
    code, out, _ = await asyncio.to_thread(run, capsys, "migrate")
    assert (code, out) == (0, f"database schema at revision {head_revision()}\n")
    monkeypatch.setenv("STAYHUMAN_SECRET_KEY", new_key())  # an installation's database: its key is set
    code, out, _ = await asyncio.to_thread(run, capsys, "apply", "-f", str(config))
    assert code == 0 and out.startswith(f"applied {config}: created ")


@pytest.mark.parametrize("argv", [*READERS, ["migrate"], ["apply", "-f", "acme.yaml"], ["up"]], ids=" ".join)
def test_an_unreachable_database_fails_in_a_line(
    state: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    (state.parent / "acme.yaml").write_text(CONFIG)
    url = f"postgresql://stayhuman:secret-password@127.0.0.1:{free_port()}/stayhuman"
    monkeypatch.setenv("STAYHUMAN_DATABASE_URL", url)
    code, out, err = run(capsys, *argv)
    assert code == 1 and out == ""
    lines = err.splitlines()
    assert lines[0].startswith(
        "stayhuman: error: cannot use the database at postgresql://stayhuman:***@127.0.0.1"
    )
    assert "Connect call failed" in lines[0] and len(lines) == 1
    assert "secret-password" not in err
    assert not state.exists()


async def test_a_schema_newer_than_this_version_is_used(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """During an upgrade the migration runs first; migrations only add, so the running version
    (and its CLI) keeps working on the newer schema."""
    monkeypatch.setenv("STAYHUMAN_DATABASE_URL", database_url)
    monkeypatch.setenv("STAYHUMAN_STATE_DIR", str(tmp_path / "state"))
    engine = create_engine(database_url)
    async with engine.begin() as connection:
        await connection.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    await engine.dispose()
    code, out, err = await asyncio.to_thread(run, capsys, "conversations")
    assert (code, out, err) == (0, "no conversations\n", "")
