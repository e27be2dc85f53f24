from datetime import timedelta

from pydantic import Field

from shared.settings import CommonSettings, Duration


class RouterSettings(CommonSettings):
    router_port: int = Field(default=8081, description="HTTP port of the router (health, metrics).")
    router_batch_size: int = Field(default=500, ge=1, le=5000, description="Messages per batch.")
    router_ack_wait: Duration = Field(
        default=timedelta(seconds=30), description="Redelivery delay of an unacknowledged message."
    )
    router_concurrency: int = Field(
        default=4,
        ge=1,
        le=32,
        description="Units of work a router runs at once on PostgreSQL (lanes side by side; "
        "SQLite takes one at a time).",
    )
    router_max_deliver: int = Field(
        default=5, ge=2, description="Deliveries before a message goes to the dead letter."
    )
    backfill_cutoff: Duration = Field(
        default=timedelta(hours=24),
        description="Interactions older than this are recorded and assigned but never alert.",
    )
    outbox_relay_interval: Duration = Field(
        default=timedelta(seconds=2), description="How often committed but unpublished events are retried."
    )
