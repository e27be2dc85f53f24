"""The settings base that every StayHuman process reads once at start.

Every setting comes from an environment variable prefixed `STAYHUMAN_` (or a
`.env` file in the working directory). A bad value stops the process with a
message that names the variable.
"""

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import BeforeValidator, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.durations import parse_duration


def _duration(value: object) -> object:
    if isinstance(value, str) and not value.strip().lstrip("-").replace(".", "").isdigit():
        return parse_duration(value)
    if isinstance(value, str):
        return timedelta(seconds=float(value))
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STAYHUMAN_", env_file=".env", extra="ignore", frozen=True)

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

    @property
    def nats_servers(self) -> list[str]:
        if not self.nats_url:
            raise SettingsError("STAYHUMAN_NATS_URL is not set")
        return [url.strip() for url in self.nats_url.split(",") if url.strip()]

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
            name = "STAYHUMAN_" + "_".join(str(part) for part in item["loc"]).upper()
            problems.append(f"{name}: {item['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None
