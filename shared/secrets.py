"""Secrets at rest: webhook secrets and platform credentials are stored encrypted.

The key is STAYHUMAN_SECRET_KEY (a Fernet key: `stayhuman secret-key` prints a new
one). Without it, a key file in the state folder is created on first use, which
suits a single machine; a cluster sets the variable, the same on every service.
Values stored before encryption was in place are read as they are and encrypted
on the next `apply`.
"""

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

PREFIX = "fernet:"


class SecretKeyError(RuntimeError):
    pass


class SecretBox:
    def __init__(self, key: str) -> None:
        try:
            self._fernet = Fernet(key.encode())
        except (ValueError, TypeError):
            raise SecretKeyError(
                "STAYHUMAN_SECRET_KEY is not a valid key (32 url-safe base64 bytes; `stayhuman secret-key` makes one)"
            ) from None

    def seal(self, plain: str) -> str:
        return PREFIX + self._fernet.encrypt(plain.encode()).decode()

    def open(self, stored: str) -> str:
        if not stored.startswith(PREFIX):
            return stored  # stored before encryption: readable until the next apply seals it
        try:
            return self._fernet.decrypt(stored.removeprefix(PREFIX).encode()).decode()
        except InvalidToken:
            raise SecretKeyError(
                "a stored secret does not open with STAYHUMAN_SECRET_KEY: is it the right key?"
            ) from None

    def token(self, text: str) -> str:
        """A URL-safe token that carries `text`, readable and unforgeable only with this key
        (an acknowledge link names what it acknowledges this way)."""
        return self._fernet.encrypt(text.encode()).decode()

    def read_token(self, token: str, *, max_age: int) -> str | None:
        """What a token of ours carries, or None when it is forged, damaged or older than
        `max_age` seconds."""
        try:
            return self._fernet.decrypt(token.encode(), ttl=max_age).decode()
        except (InvalidToken, ValueError, TypeError):
            return None


def new_key() -> str:
    return Fernet.generate_key().decode()


def load_box(*, key: str | None, state_dir: Path) -> SecretBox:
    """The configured key, or this machine's key file (created on first use)."""
    if key:
        return SecretBox(key)
    path = state_dir / "secret.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(new_key())
    return SecretBox(path.read_text().strip())
