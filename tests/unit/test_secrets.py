import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.notify.push import application_server_key, load_vapid
from shared.secrets import (
    PREFIX,
    SECRET_KEY_FILE,
    VAPID_KEY_FILE,
    LinkSigner,
    SecretBox,
    SecretKeyError,
    load_box,
    new_key,
    new_vapid_pem,
)
from shared.settings import CommonSettings, SettingsError


@pytest.fixture(autouse=True)
def _no_keys_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SECRET_KEY", "LINK_KEY", "VAPID_PRIVATE_KEY", "DATABASE_URL", "STATE_DIR"):
        monkeypatch.delenv(f"STAYHUMAN_{name}", raising=False)


def test_sealed_secrets_open_only_with_their_key() -> None:
    box = SecretBox(new_key())
    sealed = box.seal("webhook-secret-123")
    assert sealed.startswith(PREFIX) and "webhook-secret-123" not in sealed
    assert box.open(sealed) == "webhook-secret-123"
    assert box.seal("webhook-secret-123") != sealed  # a fresh nonce every time
    with pytest.raises(SecretKeyError, match="right key"):
        SecretBox(new_key()).open(sealed)


def test_values_stored_before_encryption_are_read_as_they_are() -> None:
    assert SecretBox(new_key()).open("legacy-plain-secret") == "legacy-plain-secret"


def test_a_bad_key_is_refused_with_advice() -> None:
    with pytest.raises(SecretKeyError, match="stayhuman secret-key"):
        SecretBox("not-a-key")


def test_without_a_configured_key_the_machine_keeps_one(tmp_path: Path) -> None:
    first = load_box(key=None, state_dir=tmp_path)
    sealed = first.seal("x")
    assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600
    assert load_box(key=None, state_dir=tmp_path).open(sealed) == "x"


def test_links_are_signed_with_their_own_key_never_the_sealing_one() -> None:
    secret = new_key()
    box, links = SecretBox(secret), LinkSigner.of_secret_key(secret)
    token = links.issue("ack", "c1:2:maria")
    assert links.read(token, purpose="ack", max_age=60) == "c1:2:maria"
    # a sealed secret is never a link, whatever it says
    sealed = box.seal("stayhuman-link:ack:c1:2:maria")
    for candidate in (sealed, sealed.removeprefix(PREFIX)):
        assert links.read(candidate, purpose="ack", max_age=60) is None
    # and a link never opens as a stored secret
    with pytest.raises(SecretKeyError):
        box.open(PREFIX + token)
    # a link for one purpose is not a link for another
    assert links.read(token, purpose="push", max_age=60) is None
    # another installation's links are not ours, nor links older than their age
    assert LinkSigner.of_secret_key(new_key()).read(token, purpose="ack", max_age=60) is None
    old = links.issue("ack", "c1:2:maria", at=int(time.time()) - 120)
    assert links.read(old, purpose="ack", max_age=60) is None
    assert links.read("x" * 5000, purpose="ack", max_age=60) is None
    assert links.read("é", purpose="ack", max_age=60) is None


def test_the_link_key_setting_rotates_links_without_touching_stored_secrets(tmp_path: Path) -> None:
    secret = new_key()
    sealed = SecretBox(secret).seal("webhook-secret")
    derived = settings(tmp_path, STAYHUMAN_SECRET_KEY=secret)
    rotated = settings(tmp_path, STAYHUMAN_SECRET_KEY=secret, STAYHUMAN_LINK_KEY=new_key())
    token = derived.link_signer(derived.service_secret_box()).issue("push", "0:maria")
    assert rotated.link_signer(rotated.service_secret_box()).read(token, purpose="push", max_age=60) is None
    assert rotated.service_secret_box().open(sealed) == "webhook-secret"  # secrets stay readable
    # the same setting as the secret key still gives a key of its own
    same = settings(tmp_path, STAYHUMAN_SECRET_KEY=secret, STAYHUMAN_LINK_KEY=secret)
    link = same.link_signer(same.service_secret_box()).issue("ack", "x")
    with pytest.raises(SecretKeyError):
        SecretBox(secret).open(PREFIX + link)
    with pytest.raises(SecretKeyError, match="STAYHUMAN_LINK_KEY"):
        settings(tmp_path, STAYHUMAN_SECRET_KEY=secret, STAYHUMAN_LINK_KEY="short").link_signer(
            SecretBox(secret)
        )


def settings(tmp_path: Path, **env: str) -> CommonSettings:
    return CommonSettings(
        _env_file=None,
        state_dir=tmp_path / "state",
        **{k.removeprefix("STAYHUMAN_").lower(): v for k, v in env.items()},
    )  # type: ignore[arg-type]


def test_a_service_never_makes_a_key(tmp_path: Path) -> None:
    bare = settings(tmp_path)
    with pytest.raises(SettingsError, match="STAYHUMAN_SECRET_KEY is not set"):
        bare.service_secret_box()
    assert not (tmp_path / "state").exists()  # nothing written (a read-only root file system)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / SECRET_KEY_FILE).write_text(new_key())  # not even a file made by `up`
    with pytest.raises(SettingsError, match="STAYHUMAN_SECRET_KEY"):
        bare.service_secret_box()


def test_commands_use_the_variable_else_the_state_folders_key_made_only_for_development(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    # a PostgreSQL installation, or a SQLite file elsewhere: the variable, or a clear stop
    for url in ("postgresql://u:p@db.invalid/stayhuman", f"sqlite:///{tmp_path / 'elsewhere.db'}"):
        with pytest.raises(SettingsError, match="STAYHUMAN_SECRET_KEY is not set"):
            settings(tmp_path, STAYHUMAN_DATABASE_URL=url).secret_box()
        assert not (state / SECRET_KEY_FILE).exists()
    key = new_key()
    assert settings(tmp_path, STAYHUMAN_DATABASE_URL=url, STAYHUMAN_SECRET_KEY=key).secret_box().key == key
    # the default database in the state folder is a development installation: made there once
    made = settings(tmp_path).secret_box().key
    assert (state / SECRET_KEY_FILE).read_text().strip() == made
    assert (state / SECRET_KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert settings(tmp_path).secret_box().key == made
    # once `up` made it, a command on any database of this machine reads it
    assert settings(tmp_path, STAYHUMAN_DATABASE_URL=url).secret_box().key == made


def test_up_makes_the_development_keys_once_and_passes_only_what_is_unset(tmp_path: Path) -> None:
    keys = settings(tmp_path).development_keys()
    assert set(keys) == {"STAYHUMAN_SECRET_KEY", "STAYHUMAN_VAPID_PRIVATE_KEY"}
    assert settings(tmp_path).development_keys() == keys  # the same on every start
    assert (tmp_path / "state" / VAPID_KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert load_vapid(keys["STAYHUMAN_VAPID_PRIVATE_KEY"]) is not None
    mine = new_key()
    assert settings(tmp_path, STAYHUMAN_SECRET_KEY=mine).development_keys().keys() == {
        "STAYHUMAN_VAPID_PRIVATE_KEY"
    }


def test_the_vapid_key_is_read_in_each_form_an_operator_can_pass() -> None:
    pem = new_vapid_pem()
    public = application_server_key(load_vapid(pem))
    body = "".join(line for line in pem.splitlines() if "-----" not in line)  # one line, for env files
    assert application_server_key(load_vapid(body)) == public
    with pytest.raises(SettingsError, match="STAYHUMAN_VAPID_PRIVATE_KEY"):
        load_vapid("not a key")


RACE = """
import sys, time
from pathlib import Path
from shared.secrets import ensure_key_file, new_key
start = float(sys.argv[2])
while time.time() < start:
    pass
print(ensure_key_file(Path(sys.argv[1]), new_key()))
"""


def test_processes_starting_together_all_get_the_one_key(tmp_path: Path) -> None:
    for attempt in range(3):
        path = tmp_path / f"state-{attempt}" / SECRET_KEY_FILE
        start = time.time() + 1.5  # all of them import first, then race on the file
        racers = [
            subprocess.Popen(
                [sys.executable, "-c", RACE, str(path), str(start)], stdout=subprocess.PIPE, text=True
            )
            for _ in range(8)
        ]
        keys = {racer.communicate(timeout=60)[0].strip() for racer in racers}
        assert all(racer.returncode == 0 for racer in racers)
        assert keys == {path.read_text().strip()}, keys
        assert sorted(p.name for p in path.parent.iterdir()) == [SECRET_KEY_FILE]  # no leftovers
