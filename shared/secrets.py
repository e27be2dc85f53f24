"""The installation's keys: one seals secrets at rest, another signs the links people follow.

- STAYHUMAN_SECRET_KEY (a Fernet key: `stayhuman secret-key` prints a new one) encrypts
  webhook secrets, platform credentials and Apprise URLs in the database. Every process
  that reads or writes them (ingest, notify, `apply`) needs the same one.
- The link key signs the links in alerts (acknowledge, push registration). It is derived
  from the secret key under its own label, unless STAYHUMAN_LINK_KEY sets it, so links can
  be rotated without re-sealing what is stored. Whatever the keys, a sealed secret is never
  a valid link and a link never opens as a secret: they are made with different keys and
  say what they are.

Services never make a key: they stop and name the variable. `stayhuman up` makes the
development keys in its state folder (once, safely when several processes race) and
passes them to its children; commands read that folder's key when the variable is unset.
Values stored before encryption was in place are read as they are and encrypted on the
next `apply`.
"""

import base64
import contextlib
import os
import re
import time
import uuid
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "fernet:"
SECRET_KEY_FILE = "secret.key"
VAPID_KEY_FILE = "vapid.pem"

_LINK_LABEL = b"stayhuman/link-signing/v1"
_LINK_MARK = "stayhuman-link:"  # inside every link token: a sealed secret never carries it
MAX_TOKEN_LENGTH = 2048  # longer is not ours: refused before any work


class SecretKeyError(RuntimeError):
    pass


def _fernet(key: str, variable: str) -> Fernet:
    try:
        return Fernet(key.encode())
    except (ValueError, TypeError):
        raise SecretKeyError(
            f"{variable} is not a valid key (32 url-safe base64 bytes; `stayhuman secret-key` makes one)"
        ) from None


class SecretBox:
    """Seals secrets stored in the database (STAYHUMAN_SECRET_KEY)."""

    def __init__(self, key: str) -> None:
        self._key = key
        self._fernet = _fernet(key, "STAYHUMAN_SECRET_KEY")

    @property
    def key(self) -> str:
        return self._key

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


class LinkSigner:
    """Signs what a link names (an alert to acknowledge, a person's push registration), so
    that only this installation makes links it accepts; tokens carry their issue time."""

    def __init__(self, key: str, *, variable: str = "STAYHUMAN_LINK_KEY") -> None:
        _fernet(key, variable)  # the same form as the secret key: refused with advice otherwise
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_LINK_LABEL).derive(
            base64.urlsafe_b64decode(key.encode())
        )
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    @classmethod
    def of_secret_key(cls, secret_key: str) -> "LinkSigner":
        """The default: a key derived from STAYHUMAN_SECRET_KEY under the link label."""
        return cls(secret_key, variable="STAYHUMAN_SECRET_KEY")

    def issue(self, purpose: str, text: str, *, at: int | None = None) -> str:
        """A URL-safe token for `purpose` (`ack`, `push`) carrying `text`, issued now (or `at`,
        in seconds since 1970)."""
        plain = f"{_LINK_MARK}{purpose}:{text}".encode()
        issued = int(time.time()) if at is None else at
        return self._fernet.encrypt_at_time(plain, issued).decode()

    def read(self, token: str, *, purpose: str, max_age: int) -> str | None:
        """What a token of ours for `purpose` carries, or None when it is forged, damaged, for
        something else, or older than `max_age` seconds."""
        if not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            return None
        try:
            text = self._fernet.decrypt(token.encode(), ttl=max_age).decode()
        except (InvalidToken, ValueError, TypeError):
            return None
        head = f"{_LINK_MARK}{purpose}:"
        return text.removeprefix(head) if text.startswith(head) else None


def new_key() -> str:
    return Fernet.generate_key().decode()


def new_vapid_pem() -> str:
    """A new VAPID private key (P-256, PKCS#8 PEM), as STAYHUMAN_VAPID_PRIVATE_KEY takes it."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def read_key_file(path: Path) -> str | None:
    """A key file's content, or None when there is none (or it is empty)."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return text or None


def ensure_key_file(path: Path, make: str) -> str:
    """The key in `path`, created with `make` if there is none yet.

    Safe when several processes start at once: each writes its candidate to a file of its
    own (O_EXCL), then links it into place, which only one can do; the others read the
    winner's key. Nobody ever reads a half-written file.
    """
    found = read_key_file(path)
    if found is not None:
        return found
    path.parent.mkdir(parents=True, exist_ok=True)
    candidate = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    descriptor = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(make.strip() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(candidate, path)  # atomic, and never replaces a key already there
    finally:
        candidate.unlink(missing_ok=True)
    winner = read_key_file(path)
    if winner is None:
        raise SecretKeyError(f"{path} is empty: remove it, or set the key's variable")
    return winner


def load_box(*, key: str | None, state_dir: Path) -> SecretBox:
    """The configured key, or the state folder's key file (created on first use): for local
    development only; services and commands decide through the settings."""
    if key:
        return SecretBox(key)
    return SecretBox(ensure_key_file(state_dir / SECRET_KEY_FILE, new_key()))


_PEM_BODY = re.compile(r"-----BEGIN [A-Z ]+-----|-----END [A-Z ]+-----|\s")


def vapid_key_text(value: str) -> str:
    """A VAPID key setting as py_vapid reads it: PEM, its base64 body on one line (what an env
    file can hold), or the raw 32-byte key in base64url."""
    return _PEM_BODY.sub("", value)
