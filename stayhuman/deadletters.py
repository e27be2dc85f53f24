"""Dead letters for operators: `stayhuman dead-letters` lists them, `dead-letters replay` publishes them again.

A dead letter is a message a consumer gave up on (`shared.jetstream.dead_letter`)
or work a service could not do (`keep_dead_letter`), kept on SH_DEADLETTER under
`sh.dlq.<stream, lowercased>.<consumer>` with its error and original subject in
headers. Listing reads the entries by sequence (direct gets), so it consumes
nothing and lists the same twice. A replay publishes the kept body on its
original subject with the application's headers, waits for JetStream to store
it and only then removes the entry: an entry is never lost, at worst replayed
twice. Its `Nats-Msg-Id` is `replay:<dead-letter sequence>`, so replaying the
same entry again within the stream's duplicate window (2 minutes) stores it once.
"""

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import PubAck, RawStreamMsg
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError, ServiceUnavailableError

from shared import subjects
from shared.jetstream import DLQ_DELIVERIES, DLQ_ERROR, DLQ_SEQUENCE, DLQ_SUBJECT, MSG_ID, TRUNCATED
from shared.settings import CommonSettings
from stayhuman.control import PUBLISH_TIMEOUT, ControlError, _shown, nats_connection
from stayhuman.localnats import with_local_nats

STREAM = subjects.DEAD_LETTER_STREAM
# What dead-lettering added: the rest of the headers are the application's own.
_BOOKKEEPING = {name.lower() for name in (DLQ_ERROR, DLQ_SUBJECT, DLQ_SEQUENCE, DLQ_DELIVERIES, TRUNCATED)}
_NOT_A_TOKEN = set(".*> \t\r\n")


@dataclass(frozen=True)
class DeadLetter:
    """One entry of SH_DEADLETTER, as kept."""

    seq: int
    kept_at: datetime | None
    stream: str  # where it came from, e.g. SH_INTERACTIONS
    consumer: str
    subject: str | None  # where it was delivered from, and where a replay publishes it
    error: str
    deliveries: int | None  # None: kept by a service, never delivered
    original_seq: int | None
    data: bytes
    headers: dict[str, str]  # the application's own
    truncated_from: int | None = None  # the size of the body before it was cut to fit the server

    @classmethod
    def from_raw(cls, raw: RawStreamMsg) -> "DeadLetter":
        headers = dict(raw.headers or {})
        stream, consumer = origin_of(raw.subject or "")
        return cls(
            seq=raw.seq or 0,
            kept_at=raw.time,
            stream=stream,
            consumer=consumer,
            subject=headers.get(DLQ_SUBJECT) or None,
            error=headers.get(DLQ_ERROR, ""),
            deliveries=_number(headers.get(DLQ_DELIVERIES)),
            original_seq=_number(headers.get(DLQ_SEQUENCE)),
            data=raw.data or b"",
            truncated_from=_number(headers.get(TRUNCATED)),
            headers={
                name: value
                for name, value in headers.items()
                if name.lower() not in _BOOKKEEPING and not name.lower().startswith("nats-")
            },
        )

    def preview(self, width: int) -> str:
        """The body on one line, cut to `width` characters."""
        text = " ".join(self.data.decode("utf-8", errors="replace").split())
        return text if len(text) <= width else text[: width - 1] + "…"

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "kept_at": self.kept_at.isoformat() if self.kept_at else None,
            "stream": self.stream,
            "consumer": self.consumer,
            "subject": self.subject,
            "error": self.error,
            "deliveries": self.deliveries,
            "original_seq": self.original_seq,
            "headers": self.headers,
            "size": len(self.data),
            "truncated_from": self.truncated_from,
            "preview": self.preview(200),
        }

    def replay_headers(self) -> dict[str, str]:
        # A fresh id: the first publish's id would be dropped as a duplicate of it.
        return {**self.headers, MSG_ID: f"replay:{self.seq}"}


def _number(value: str | None) -> int | None:
    return int(value) if value is not None and value.strip().isdigit() else None


def origin_of(dead_letter_subject: str) -> tuple[str, str]:
    """The stream and consumer an entry came from, read from `sh.dlq.<stream>.<consumer>`."""
    parts = dead_letter_subject.split(".", 3)
    if len(parts) != 4:
        return "?", "?"
    # The subject lowercases the stream name; StayHuman's streams are all upper case.
    return parts[2].upper(), parts[3]


def filter_subject(*, stream: str | None, consumer: str | None) -> str:
    """The dead-letter subjects of one stream and/or consumer (all when neither is given)."""
    for option, value in (("--stream", stream), ("--consumer", consumer)):
        if value is not None and (not value or _NOT_A_TOKEN & set(value)):
            raise ControlError(f"{option} {value!r}: give a name without dots, spaces or wildcards")
    return subjects.dead_letter(stream=stream or "*", consumer=consumer or "*")


def render_table(entries: Sequence[DeadLetter], *, total: int) -> str:
    if not entries:
        return (
            f"{total} dead letter{'s' * (total != 1)} (--limit 0 lists none)" if total else "no dead letters"
        )
    header = ("SEQ", "KEPT (UTC)", "FROM", "SUBJECT", "DELIVERIES", "ERROR", "BODY")
    lines = [header]
    for entry in entries:
        lines.append(
            (
                str(entry.seq),
                entry.kept_at.strftime("%Y-%m-%d %H:%M:%S") if entry.kept_at else "-",
                f"{entry.stream}/{entry.consumer}",
                entry.subject or "?",
                str(entry.deliveries) if entry.deliveries is not None else "-",
                _cut(entry.error, 60),
                entry.preview(40),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    table = "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )
    if total > len(entries):
        table += f"\n(the oldest {len(entries)} of {total}: --limit shows more)"
    return table


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# NATS --------------------------------------------------------------------------------------


async def _stream_state(js: JetStreamContext, *, subject: str, where: str) -> tuple[int, int]:
    """How many entries match `subject`, and the stream's last sequence now."""
    try:
        info = await js.stream_info(STREAM, subjects_filter=subject)
    except NotFoundError:
        raise ControlError(
            f"NATS at {where} has no stream {STREAM}: the services create it when they first start "
            "(`stayhuman up`)",
            code=1,
        ) from None
    except (NoRespondersError, ServiceUnavailableError, NatsTimeoutError):
        raise ControlError(f"JetStream does not answer at {where} (is it enabled?)", code=1) from None
    return sum((info.state.subjects or {}).values()), info.state.last_seq


async def _get(js: JetStreamContext, *, seq: int, subject: str | None, where: str) -> RawStreamMsg:
    try:
        if subject is None:
            return await js.get_msg(STREAM, seq=seq)
        return await js.get_msg(STREAM, seq=seq, subject=subject, next=True)
    except (NoRespondersError, ServiceUnavailableError, NatsTimeoutError):
        raise ControlError(f"JetStream at {where} did not answer a read of {STREAM}", code=1) from None


async def entries(
    js: JetStreamContext, *, subject: str, where: str, until: int | None = None
) -> AsyncIterator[DeadLetter]:
    """The entries on `subject`, oldest first, up to sequence `until`; read, not consumed."""
    seq = 1
    while until is None or seq <= until:
        try:
            raw = await _get(js, seq=seq, subject=subject, where=where)
        except NotFoundError:  # nothing at or after `seq`
            return
        entry = DeadLetter.from_raw(raw)
        if until is not None and entry.seq > until:
            return
        yield entry
        seq = entry.seq + 1


async def list_dead_letters(
    settings: CommonSettings, *, stream: str | None, consumer: str | None, limit: int
) -> tuple[list[DeadLetter], int]:
    """The oldest `limit` entries of one stream and/or consumer, and how many there are in all."""
    settings = with_local_nats(settings)
    subject = filter_subject(stream=stream, consumer=consumer)
    where = _shown(settings.nats_servers)
    async with nats_connection(settings, outcome="nothing was read") as nc:
        js = nc.jetstream()
        total, last = await _stream_state(js, subject=subject, where=where)
        found: list[DeadLetter] = []
        if limit > 0 and total:
            async for entry in entries(js, subject=subject, where=where, until=last):
                found.append(entry)
                if len(found) >= limit:
                    break
    return found, total


@dataclass(frozen=True)
class Replayed:
    """What became of one entry: replayed and removed, or kept with the reason."""

    entry: DeadLetter
    ack: PubAck | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def describe(self) -> str:
        entry = self.entry
        if self.problem is not None:
            return f"dead letter {entry.seq} not replayed: {self.problem}; kept on {STREAM}"
        assert self.ack is not None
        if self.ack.duplicate:
            return (
                f"dead letter {entry.seq} was already replayed to {entry.subject} "
                f"({self.ack.stream} stored it once); removed from {STREAM}"
            )
        return (
            f"replayed dead letter {entry.seq} to {entry.subject} "
            f"({self.ack.stream} seq {self.ack.seq}); removed from {STREAM}"
        )


async def replay_one(js: JetStreamContext, entry: DeadLetter, *, where: str) -> Replayed:
    """Publish the entry on its original subject, wait for the ack, then remove it."""
    if entry.subject is None:
        return Replayed(entry, problem=f"it has no {DLQ_SUBJECT} header: where it goes is unknown")
    if entry.truncated_from is not None:
        return Replayed(
            entry,
            problem=f"only its first {len(entry.data)} of {entry.truncated_from} bytes were kept "
            "(it did not fit the server's max_payload): a replay would publish a part",
        )
    try:
        ack = await js.publish(
            entry.subject, entry.data, headers=entry.replay_headers(), timeout=PUBLISH_TIMEOUT
        )
    except NoStreamResponseError:
        return Replayed(entry, problem=f"no stream takes {entry.subject} any more")
    except NatsTimeoutError:
        raise ControlError(
            f"dead letter {entry.seq}: {where} did not acknowledge the replay within {PUBLISH_TIMEOUT:g} s; "
            f"it may or may not be stored: replay it again (within 2 minutes a stream keeps one copy); "
            f"it and the rest are kept on {STREAM}",
            code=1,
        ) from None
    except (ConnectionClosedError, ServiceUnavailableError, NoRespondersError) as error:
        raise ControlError(
            f"dead letter {entry.seq}: NATS at {where} stopped answering ({error!r}); "
            f"it and the rest are kept on {STREAM}",
            code=1,
        ) from None
    except APIError as error:
        return Replayed(entry, problem=f"the stream refused it: {error.description}")
    try:
        await js.delete_msg(STREAM, entry.seq)
    except NotFoundError:
        pass  # removed meanwhile (another replay, or its age): what was wanted
    except (APIError, NatsTimeoutError, ConnectionClosedError) as error:
        return Replayed(
            entry,
            ack,
            problem=f"replayed ({ack.stream} seq {ack.seq}) but not removed ({error!r}): "
            "replaying it again within 2 minutes stores it once",
        )
    return Replayed(entry, ack)


async def replay_dead_letters(
    settings: CommonSettings,
    *,
    seqs: Sequence[int] = (),
    every: bool = False,
    stream: str | None = None,
    consumer: str | None = None,
    report: Callable[[Replayed], None],
) -> list[Replayed]:
    """Replay the entries named by sequence, or every entry of a stream and/or consumer.

    Named entries are all looked up first: an unknown one fails the request
    (code 2) before anything is replayed. `--all` replays what is there when it
    starts, not what is dead-lettered while it runs. `report` hears of each entry
    as it is done."""
    settings = with_local_nats(settings)
    subject = filter_subject(stream=stream, consumer=consumer)
    where = _shown(settings.nats_servers)
    done: list[Replayed] = []
    async with nats_connection(settings, outcome="nothing was replayed") as nc:
        js = nc.jetstream()
        _, last = await _stream_state(js, subject=subject, where=where)
        if every:
            todo: AsyncIterator[DeadLetter] = entries(js, subject=subject, where=where, until=last)
        else:
            todo = _iterate(await _named(js, seqs, where=where))
        async for entry in todo:
            outcome = await replay_one(js, entry, where=where)
            report(outcome)
            done.append(outcome)
    return done


async def _named(js: JetStreamContext, seqs: Sequence[int], *, where: str) -> list[DeadLetter]:
    found, missing = [], []
    for seq in dict.fromkeys(seqs):  # each once, in the order given
        try:
            found.append(DeadLetter.from_raw(await _get(js, seq=seq, subject=None, where=where)))
        except NotFoundError:
            missing.append(str(seq))
    if missing:
        raise ControlError(
            f"no dead letter {', '.join(missing)} on {STREAM} (`stayhuman dead-letters` lists them); "
            "nothing was replayed"
        )
    return found


async def _iterate(items: Sequence[DeadLetter]) -> AsyncIterator[DeadLetter]:
    for item in items:
        yield item
