"""Leases: one poller per account across ingest replicas.

Each polled account has a key in the `SH_POLL_LEASES` key-value bucket, holding the
name of the replica that polls it. The bucket's entries expire `ttl` seconds after
their last write: the holder renews its leases every `ttl / 3` seconds (a compare and
swap on the revision it wrote), the other replicas try to create the key as often, so
a replica that dies is replaced within `ttl + ttl / 3` seconds and one that stops
cleanly (deleting its keys) within `ttl / 3`. A holder that has not renewed for most
of `ttl` stops publishing on its own before anyone else can take the account over.
"""

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, StorageType, StreamConfig
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from shared.ids import is_slug
from shared.jetstream import TRANSIENT, ensure_streams

log = logging.getLogger(__name__)

BUCKET = "SH_POLL_LEASES"
# A lease is trusted locally for this share of its time to live, measured from before
# the write that took or renewed it: the server counts from when it stored the write.
TRUST = 0.8


def bucket_config(*, ttl: float, replicas: int) -> StreamConfig:
    """The stream behind the bucket, as nats-py's create_key_value makes it, so that it is
    declared (created, or updated to this) like every other stream."""
    return StreamConfig(
        name=f"KV_{BUCKET}",
        description="Which ingest replica polls each polled account (entries expire unless renewed)",
        subjects=[f"$KV.{BUCKET}.>"],
        allow_direct=True,
        allow_rollup_hdrs=True,
        deny_delete=True,
        discard=DiscardPolicy.NEW,
        duplicate_window=min(ttl, 120.0),
        max_age=ttl,
        max_msgs=-1,
        max_consumers=-1,
        max_msgs_per_subject=1,
        num_replicas=replicas,
        storage=StorageType.FILE,
    )


def replica_name() -> str:
    """Who holds a lease, for people reading the bucket: host, process and a random part
    (a restarted process is a new holder)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def lease_key(account_id: str) -> str:
    return account_id if is_slug(account_id) else f"x{uuid.uuid5(uuid.NAMESPACE_URL, account_id).hex}"


@dataclass
class Leases:
    js: JetStreamContext
    ttl: float = 15.0
    replicas: int = 1
    holder: str = field(default_factory=replica_name)
    concurrency: int = 64

    def __post_init__(self) -> None:
        self._kv: KeyValue | None = None
        self._held: dict[str, tuple[int, float]] = {}  # account -> (revision, trusted until)
        self._unsure: set[str] = set()  # a take whose answer was lost: it may have been ours

    @property
    def every(self) -> float:
        """How often leases are renewed, and free ones looked for."""
        return self.ttl / 3

    async def declare(self) -> None:
        """Create the bucket, or update it to this configuration (idempotent, any start order)."""
        await ensure_streams(self.js, [bucket_config(ttl=self.ttl, replicas=self.replicas)])
        self._kv = await self.js.key_value(BUCKET)

    def holds(self, account_id: str) -> bool:
        """Whether this replica may poll and publish for the account now."""
        held = self._held.get(account_id)
        return held is not None and time.monotonic() < held[1]

    def held(self) -> set[str]:
        return {account for account in self._held if self.holds(account)}

    async def keep(self, accounts: Iterable[str]) -> set[str]:
        """Renew the leases held among `accounts`, take those that are free; the accounts
        this replica holds now."""
        limit = asyncio.Semaphore(self.concurrency)

        async def one(account_id: str) -> None:
            async with limit:
                await self._hold(account_id)

        await asyncio.gather(*(one(account) for account in accounts))
        return self.held()

    async def _hold(self, account_id: str) -> None:
        assert self._kv is not None, "declare() first"
        key, value = lease_key(account_id), self.holder.encode()
        started = time.monotonic()
        held = self._held.get(account_id)
        try:
            if held is not None:
                revision = await self._kv.update(key, value, last=held[0])
            elif account_id in self._unsure and (revision := await self._ours(key)):
                revision = await self._kv.update(key, value, last=revision)
            else:
                revision = await self._kv.create(key, value)
        except KeyWrongLastSequenceError:
            self._unsure.discard(account_id)
            if held is not None:
                log.warning("lease lost to another replica", extra={"account_id": account_id})
            self._held.pop(account_id, None)
            return
        except TRANSIENT as error:
            # JetStream did not answer: keep what is held until it runs out; the write may
            # have been stored, so look before taking again.
            self._unsure.add(account_id)
            log.info("lease not renewed", extra={"account_id": account_id, "error": repr(error)})
            return
        except Exception as error:  # e.g. the key expired between a failed take and its check
            log.warning("lease not taken or renewed", extra={"account_id": account_id, "error": repr(error)})
            return
        self._unsure.discard(account_id)
        self._held[account_id] = (revision, started + self.ttl * TRUST)

    async def _ours(self, key: str) -> int:
        """The revision of the key if it names this replica, else 0."""
        assert self._kv is not None
        try:
            entry = await self._kv.get(key)
        except Exception:
            return 0
        return entry.revision or 0 if entry.value == self.holder.encode() else 0

    async def release(self, account_ids: Iterable[str]) -> None:
        """Give leases up (their pollers have stopped), so another replica takes them at once."""
        assert self._kv is not None

        async def one(account_id: str) -> None:
            revision, _ = self._held.pop(account_id, (0, 0.0))
            if revision:
                try:
                    await self._kv.delete(lease_key(account_id), last=revision)  # type: ignore[union-attr]
                except Exception as error:  # it expires on its own
                    log.info("lease not released", extra={"account_id": account_id, "error": repr(error)})

        await asyncio.gather(*(one(account) for account in list(account_ids)))
