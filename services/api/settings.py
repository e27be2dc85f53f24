from datetime import timedelta
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator

from shared.settings import CommonSettings, Duration


class ApiSettings(CommonSettings):
    api_port: int = Field(
        default=8083, description="The API's public HTTP port: the inbox API, sign-in, /healthz."
    )
    api_ops_port: int = Field(
        default=9083,
        description="Port of the API's operations listener (health, readiness, metrics, OpenAPI).",
    )
    api_public_url: str | None = Field(
        default=None,
        description="Where people reach the API (set-password links); default http://127.0.0.1:<api port>. "
        "Session cookies are Secure unless it is plain http on a loopback address.",
    )
    session_idle: Duration = Field(
        default=timedelta(hours=12), description="A session unused this long ends (sign in again)."
    )
    session_lifetime: Duration = Field(
        default=timedelta(days=14), description="A session ends this long after sign-in, used or not."
    )
    live_recheck: Duration = Field(
        default=timedelta(seconds=30),
        description="How often an open live stream checks its viewer is still signed in with the same "
        "roles; it ends when not (the browser reconnects as who they are now).",
    )
    login_max_failures: int = Field(
        default=5, ge=1, description="Failed sign-ins to one account before it is locked for a while."
    )
    login_lockout: Duration = Field(
        default=timedelta(minutes=15), description="How long too many failed sign-ins lock an account."
    )
    login_max_per_address: int = Field(
        default=20,
        ge=1,
        description="Failed sign-ins from one address within the lockout window before it waits.",
    )
    password_link_lifetime: Duration = Field(
        default=timedelta(hours=24), description="How long a set-password link works (once)."
    )
    api_ack_wait: Duration = Field(
        default=timedelta(seconds=30),
        description="Redelivery delay of an event the timeline did not acknowledge.",
    )
    api_max_deliver: int = Field(
        default=10, ge=2, description="Deliveries before an event goes to the dead letter."
    )
    youtube_daily_quota: int = Field(
        default=10_000, ge=0, description="YouTube Data API units a day, shared by polling and replies."
    )
    youtube_reply_units: int = Field(
        default=2_500,
        ge=0,
        description="Of the daily YouTube quota, the units replies may take (50 a reply), as outbound "
        "counts them: the inbox shows what is left today, and no reply box when a reply would not fit.",
    )
    smtp_host: str | None = Field(default=None, description="SMTP server for set-password links.")
    smtp_port: int = Field(default=587, description="SMTP port.")
    smtp_security: Literal["starttls", "tls", "none"] = Field(
        default="starttls", description="STARTTLS on a plain port, implicit TLS, or none."
    )
    smtp_username: str | None = Field(default=None, description="SMTP user, when the server wants auth.")
    smtp_password: SecretStr | None = Field(default=None, description="SMTP password.")
    smtp_from: str = Field(default="StayHuman <alerts@stayhuman.localhost>", description="From address.")
    smtp_timeout: Duration = Field(default=timedelta(seconds=15), description="Timeout of one SMTP send.")

    @field_validator("api_public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/") if value else value

    def youtube_units_for_replies(self) -> int:
        """The part of the daily YouTube quota replies may take (the pollers keep the rest)."""
        return min(self.youtube_reply_units, self.youtube_daily_quota)

    def public_url(self) -> str:
        return self.api_public_url or f"http://127.0.0.1:{self.api_port}"

    def secure_cookies(self) -> bool:
        """Cookies are Secure, except in local development over plain http on a loopback address."""
        url = urlsplit(self.public_url())
        return not (url.scheme == "http" and url.hostname in ("127.0.0.1", "localhost", "::1"))
