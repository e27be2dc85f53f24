"""What the poller tests share: a publisher that keeps what the pollers hand it, and polled
accounts configured against the fake platforms."""

from collections.abc import Sequence

from nats.aio.client import Client
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.ingest.connectors.model import Rejected
from services.ingest.publisher import InteractionPublisher, RawPayload
from shared.events import InteractionReceived, InteractionRetracted
from shared.secrets import SecretBox
from stayhuman.config import apply_config, parse_config
from tests.helpers import config_yaml


class CountingPublisher(InteractionPublisher):
    """The real publisher, keeping what the pollers hand it: every interaction they publish
    and every item they reject, whatever JetStream's duplicate window would hide."""

    def __init__(self, nc: Client) -> None:
        super().__init__(nc.jetstream(), timeout=5)
        self.published: list[str] = []
        self.rejected: list[Rejected] = []

    async def publish_many(
        self,
        events: Sequence[InteractionReceived | InteractionRetracted],
        *,
        raw: RawPayload | None = None,
        rejected: Sequence[Rejected] = (),
        all_or_nothing: bool = False,
    ) -> list[Rejected]:
        self.published += [event.external_id for event in events]
        self.rejected += rejected
        return await super().publish_many(events, raw=raw, rejected=rejected, all_or_nothing=all_or_nothing)


async def configure_polled_accounts(
    sessions: async_sessionmaker[AsyncSession],
    box: SecretBox,
    accounts: Sequence[tuple[str, str, str, str, str]],
) -> None:
    """Tenant `bluebird` with these (id, platform, platform id, API URL, token) accounts."""
    text = config_yaml(
        tenant="bluebird", account="bluebird-fb", secret="feeds-secret-0123456789", people=["maria"]
    )
    for account_id, platform, external_id, url, token in accounts:
        text += "\n".join(
            [f"      - id: {account_id}", f"        platform: {platform}", "        handle: Bluebird",
             "        team: care", f"        external_id: '{external_id}'", f"        api_base_url: {url}",
             f"        access_token: {token}"]
        ) + "\n"  # fmt: skip
    await apply_config(sessions, parse_config(text, source="t.yaml"), source="t.yaml", box=box)
