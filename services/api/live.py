"""Live updates: one subscription to SH_EVENTS per api process, fanned out in memory to every
connected browser, each receiving only what its person may see.

`LiveHub` reads SH_EVENTS with one ordered, ephemeral consumer (no durable, nothing to
acknowledge), from the stream's end when the process starts. Each event is kept as it was
published in a bounded buffer of recent updates. Who may see it (services/api/fanout.py) is
worked out, in stream order, only once someone may: while a session is connected, or when a
browser resumes from the buffer; what the browser is sent is rendered only for a session that
may see it, once per event handed out, and again for each browser that resumes over it. With
nobody connected, an event costs the api its place in the buffer and nothing more. Sessions are
indexed by the tenants they hold a role in, so an event is checked only against sessions that
could see it.

What it knows of each conversation (tenant, team, owner) comes from the events themselves; for
a conversation it has not met yet, from the database, one query per batch of events worked out.
Events that leave the buffer before anyone needed them leave that knowledge behind them: it is
dropped, and read again from the database as conversations come up.

`GET /api/stream` (`live_router`) is the browser's end: the viewer's rights are worked out once
when they connect, then each update is one Server-Sent Event whose id is its sequence in
SH_EVENTS. A browser that reconnects sends `Last-Event-ID` and gets what it missed, from the
buffer or, when that is older than the buffer, from JetStream itself, then the live updates, with
nothing lost and nothing twice. A session too slow to keep up is closed; its browser reconnects
and resumes the same way.
"""

import asyncio
import contextlib
import logging
import sys
import time
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from prometheus_client import Counter, Gauge
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from services.api.access import Action, Team, Viewer
from services.api.auth import authenticate, settings_of
from services.api.fanout import (
    LAST_EVENT_ID,
    MAX_SEQUENCE,
    Audience,
    Facts,
    PersonFacts,
    Sight,
    audience_of,
    conversation_of,
    facts_after,
    may_see,
    payload_of,
    person_of,
    position,
    sequence_of,
)
from services.api.history import decode
from services.api.reads import ERRORS
from services.api.scope import Access, access, load_viewer
from services.api.timeline import message_id_of
from services.api.views import Problem
from shared import subjects
from shared.db.models import ConversationRow, RoleGrantRow, TeamMemberRow, TeamRow
from shared.events import Event
from shared.logs import transient_trouble

log = logging.getLogger(__name__)

EVENTS = "sh.>"
KEEPALIVE = 15.0  # seconds of silence before a comment keeps the connection open
RETRY = b"retry: 2000\n\n"  # a browser reconnects 2 s after losing the stream
BATCH = 500  # events read from SH_EVENTS at once (one database query for what is unknown)
BUFFER_EVENTS = 20_000  # recent updates kept for resuming browsers...
BUFFER_BYTES = 32 * 1024 * 1024  # ...and at most this much of them, as published
QUEUE_EVENTS = 1_000  # updates waiting for one session before it is closed as too slow
CONVERSATIONS_KEPT = 50_000  # conversations whose tenant, team and owner are kept in memory
PEOPLE_FOR = 60.0  # seconds a person's teams are trusted before they are read again
REPLAY_WAIT = 5.0  # seconds a replay from JetStream waits for its next message
SEND_AT_ONCE = 200  # updates of one session written in one piece

SESSIONS = Gauge("stayhuman_api_live_sessions", "Browsers connected to the live stream")
TAKEN = Counter(
    "stayhuman_api_live_events_total",
    "Events of SH_EVENTS the live stream took (kept), and those it could not read (invalid)",
    ["result"],
)
DELIVERED = Counter("stayhuman_api_live_deliveries_total", "Updates handed to a session")
CLOSED = Counter("stayhuman_api_live_closed_total", "Sessions closed for falling too far behind")
RESUMED = Counter("stayhuman_api_live_resumed_total", "Streams resumed from Last-Event-ID", ["source"])


@dataclass(slots=True, eq=False)
class Update:
    """One event of SH_EVENTS as the hub keeps it: the message as published and, once worked
    out, who may see it (`audience` None: nobody, or not worked out yet)."""

    seq: int
    message_id: str
    data: bytes
    audience: Audience | None = None


def render(update: Update, event: Event | None = None) -> bytes | None:
    """The Server-Sent Events an update becomes for a browser that may see it (None: nothing a
    person reads, or no event at all); `event`: the update's, when already decoded."""
    try:
        if event is None:
            event = decode(update.data)
        return payload_of(event, seq=update.seq, message_id=update.message_id)
    except ValueError:
        return None
    except Exception:
        log.exception("an event could not be made an update", extra={"seq": update.seq})
        return None


class Recent:
    """The newest updates in stream order, bounded by count and by bytes. Everything after
    `floor` is here; what came at or before it has to come from JetStream."""

    def __init__(self, max_events: int, max_bytes: int, floor: int = 0) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.floor = floor
        self.updates: deque[Update] = deque()
        self.size = 0

    def add(self, update: Update) -> None:
        self.updates.append(update)
        self.size += len(update.data)
        while self.updates and (len(self.updates) > self.max_events or self.size > self.max_bytes):
            gone = self.updates.popleft()
            self.size -= len(gone.data)
            self.floor = gone.seq

    def holds_after(self, seq: int) -> bool:
        return seq >= self.floor

    def between(self, after: int, upto: int) -> list[Update]:
        """The updates with a sequence above `after` and at most `upto`, oldest first."""
        found: list[Update] = []
        for update in reversed(self.updates):
            if update.seq <= after:
                break
            if update.seq <= upto:
                found.append(update)
        found.reverse()
        return found


def _intern(value: str | None) -> str | None:
    return sys.intern(value) if value is not None else None


class Known:
    """What is known of conversations (tenant, team, owner) and people (teams, tenants): from the
    events as they pass, and from the database for the rest. A replay keeps its own, falling back
    on the hub's (`parent`) without changing it."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        kept: int = CONVERSATIONS_KEPT,
        people_for: float = PEOPLE_FOR,
        parent: "Known | None" = None,
    ) -> None:
        self.sessions = sessions
        # Read on a connection of the sessions' engine: an ORM session around one query cost
        # more than the query.
        self.engine: AsyncEngine = sessions.kw["bind"]
        self.kept = kept
        self.people_for = people_for
        self.parent = parent
        self.conversations: OrderedDict[str, Facts] = OrderedDict()
        self.people: dict[str, tuple[float, PersonFacts]] = {}

    def conversation(self, conversation_id: str) -> Facts | None:
        facts = self.conversations.get(conversation_id)
        if facts is not None:
            self.conversations.move_to_end(conversation_id)
            return facts
        return self.parent.conversation(conversation_id) if self.parent is not None else None

    def forget(self) -> None:
        """Drop what is known of every conversation (the database is read again for each)."""
        self.conversations.clear()

    def remember(self, conversation_id: str, facts: Facts) -> None:
        self.conversations[conversation_id] = Facts(
            sys.intern(facts.tenant_id), _intern(facts.team_id), _intern(facts.owner_id)
        )
        self.conversations.move_to_end(conversation_id)
        while len(self.conversations) > self.kept:
            self.conversations.popitem(last=False)

    def person(self, person_id: str) -> PersonFacts | None:
        kept = self.people.get(person_id)
        if kept is not None and kept[0] > time.monotonic():
            return kept[1]
        return self.parent.person(person_id) if self.parent is not None else None

    async def learn(self, events: Sequence[Event]) -> None:
        """Read from the database, in one go, what these events need and nothing here knows yet."""
        conversations: set[str] = set()
        people: set[str] = set()
        for event in events:
            conversation = conversation_of(event)
            if conversation is not None:
                if self.conversation(conversation) is None:
                    conversations.add(conversation)
            elif (person := person_of(event)) is not None and self.person(person) is None:
                people.add(person)
        if not conversations and not people:
            return
        try:
            async with self.engine.connect() as connection:
                if conversations:
                    await self._conversations(connection, conversations)
                if people:
                    await self._people(connection, people)
        except Exception as error:  # the database is away: the events still go to who the events say
            transient_trouble.warn(
                log, "live database", "live updates could not read the database", error=repr(error)
            )

    async def _conversations(self, connection: AsyncConnection, wanted: set[str]) -> None:
        rows = await connection.execute(
            select(
                col(ConversationRow.id),
                col(ConversationRow.tenant_id),
                col(ConversationRow.team_id),
                col(ConversationRow.owner_id),
            ).where(col(ConversationRow.id).in_(sorted(wanted))),
        )
        for row in rows:
            self.remember(row.id, Facts(row.tenant_id, row.team_id, row.owner_id))

    async def _people(self, connection: AsyncConnection, wanted: set[str]) -> None:
        teams: dict[str, set[Team]] = {person: set() for person in wanted}
        tenants: dict[str, set[str]] = {person: set() for person in wanted}
        for row in await connection.execute(
            select(col(TeamMemberRow.person_id), col(TeamRow.id), col(TeamRow.tenant_id))
            .join(TeamRow, col(TeamRow.id) == col(TeamMemberRow.team_id))
            .where(col(TeamMemberRow.person_id).in_(sorted(wanted))),
        ):
            teams[row.person_id].add(Team(row.id, row.tenant_id))
        for grant in await connection.execute(
            select(col(RoleGrantRow.person_id), col(RoleGrantRow.tenant_id)).where(
                col(RoleGrantRow.person_id).in_(sorted(wanted)), col(RoleGrantRow.tenant_id) != ""
            ),
        ):
            tenants[grant.person_id].add(grant.tenant_id)
        until = time.monotonic() + self.people_for
        for person in wanted:
            self.people[person] = (until, PersonFacts(frozenset(teams[person]), frozenset(tenants[person])))

    def advance(self, event: Event) -> Audience:
        """Who may see one event, and what it changes of what is known."""
        conversation = conversation_of(event)
        before = self.conversation(conversation) if conversation is not None else None
        about = person_of(event) if conversation is None else None
        audience = audience_of(event, before, self.person(about) if about is not None else None)
        if conversation is not None:
            after = facts_after(event, before)
            if after is not None and after != before:
                self.remember(conversation, after)
        return audience


def updates_of(msgs: Sequence[Msg]) -> list[Update]:
    """Messages of SH_EVENTS as the hub keeps them, nothing worked out yet."""
    return [Update(msg.metadata.sequence.stream, message_id_of(msg), msg.data) for msg in msgs]


async def work_out(known: Known, updates: Sequence[Update]) -> list[tuple[Update, Event]]:
    """Who may see each update, in stream order (one database query for what is unknown); an
    update that is no event stays seen by nobody. Returns the updates that are events, decoded."""
    decoded: list[tuple[Update, Event]] = []
    for update in updates:
        try:
            decoded.append((update, decode(update.data)))
        except ValueError:
            TAKEN.labels("invalid").inc()
    await known.learn([event for _, event in decoded])
    for update, event in decoded:
        try:
            update.audience = known.advance(event)
        except Exception:
            log.exception("who may see an event could not be worked out", extra={"seq": update.seq})
            TAKEN.labels("invalid").inc()
    return decoded


async def next_batch(subscription: JetStreamContext.PushSubscription, wait: float | None) -> list[Msg]:
    """The next message (waiting up to `wait`, None: for ever) and what is already pending."""
    batch = [await subscription.next_msg(timeout=wait)]
    while len(batch) < BATCH and subscription.pending_msgs:
        batch.append(await subscription.next_msg(timeout=1.0))
    return batch


@dataclass
class Replay:
    """How a replay from JetStream ended: complete, or cut short."""

    complete: bool = False


@dataclass(eq=False)
class Listener:
    """One connected browser: what it may see, and the updates waiting for it (None: closed)."""

    sight: Sight
    queue: "asyncio.Queue[tuple[int, bytes] | None]"  # an update's sequence and what it sends
    closed: bool = False
    registered: bool = True


class LiveHub:
    """SH_EVENTS, read once per process and fanned out to the connected browsers."""

    def __init__(
        self,
        js: JetStreamContext | None,
        sessions: async_sessionmaker[AsyncSession],
        *,
        buffer_events: int = BUFFER_EVENTS,
        buffer_bytes: int = BUFFER_BYTES,
        queue_events: int = QUEUE_EVENTS,
        conversations_kept: int = CONVERSATIONS_KEPT,
        people_for: float = PEOPLE_FOR,
    ) -> None:
        """`js` None: a hub that is never started (no events), for an app served without NATS."""
        self.js = js
        self.sessions = sessions
        self.known = Known(sessions, kept=conversations_kept, people_for=people_for)
        self.recent = Recent(buffer_events, buffer_bytes)
        self.queue_events = queue_events
        self.head = 0  # the last sequence of SH_EVENTS taken
        self.resolved = 0  # the last sequence whose audience is worked out (or given up, see take)
        self._working = asyncio.Lock()  # audiences are worked out in stream order, one batch at a time
        self.everywhere: set[Listener] = set()  # agency admins
        self.by_tenant: dict[str, set[Listener]] = {}
        self.by_person: dict[str, set[Listener]] = {}
        self._subscription: JetStreamContext.PushSubscription | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def listening(self) -> bool:
        """Whether any session is connected."""
        return bool(self.everywhere or self.by_tenant or self.by_person)

    def listeners(self) -> set[Listener]:
        """Every session connected to this hub."""
        found = set(self.everywhere)
        for index in (self.by_tenant, self.by_person):
            for listeners in index.values():
                found |= listeners
        return found

    async def start(self) -> None:
        """Subscribe from the end of SH_EVENTS as it is now."""
        if self.js is None:
            raise RuntimeError("a hub without JetStream cannot start")
        info = await self.js.stream_info(subjects.EVENTS_STREAM)
        self.head = info.state.last_seq
        self.recent = Recent(self.recent.max_events, self.recent.max_bytes, floor=self.head)
        self.resolved = self.head
        self._subscription = await self._subscribe(self.head + 1)
        self._task = asyncio.create_task(self._pump(self._subscription), name="live-updates")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
            self._subscription = None
        for listener in self.listeners():
            self._close(listener)

    async def _subscribe(self, start: int) -> JetStreamContext.PushSubscription:
        assert self.js is not None
        return await self.js.subscribe(
            EVENTS,
            stream=subjects.EVENTS_STREAM,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start),
            pending_msgs_limit=20_000,
            pending_bytes_limit=64 * 1024 * 1024,
        )

    async def _pump(self, subscription: JetStreamContext.PushSubscription) -> None:
        while True:
            try:
                batch = await next_batch(subscription, wait=None)
            except NatsTimeoutError:
                continue
            except Exception as error:
                transient_trouble.warn(
                    log, "live nats", "live updates could not read SH_EVENTS; retrying", error=repr(error)
                )
                await asyncio.sleep(1.0)
                continue
            try:
                await self.take(batch)
            except Exception:
                log.exception("live updates lost a batch of events")

    async def take(self, msgs: Sequence[Msg]) -> None:
        """Buffer a batch of SH_EVENTS and, while someone is connected, hand out its updates."""
        fresh = updates_of([msg for msg in msgs if msg.metadata.sequence.stream > self.head])
        if not fresh:
            return
        TAKEN.labels("kept").inc(len(fresh))
        async with self._working:
            events = await self._work_out(fresh) if self.listening else {}
            # From here to the new head nothing awaits: a session that connects meanwhile either
            # joined before these updates (it gets them live) or after (its replay has them).
            for update in fresh:
                self.recent.add(update)
            if self.recent.floor > self.resolved:
                # Updates nobody was there for left the buffer unread: what they changed of
                # their conversations is unknown, so nothing known of a conversation is trusted.
                self.known.forget()
                self.resolved = self.recent.floor
            if self.resolved >= fresh[-1].seq:
                for update in fresh:
                    self._fan_out(update, events.get(update.seq))
            self.head = max(self.head, fresh[-1].seq)

    async def catch_up(self) -> None:
        """Work out who may see every update the buffer holds (a browser resumes over them)."""
        async with self._working:
            await self._work_out([])

    async def _work_out(self, fresh: Sequence[Update]) -> dict[int, Event]:
        """Who may see the buffered updates not worked out yet, then `fresh`, in stream order;
        the caller holds `_working`. Returns the events of `fresh`, decoded, by sequence."""
        pending = [*self.recent.between(self.resolved, MAX_SEQUENCE), *fresh]
        events: dict[int, Event] = {}
        for start in range(0, len(pending), BATCH):
            chunk = pending[start : start + BATCH]
            for update, event in await work_out(self.known, chunk):
                if update.seq > self.head:
                    events[update.seq] = event
            self.resolved = max(self.resolved, chunk[-1].seq)
        return events

    # -- sessions ---------------------------------------------------------------------------------

    def register(self, sight: Sight) -> Listener:
        listener = Listener(sight, asyncio.Queue(self.queue_events))
        if sight.tenants is None:
            self.everywhere.add(listener)
        else:
            for tenant in sight.tenants:
                self.by_tenant.setdefault(tenant, set()).add(listener)
        if sight.person_id is not None:
            self.by_person.setdefault(sight.person_id, set()).add(listener)
        SESSIONS.inc()
        return listener

    def unregister(self, listener: Listener) -> None:
        if not listener.registered:
            return
        listener.registered = False
        self.everywhere.discard(listener)
        for key in listener.sight.tenants or ():
            self._discard(self.by_tenant, key, listener)
        if listener.sight.person_id is not None:
            self._discard(self.by_person, listener.sight.person_id, listener)
        SESSIONS.dec()

    @staticmethod
    def _discard(index: dict[str, set[Listener]], key: str, listener: Listener) -> None:
        listeners = index.get(key)
        if listeners is not None:
            listeners.discard(listener)
            if not listeners:
                del index[key]

    def _fan_out(self, update: Update, event: Event | None = None) -> None:
        """Hand an update to every session that may see it, rendered once for all of them."""
        audience = update.audience
        if audience is None:
            return
        candidates = set(self.everywhere)
        for tenant in audience.tenants:
            candidates |= self.by_tenant.get(tenant, set())
        for person in audience.people:
            candidates |= self.by_person.get(person, set())
        payload: bytes | None = None
        for listener in candidates:
            if may_see(listener.sight, audience):
                if payload is None:
                    payload = render(update, event)
                    if payload is None:
                        return
                try:
                    listener.queue.put_nowait((update.seq, payload))
                except asyncio.QueueFull:
                    CLOSED.inc()
                    self._close(listener)
                else:
                    DELIVERED.inc()

    def _close(self, listener: Listener) -> None:
        """Stop a session: its stream ends, and its browser resumes from what it last received."""
        if listener.closed:
            return
        listener.closed = True
        self.unregister(listener)
        while not listener.queue.empty():
            listener.queue.get_nowait()
        listener.queue.put_nowait(None)

    # -- one browser's stream ------------------------------------------------------------------------

    async def stream(self, sight: Sight, after: int | None, max_seconds: float) -> AsyncGenerator[bytes]:
        """What one browser is sent: what it missed after `after` (its Last-Event-ID), then the
        live updates, for `max_seconds`."""
        listener = self.register(sight)
        joined = self.head  # updates after it come to the listener; those up to it, from a replay
        try:
            # From the start the browser holds a position, so even a first connection closed
            # before its first event resumes where it began.
            yield RETRY + (position(joined) if after is None else b"")
            if after is not None and after < joined:
                # What the buffer holds is worked out first: the resumption reads it, or a replay
                # from JetStream starts from what the hub knows now.
                await self.catch_up()
                if self.recent.holds_after(after):
                    RESUMED.labels("buffer").inc()
                    missed = [
                        u
                        for u in self.recent.between(after, joined)
                        if u.audience is not None and may_see(sight, u.audience)
                    ]
                    for start in range(0, len(missed), SEND_AT_ONCE):
                        shown = [p for u in missed[start : start + SEND_AT_ONCE] if (p := render(u))]
                        if shown:
                            yield b"".join(shown)
                    yield position(joined)
                else:
                    RESUMED.labels("stream").inc()
                    replay = Replay()
                    async for chunk in self._replay(sight, after, joined, listener, replay):
                        yield chunk
                    if not replay.complete:
                        return  # the browser resumes from the last position it was given
            sent = joined if after is None else max(after, joined)
            async for chunk in self._live(listener, sent, max_seconds):
                yield chunk
        finally:
            self.unregister(listener)

    async def _live(self, listener: Listener, sent: int, max_seconds: float) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        end = loop.time() + max_seconds
        quiet_until = loop.time() + KEEPALIVE
        queue = listener.queue
        while True:
            now = loop.time()
            if now >= end:
                return
            try:
                async with asyncio.timeout(min(end, quiet_until) - now):
                    first = await queue.get()
            except TimeoutError:
                if loop.time() >= quiet_until and queue.empty() and not listener.closed:
                    # Nothing waits for this session: all it may see up to the head was sent.
                    sent = max(sent, self.head)
                    yield f"id: {sent}\n: keep-alive\n\n".encode()
                    quiet_until = loop.time() + KEEPALIVE
                continue
            batch = [first]
            while len(batch) < SEND_AT_ONCE and not queue.empty():
                batch.append(queue.get_nowait())
            out: list[bytes] = []
            for piece in batch:
                if piece is not None and piece[0] > sent:
                    out.append(piece[1])
                    sent = piece[0]
            if out:
                yield b"".join(out)
                quiet_until = loop.time() + KEEPALIVE
            if any(piece is None for piece in batch):
                return

    async def _replay(
        self, sight: Sight, after: int, upto: int, listener: Listener, replay: "Replay"
    ) -> AsyncIterator[bytes]:
        """What the viewer may see of SH_EVENTS after `after` up to `upto`, read from JetStream with
        a consumer of its own; each piece ends with its position, the last with `upto`. It stops
        early, incomplete (the browser resumes from the last position), if the session is closed
        meanwhile or JetStream does not answer."""
        if self.js is None:
            return
        subscription = await self._subscribe(after + 1)
        known = Known(
            self.sessions, kept=self.known.kept, people_for=self.known.people_for, parent=self.known
        )
        try:
            while not listener.closed:
                try:
                    batch = await next_batch(subscription, wait=REPLAY_WAIT)
                except NatsTimeoutError:
                    try:
                        pending = (await subscription.consumer_info()).num_pending
                    except Exception:
                        return
                    if pending == 0:
                        replay.complete = True  # what it missed is no longer kept: nothing to send
                        yield position(upto)
                    return
                updates = updates_of([msg for msg in batch if msg.metadata.sequence.stream <= upto])
                shown = [
                    p
                    for u, event in await work_out(known, updates)
                    if u.audience is not None and may_see(sight, u.audience) and (p := render(u, event))
                ]
                last = batch[-1].metadata
                done = last.sequence.stream >= upto or not last.num_pending
                reached = upto if done else last.sequence.stream
                yield b"".join(shown) + position(reached)
                if done:
                    replay.complete = True
                    return
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()


# -- the route ------------------------------------------------------------------------------------


def resume_from(last_event_id: str | None) -> int | None:
    """The sequence a browser resumes after (None: from now), or 400 naming the header."""
    if not last_event_id:
        return None
    seq = sequence_of(last_event_id)
    if seq is None:
        raise HTTPException(
            400,
            {
                "error": f"{LAST_EVENT_ID} is not a position of this stream: send back the id of "
                "the last event received (a whole number)",
                "field": LAST_EVENT_ID,
            },
        )
    return seq


async def signed_in_as(request: Request, viewer: Viewer) -> bool:
    """Whether the request still signs in as this viewer, with the same roles."""
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with sessions() as session:
        principal = await authenticate(request, session)
        return principal is not None and await load_viewer(session, principal) == viewer


async def while_signed_in(
    request: Request, viewer: Viewer, stream: AsyncGenerator[bytes], every: float
) -> AsyncIterator[bytes]:
    """The stream, ended once its viewer signed out, lost their session or changed roles (checked
    every `every` seconds, between two of its writes; the keep-alive writes every 15 s): the
    browser reconnects, and is answered as who they are now."""
    clock = asyncio.get_running_loop().time
    check_at = clock() + every
    try:
        async for chunk in stream:
            yield chunk
            if clock() >= check_at:
                if not await signed_in_as(request, viewer):
                    return
                check_at = clock() + every
    finally:
        await stream.aclose()


def live_router() -> APIRouter:
    router = APIRouter(prefix="/api", tags=["read"], responses=ERRORS)
    unavailable: dict[int | str, dict[str, Any]] = {
        503: {"model": Problem, "description": "Live updates are not running in this process."}
    }

    @router.get(
        "/stream",
        response_class=StreamingResponse,
        responses={
            200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events."},
            **unavailable,
        },
    )
    async def stream(
        request: Request,
        access: Annotated[Access, Depends(access)],
        max_seconds: Annotated[int, Query(ge=1, le=300, description="The stream ends after this long.")] = 60,
        last_event_id: Annotated[str | None, Header(alias=LAST_EVENT_ID)] = None,
    ) -> StreamingResponse:
        """What happens next, live: each new timeline entry the viewer may see (`event: timeline`)
        and each command outcome (`event: outcome`: of what they may see, or of a command they
        gave). Each event's `id` is its sequence in SH_EVENTS: reconnect with it as
        `Last-Event-ID` and the stream resumes after it, losing and repeating nothing. Without
        one it starts now. A comment keeps the connection alive every 15 s; reconnect when the
        stream ends (after `max_seconds`, or early if this browser fell too far behind)."""
        access.require_some(Action.see)
        after = resume_from(last_event_id)
        hub: LiveHub | None = getattr(request.app.state, "live", None)
        if hub is None:
            raise HTTPException(503, {"error": "live updates are not running"})
        sight = Sight.of(access.viewer)
        # The stream reads nothing more from the database: give the connection back now.
        await access.session.close()
        every = settings_of(request).live_recheck.total_seconds()
        return StreamingResponse(
            while_signed_in(request, access.viewer, hub.stream(sight, after, max_seconds), every),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return router
