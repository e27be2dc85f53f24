"""The NATS server of `stayhuman up`: users like the cluster's, and where commands find it.

`up` starts the pinned nats-server with the same permissions file as the cluster form
(one user per service, each held to its subjects, and `operator` for the command line),
with passwords made once for the state folder and kept there readable by its owner only.
While it runs, `up` writes where the server is and the operator's password into the state
folder, so every `stayhuman` command run with that state folder finds it without
STAYHUMAN_NATS_URL.
"""

import contextlib
import json
import os
import secrets
import uuid
from pathlib import Path

from shared.settings import CommonSettings, SettingsError

SERVICE_USERS = ("ingest", "router", "notify", "api", "outbound")
OPERATOR = "operator"
PERMISSIONS = Path(__file__).with_name("nats-permissions.conf")


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, atomically (a reader never sees half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


def _password() -> str:
    # The server's configuration reads `$NAME` as a value: one beginning with a digit or a `-`
    # is taken for a number and refused. Letters first, then hex.
    return "sh" + secrets.token_hex(24)


def _usable(password: object) -> bool:
    return isinstance(password, str) and password[:1].isalpha() and password.isalnum()


def passwords(state_dir: Path) -> dict[str, str]:
    """Each user's password for the embedded server, made on the state folder's first `up`."""
    path = state_dir / "nats" / "users.json"
    if path.exists():
        known = json.loads(path.read_text())
        if set(known) == {*SERVICE_USERS, OPERATOR} and all(_usable(v) for v in known.values()):
            return {str(k): str(v) for k, v in known.items()}
    made = {user: _password() for user in (*SERVICE_USERS, OPERATOR)}
    _write_private(path, json.dumps(made))
    return made


def server_config(state_dir: Path) -> Path:
    """The embedded server's configuration: the cluster's permissions file, nothing else."""
    folder = state_dir / "nats"
    _write_private(folder / "permissions.conf", PERMISSIONS.read_text())
    _write_private(folder / "nats.conf", "include permissions.conf\n")
    return folder / "nats.conf"


def server_environment(users: dict[str, str]) -> dict[str, str]:
    """The variables the permissions file reads the passwords from."""
    return {f"NATS_{user.upper()}_PASSWORD": password for user, password in users.items()}


def _where(state_dir: Path) -> Path:
    return state_dir / "nats" / "running.json"


def announce(state_dir: Path, url: str, users: dict[str, str]) -> None:
    """Tell commands run with this state folder where the running server is."""
    _write_private(_where(state_dir), json.dumps({"url": url, "user": OPERATOR, "password": users[OPERATOR]}))


def withdraw(state_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        _where(state_dir).unlink()


def with_local_nats(settings: CommonSettings) -> CommonSettings:
    """`settings`, pointed at the state folder's running `up` when STAYHUMAN_NATS_URL is unset."""
    if settings.nats_url:
        return settings
    try:
        found = json.loads(_where(settings.state_dir).read_text())
    except (FileNotFoundError, ValueError):
        raise SettingsError(
            f"STAYHUMAN_NATS_URL is not set, and no `stayhuman up` is running with the state folder "
            f"{settings.state_dir} (STAYHUMAN_STATE_DIR)"
        ) from None
    from pydantic import SecretStr

    return settings.model_copy(
        update={
            "nats_url": found["url"],
            "nats_user": found["user"],
            "nats_password": SecretStr(found["password"]),
        }
    )
