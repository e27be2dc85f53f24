from datetime import timedelta

from pydantic import Field

from shared.settings import CommonSettings, Duration


class OutboundSettings(CommonSettings):
    outbound_port: int = Field(
        default=8085, description="HTTP port of outbound (health, readiness, metrics; nothing public)."
    )
    outbound_ack_wait: Duration = Field(
        default=timedelta(seconds=60),
        description="Redelivery delay of a reply command not yet answered (a live handler says it is "
        "still working every third of it, so only a dead one's command is delivered again).",
    )
    outbound_max_deliver: int = Field(
        default=8, ge=2, description="Deliveries of a reply command before it is failed and dead-lettered."
    )
    outbound_retry_delay: Duration = Field(
        default=timedelta(seconds=15),
        description="Wait before posting again after a rate limit or a platform that could not be reached.",
    )
    outbound_settle: Duration = Field(
        default=timedelta(seconds=5),
        description="After a post whose answer was lost: wait this long before reading the thread for it.",
    )
    outbound_concurrency: int = Field(default=16, ge=1, le=256, description="Replies posted at once.")
    outbound_private_webhooks: bool = Field(
        default=False,
        description="Let the outbound webhook of generic accounts reach private and loopback addresses "
        "(the operator's own network); off, only public addresses are reached.",
    )
    youtube_daily_quota: int = Field(
        default=10_000,
        ge=0,
        description="YouTube Data API units a day, shared by polling and replies (50 a reply).",
    )
    youtube_reply_units: int = Field(
        default=2_500,
        ge=0,
        description="Of the daily YouTube quota, the units replies may take (50 a reply); the pollers "
        "keep the rest. The inbox shows what is left today.",
    )
