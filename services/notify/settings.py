from datetime import timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator

from shared.settings import CommonSettings, Duration


class NotifySettings(CommonSettings):
    notify_port: int = Field(
        default=8082,
        description="Notify's public HTTP port: acknowledge and push pages, the dev mailbox, /healthz.",
    )
    notify_ops_port: int = Field(
        default=9082, description="Port of notify's operations listener (health, readiness, metrics)."
    )
    smtp_host: str | None = Field(default=None, description="SMTP server for alerts (required).")
    smtp_port: int = Field(default=587, description="SMTP port.")
    smtp_security: Literal["starttls", "tls", "none"] = Field(
        default="starttls", description="STARTTLS on a plain port, implicit TLS, or none."
    )
    smtp_username: str | None = Field(default=None, description="SMTP user, when the server wants auth.")
    smtp_password: SecretStr | None = Field(default=None, description="SMTP password.")
    smtp_from: str = Field(default="StayHuman <alerts@stayhuman.localhost>", description="From address.")
    smtp_timeout: Duration = Field(default=timedelta(seconds=15), description="Timeout of one SMTP send.")
    alert_retry_initial: Duration = Field(
        default=timedelta(seconds=5), description="First delay before retrying a failed alert."
    )
    alert_retry_max: Duration = Field(
        default=timedelta(minutes=5), description="Longest delay between alert retries."
    )
    alert_max_attempts: int = Field(
        default=100, ge=1, description="Attempts before an alert goes to the dead letter."
    )
    notify_ack_wait: Duration = Field(
        default=timedelta(seconds=30), description="Redelivery delay of an unacknowledged message."
    )
    notify_max_deliver: int = Field(default=10, ge=2, description="Deliveries before the dead letter.")
    operator_email: str | None = Field(
        default=None, description="Who hears about failing or silent connectors."
    )
    public_url: str | None = Field(
        default=None,
        description="Where people reach notify's pages (acknowledge links); default http://127.0.0.1:<notify port>.",
    )
    alert_grouping: bool = Field(default=True, description="Group a person's alerts during a burst.")
    alert_group_after: int = Field(
        default=3,
        ge=1,
        description="Alerts one person gets on one channel within the window before the rest wait.",
    )
    alert_group_window: Duration = Field(
        default=timedelta(seconds=60),
        description="During a burst, what comes for one person within this window goes out as one message.",
    )
    warning_digest: bool = Field(
        default=False, description="Warnings always wait for the window and go out as a digest."
    )
    push_trusted_hosts: str = Field(
        default="",
        description="Comma-separated push service hosts exempt from the public-address rule "
        "(a private push relay); every other push endpoint must be https on a public address.",
    )
    vapid_contact: str | None = Field(
        default=None, description="mailto: or https: contact for push services; default: the From address."
    )
    templates_dir: Path | None = Field(
        default=None,
        description="Alert templates that replace the built-in ones (<kind>.subject|txt|html, per tenant in <tenant>/).",
    )
    dev_mailbox_dir: Path | None = Field(
        default=None, description="Maildir shown at /mailbox (set by `up` when it runs the dev SMTP sink)."
    )

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @property
    def trusted_push_hosts(self) -> frozenset[str]:
        return frozenset(
            host.strip().lower().strip("[]") for host in self.push_trusted_hosts.split(",") if host.strip()
        )
