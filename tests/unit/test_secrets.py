from pathlib import Path

import pytest

from shared.secrets import PREFIX, SecretBox, SecretKeyError, load_box, new_key


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
