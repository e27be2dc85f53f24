"""Which client posts to which platform: one of each, made when first needed, closed at the end."""

from typing import Any

import httpx

from services.outbound.platforms.base import TIMEOUT, PlatformClient
from shared.events import Platform


class Clients:
    def __init__(self, *, allow_private_webhooks: bool = False, timeout: httpx.Timeout = TIMEOUT) -> None:
        self.allow_private_webhooks = allow_private_webhooks
        self.timeout = timeout
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

                return MetaClient(platform, timeout=self.timeout)
            case Platform.youtube:
                from services.outbound.platforms.youtube import YouTubeClient

                return YouTubeClient(timeout=self.timeout)
            case Platform.x:
                from services.outbound.platforms.x import XClient

                return XClient(timeout=self.timeout)
            case Platform.mastodon:
                from services.outbound.platforms.mastodon import MastodonClient

                return MastodonClient(timeout=self.timeout)
            case Platform.bluesky:
                from services.outbound.platforms.bluesky import BlueskyClient

                return BlueskyClient(timeout=self.timeout)
            case Platform.other:
                from services.outbound.platforms.webhook import WebhookClient

                return WebhookClient(allow_private=self.allow_private_webhooks, timeout=self.timeout)
        raise ValueError(f"no client posts to {platform}")

    async def close(self) -> None:
        for client in self._made.values():
            close = getattr(client, "aclose", None)
            if close is not None:
                await close()
        self._made.clear()
