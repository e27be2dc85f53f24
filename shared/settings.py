"""The settings base that every StayHuman process reads once at start.

Every setting comes from an environment variable prefixed `STAYHUMAN_` (or a
`.env` file in the working directory). A bad value stops the process with a
message that names the variable.
"""

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, TypeVar

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.durations import parse_duration

if TYPE_CHECKING:
    from shared.secrets import LinkSigner, SecretBox


def _duration(value: object) -> object:
    if isinstance(value, str) and not value.strip().lstrip("-").replace(".", "").isdigit():
        return parse_duration(value)
    if isinstance(value, str):
        return timedelta(seconds=float(value))
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="STAYHUMAN_", env_file=".env", extra="ignore", frozen=True, env_ignore_empty=True
    )

    nats_url: str | None = Field(
        default=None,
        description="NATS server URL(s), comma separated. Unset: `up` starts an embedded server.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL (sqlite+aiosqlite:///… or postgresql+asyncpg://…). "
        "Unset: a SQLite file in the state folder.",
    )
    state_dir: Path = Field(default=Path(".stayhuman"), description="Local state folder.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool = Field(default=True, description="JSON log lines (false: plain text).")
    host: str = Field(default="127.0.0.1", description="Address the HTTP servers listen on.")
    forwarded_allow_ips: str = Field(
        default="127.0.0.1",
        description="Comma-separated addresses (or *) of reverse proxies whose X-Forwarded-For and "
        "X-Forwarded-Proto are trusted: the client's address for sign-in limits and logs.",
    )
    nats_user: str | None = Field(default=None, description="NATS user of this service.")
    nats_password: SecretStr | None = Field(default=None, description="NATS password of this service.")
    nats_creds: Path | None = Field(default=None, description="NATS credentials file (JWT and nkey).")
    nats_nkey_seed: Path | None = Field(default=None, description="NATS nkey seed file.")
    nats_tls_ca: Path | None = Field(default=None, description="CA bundle that signed the NATS servers.")
    nats_tls_cert: Path | None = Field(default=None, description="Client certificate for NATS (mutual TLS).")
    nats_tls_key: Path | None = Field(default=None, description="Key of the NATS client certificate.")
    nats_replicas: int = Field(default=1, ge=1, le=5, description="Replicas of each JetStream stream.")
    secret_key: SecretStr | None = Field(
        default=None,
        description="Fernet key that encrypts stored secrets; required by ingest and notify "
        "(commands: else the state folder's key file that `up` makes).",
    )
    link_key: SecretStr | None = Field(
        default=None,
        description="Key that signs acknowledge and push links (unset: derived from the secret key).",
    )
    vapid_private_key: SecretStr | None = Field(
        default=None,
        description="Web Push VAPID private key (PEM, its base64 body, or the raw key); required by notify.",
    )
    archive_retention: Duration = Field(
        default=timedelta(days=30), description="How long raw payloads are kept in the archive stream."
    )
    nats_connect_timeout: Duration = Field(
        default=timedelta(seconds=30), description="How long a service tries to reach NATS at start."
    )
    otel_endpoint: str | None = Field(
        default=None, description="OTLP/HTTP traces endpoint, e.g. http://collector:4318/v1/traces."
    )

    @model_validator(mode="after")
    def _coherent_nats_security(self) -> "CommonSettings":
        problems = []
        if (self.nats_user is None) != (self.nats_password is None):
            problems.append("STAYHUMAN_NATS_USER and STAYHUMAN_NATS_PASSWORD go together")
        methods = [m for m in (self.nats_user, self.nats_creds, self.nats_nkey_seed) if m is not None]
        if len(methods) > 1:
            problems.append(
                "choose one of STAYHUMAN_NATS_USER, STAYHUMAN_NATS_CREDS and STAYHUMAN_NATS_NKEY_SEED"
            )
        if (self.nats_tls_cert is None) != (self.nats_tls_key is None):
            problems.append("STAYHUMAN_NATS_TLS_CERT and STAYHUMAN_NATS_TLS_KEY go together")
        for name in ("nats_creds", "nats_nkey_seed", "nats_tls_ca", "nats_tls_cert", "nats_tls_key"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                problems.append(f"STAYHUMAN_{name.upper()}: no file at {path}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def nats_servers(self) -> list[str]:
        if not self.nats_url:
            raise SettingsError("STAYHUMAN_NATS_URL is not set")
        return [url.strip() for url in self.nats_url.split(",") if url.strip()]

    def secret_box(self) -> "SecretBox":
        """The secret key for a command (`apply`, `push-link`): the variable, else the state
        folder's key file that `up` made. The file is made here only for local development
        (a SQLite database in the state folder); otherwise the variable is required."""
        from shared.secrets import SECRET_KEY_FILE, SecretBox, ensure_key_file, new_key, read_key_file

        if self.secret_key:
            return SecretBox(self.secret_key.get_secret_value())
        path = self.state_dir / SECRET_KEY_FILE
        found = read_key_file(path)
        if found is None and self.uses_development_database:
            found = ensure_key_file(path, new_key())
        if found is None:
            raise SettingsError(
                "STAYHUMAN_SECRET_KEY is not set: set it to the installation's key, the same as on "
                "ingest and notify (`stayhuman secret-key` makes a new one)"
            )
        return SecretBox(found)

    def service_secret_box(self) -> "SecretBox":
        """The secret key for a service: only the variable. A service never makes a key, or
        replicas would each seal and sign with their own."""
        from shared.secrets import SecretBox

        if not self.secret_key:
            raise SettingsError(
                "STAYHUMAN_SECRET_KEY is not set: every service that reads stored secrets or links "
                "needs the installation's key, the same everywhere (`stayhuman secret-key` makes one; "
                "`stayhuman up` passes its development key)"
            )
        return SecretBox(self.secret_key.get_secret_value())

    def link_signer(self, box: "SecretBox") -> "LinkSigner":
        """The key of links: STAYHUMAN_LINK_KEY, else derived from the secret key in `box`."""
        from shared.secrets import LinkSigner

        if self.link_key:
            return LinkSigner(self.link_key.get_secret_value())
        return LinkSigner.of_secret_key(box.key)

    def development_keys(self) -> dict[str, str]:
        """The keys `stayhuman up` passes its children, as variables: those not set, from the
        state folder's key files (made there once, safely if several start at once)."""
        from shared.secrets import SECRET_KEY_FILE, VAPID_KEY_FILE, ensure_key_file, new_key, new_vapid_pem

        keys = {}
        if not self.secret_key:
            keys["STAYHUMAN_SECRET_KEY"] = ensure_key_file(self.state_dir / SECRET_KEY_FILE, new_key())
        if not self.vapid_private_key:
            keys["STAYHUMAN_VAPID_PRIVATE_KEY"] = ensure_key_file(
                self.state_dir / VAPID_KEY_FILE, new_vapid_pem()
            )
        return keys

    @property
    def uses_development_database(self) -> bool:
        """A SQLite database inside the state folder: one machine's development installation."""
        from shared.db.session import sqlite_path

        path = sqlite_path(self.sqlalchemy_url)
        if path is None:
            return False
        return path.resolve().is_relative_to(self.state_dir.resolve())

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.state_dir / 'stayhuman.db').resolve()}"


class SettingsError(RuntimeError):
    """A setting is missing or invalid; the message names the variable."""


S = TypeVar("S", bound=CommonSettings)


def load_settings(cls: type[S]) -> S:
    """Read settings once, turning a validation error into one readable message."""
    try:
        return cls()
    except ValidationError as error:
        problems = []
        for item in error.errors():
            if item["loc"]:
                name = "STAYHUMAN_" + "_".join(str(part) for part in item["loc"]).upper()
                problems.append(f"{name}: {item['msg']}")
            else:  # a rule across settings: its message names them
                problems.append(str(item["msg"]).removeprefix("Value error, "))
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None
