import os
from datetime import timedelta

from pydantic import Field, SecretStr

from shared.settings import CommonSettings, Duration


class IngestSettings(CommonSettings):
    ingest_port: int = Field(default=8080, description="HTTP port of ingest (webhooks).")
    ingest_ops_port: int = Field(
        default=9080,
        description="Port of ingest's operations listener (health, readiness, metrics, API docs).",
    )
    ingest_workers: int | None = Field(
        default=None,
        ge=1,
        description="Worker processes that share ingest's ports (unset: one per CPU); 1 runs it in one process.",
    )
    body_read_timeout: Duration = Field(
        default=timedelta(seconds=10), description="Time a client has to send a whole request body."
    )
    max_concurrent_requests: int = Field(
        default=1000,
        ge=1,
        description="Requests verified and stored at once (by each worker); more are answered 503 at once.",
    )
    max_body_bytes: int = Field(default=1_048_576, description="Largest webhook body accepted.")
    max_batch_bytes: int = Field(default=16_777_216, description="Largest /v1/interactions body accepted.")
    publish_timeout: Duration = Field(
        default=timedelta(seconds=5), description="How long ingest waits for JetStream's ack."
    )
    account_cache_ttl: Duration = Field(
        default=timedelta(seconds=10), description="How long ingest trusts a cached account."
    )
    meta_app_secret: SecretStr | None = Field(
        default=None, description="Meta app secret: verifies X-Hub-Signature-256 of /webhooks/meta."
    )
    meta_verify_token: SecretStr | None = Field(
        default=None, description="The verify token entered in the Meta app's webhook settings."
    )
    x_consumer_secret: SecretStr | None = Field(
        default=None, description="X app consumer secret: the CRC and x-twitter-webhooks-signature."
    )
    poll_interval: Duration = Field(
        default=timedelta(seconds=30), description="How often each polled account is asked for news."
    )
    youtube_daily_quota: int = Field(
        default=10_000,
        ge=1,
        description="YouTube Data API units a day, shared by the polled channels and replies.",
    )
    youtube_reply_units: int = Field(
        default=2_500,
        ge=0,
        description="Of the daily YouTube quota, the units kept for replies from the inbox (50 a reply); "
        "the pollers take the rest.",
    )
    mastodon_streaming: bool = Field(
        default=False,
        description="Also listen to Mastodon's streaming API: news arrive at once; polling stays the source of truth.",
    )

    def worker_count(self) -> int:
        """The worker processes to run: as set, else one per CPU this process may use."""
        if self.ingest_workers is not None:
            return self.ingest_workers
        usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
        return max(1, len(usable))
