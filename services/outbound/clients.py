"""Which client posts to which platform: one of each, made when first needed, closed at the end."""

from typing import Any

from services.outbound.platforms.base import PlatformClient
from shared.events import Platform


class Clients:
    def __init__(self, *, allow_private_webhooks: bool = False) -> None:
        self.allow_private_webhooks = allow_private_webhooks
        self._made: dict[Platform, Any] = {}

    def for_platform(self, platform: Platform) -> PlatformClient:
        client = self._made.get(platform)
        if client is None:
            client = self._made[platform] = self._make(platform)
        return client

    def _make(self, platform: Platform) -> Any:
        match platform:
            case Platform.facebook | Platform.instagram:
                from services.outbound.platforms.meta import MetaClient

                return MetaClient(platform)
            case Platform.youtube:
                from services.outbound.platforms.youtube import YouTubeClient

                return YouTubeClient()
            case Platform.x:
                from services.outbound.platforms.x import XClient

                return XClient()
            case Platform.mastodon:
                from services.outbound.platforms.mastodon import MastodonClient

                return MastodonClient()
            case Platform.bluesky:
                from services.outbound.platforms.bluesky import BlueskyClient

                return BlueskyClient()
            case Platform.other:
                from services.outbound.platforms.webhook import WebhookClient

                return WebhookClient(allow_private=self.allow_private_webhooks)
        raise ValueError(f"no client posts to {platform}")

    async def close(self) -> None:
        for client in self._made.values():
            close = getattr(client, "aclose", None)
            if close is not None:
                await close()
        self._made.clear()
