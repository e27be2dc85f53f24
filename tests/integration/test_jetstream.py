"""Streams, dedupe, dead letters and version checks against a real nats-server."""

import asyncio
import re
import time
from datetime import timedelta

import pytest
from nats.aio.client import Client
from nats.errors import BadHeaderError, NoRespondersError
from nats.js.errors import NoStreamResponseError

from shared import subjects
from shared.jetstream import (
    DLQ_ERROR,
    DLQ_SUBJECT,
    MSG_ID,
    TRUNCATED,
    BatchConsumer,
    MessageTooLarge,
    Outgoing,
    ServerTooOld,
    StreamSettings,
    check_server_version,
    dead_letter,
    deliveries,
    ensure_streams,
    publish_pipelined,
    stream_configs,
    work_consumer,
)
from shared.logs import CORRELATION_HEADER
from tests.helpers import eventually


async def test_streams_are_declared_idempotently(nc: Client) -> None:
    js = nc.jetstream()
    configs = stream_configs(StreamSettings())
    await ensure_streams(js, configs)
    await ensure_streams(js, stream_configs(StreamSettings(events_max_age=timedelta(days=3))))
    events = await js.stream_info(subjects.EVENTS_STREAM)
    assert events.config.max_age == timedelta(days=3).total_seconds()
    timers = await js.stream_info(subjects.TIMERS_STREAM)
    assert timers.config.allow_msg_schedules is True and timers.config.allow_msg_ttl is True
    assert timers.config.max_age in (0, None) and timers.config.max_bytes in (-1, None)
    assert timers.config.max_msgs in (-1, None)


async def test_interactions_are_deduplicated_by_msg_id(nc: Client) -> None:
    js = nc.jetstream()
    await ensure_streams(js, stream_configs(StreamSettings()))
    subject = subjects.interaction_received(tenant_id="acme", account_id="acme-fb")
    first = await js.publish(subject, b"{}", headers={MSG_ID: "ix:acme:acme-fb:m1:0"})
    second = await js.publish(subject, b"{}", headers={MSG_ID: "ix:acme:acme-fb:m1:0"})
    edit = await js.publish(subject, b"{}", headers={MSG_ID: "ix:acme:acme-fb:m1:1"})
    assert not first.duplicate and second.duplicate and not edit.duplicate
    assert (await js.stream_info(subjects.INTERACTIONS_STREAM)).state.messages == 2


async def test_pipelined_publish_stores_everything(nc: Client) -> None:
    js = nc.jetstream()
    await ensure_streams(js, stream_configs(StreamSettings()))
    messages = [
        Outgoing(subjects.interaction_received(tenant_id="acme", account_id="a"), b"x", f"id-{i}")
        for i in range(2000)
    ]
    await publish_pipelined(js, messages)
    await publish_pipelined(js, messages[:100])  # republished: deduplicated
    assert (await js.stream_info(subjects.INTERACTIONS_STREAM)).state.messages == 2000


async def test_pipelined_publish_stores_headers_as_nats_py_would_send_them(nc: Client) -> None:
    """Pipelined publishes write their commands themselves: what arrives is what nats-py's
    `publish` sends (values trimmed, line breaks as spaces), and a bad header name is refused."""
    js = nc.jetstream()
    await ensure_streams(js, stream_configs(StreamSettings()))
    subject = subjects.interaction_received(tenant_id="acme", account_id="a")
    headers = {"traceparent": "00-abc-def-01", "Sh-Note": " two\r\nlines ", "Sh-Empty": ""}
    await publish_pipelined(js, [Outgoing(subject, b'{"a": 1}', "with-headers", "corr-1", headers=headers)])
    stored = await js.get_last_msg(subjects.INTERACTIONS_STREAM, subjects.all_interactions())
    assert stored.data == b'{"a": 1}'
    assert stored.headers == {
        MSG_ID: "with-headers",
        "traceparent": "00-abc-def-01",
        "Sh-Note": "two  lines",
        "Sh-Empty": "",
        CORRELATION_HEADER: "corr-1",
    }
    with pytest.raises(BadHeaderError):
        await publish_pipelined(js, [Outgoing(subject, b"{}", "bad", headers={"bad name": "x"})])


async def test_pipelined_publish_retries_then_raises_when_nothing_stores(nc: Client) -> None:
    js = nc.jetstream()
    started = time.monotonic()
    with pytest.raises((NoRespondersError, NoStreamResponseError)):
        await publish_pipelined(js, [Outgoing("sh.nowhere.x", b"x", "id-1")], timeout=2, retry_for=1.5)
    assert 0.5 <= time.monotonic() - started < 5  # it retried for a while, then gave up


async def test_pipelined_publish_survives_a_stream_that_appears_late(nc: Client) -> None:
    """Like a leader election: publishes fail for a moment, then go through once, deduplicated."""
    js = nc.jetstream()
    messages = [
        Outgoing(subjects.interaction_received(tenant_id="a", account_id="b"), b"x", f"id-{i}")
        for i in range(50)
    ]

    async def create_later() -> None:
        await asyncio.sleep(1)
        await ensure_streams(js, stream_configs(StreamSettings()))

    await asyncio.gather(publish_pipelined(js, messages, timeout=2, retry_for=10), create_later())
    assert (await js.stream_info(subjects.INTERACTIONS_STREAM)).state.messages == 50


async def test_poison_message_reaches_dead_letter_with_error(nc: Client) -> None:
    js = nc.jetstream()
    await ensure_streams(js, stream_configs(StreamSettings()))
    subject = subjects.interaction_received(tenant_id="acme", account_id="acme-fb")
    await js.publish(subject, b"not json", headers={MSG_ID: "poison"})
    seen: list[int] = []

    async def handler(batch: list) -> None:  # type: ignore[type-arg]
        for msg in batch:
            seen.append(msg.metadata.num_delivered)
            if msg.metadata.num_delivered >= 3:
                await dead_letter(
                    js, msg, stream=subjects.INTERACTIONS_STREAM, consumer="t", error="boom: bad"
                )
            else:
                raise ValueError("cannot parse")

    consumer = BatchConsumer(
        js=js,
        stream=subjects.INTERACTIONS_STREAM,
        config=work_consumer(
            durable="t",
            filter_subject=subjects.all_interactions(),
            ack_wait=timedelta(seconds=5),
            max_deliver=3,
        ),
        handler=handler,
        retry_delay=0.1,
        idle_timeout=0.5,
    )
    await consumer.start()
    sub = await js.pull_subscribe(
        subjects.dead_letter(stream=subjects.INTERACTIONS_STREAM, consumer="t"), durable="dlq"
    )
    msgs = await sub.fetch(1, timeout=10)
    await sub.unsubscribe()
    await consumer.stop()
    assert seen == [1, 2, 3]
    assert msgs[0].data == b"not json"
    assert msgs[0].headers is not None
    assert msgs[0].headers[DLQ_ERROR] == "boom: bad"
    # the subject as stored: the stream puts each tenant in its lane
    assert re.fullmatch(r"sh\.ix\.[0-7]\.acme\.acme-fb", msgs[0].headers[DLQ_SUBJECT])

    async def settled() -> bool:  # term() is a fire-and-forget acknowledgement
        info = await js.consumer_info(subjects.INTERACTIONS_STREAM, "t")
        return info.num_ack_pending == 0 and info.num_pending == 0

    await eventually(settled, timeout=5, what="the poison message to be terminated")


async def test_old_servers_are_refused_with_advice(nc: Client) -> None:
    check_server_version(nc._server_info["version"], where="test")  # the pinned server is new enough
    check_server_version("2.12.0", where="test")
    with pytest.raises(ServerTooOld, match=r"2\.9\.10 at nats1:4222 is too old: StayHuman needs 2\.12"):
        check_server_version("2.9.10", where="nats1:4222")
    with pytest.raises(ServerTooOld):
        check_server_version("2.11.9-beta", where="nats1:4222")


async def test_schedule_stream_fires_into_itself(nc: Client) -> None:
    """The timer stream accepts `@at` schedules with one subject per conversation."""
    from datetime import UTC, datetime

    js = nc.jetstream()
    await ensure_streams(js, stream_configs(StreamSettings()))
    cid = "c" * 32
    sched = subjects.timer_schedule(tenant_id="acme", conversation_id=cid)
    fired = subjects.timer_fired(tenant_id="acme", conversation_id=cid)
    sub = await js.pull_subscribe(subjects.all_timers_fired(), durable="probe")
    at = (datetime.now(UTC) + timedelta(milliseconds=300)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    await js.publish(sched, b"v1", headers={"Nats-Schedule": f"@at {at}", "Nats-Schedule-Target": fired})
    msgs = await sub.fetch(1, timeout=5)
    await sub.unsubscribe()
    assert msgs[0].subject == fired and msgs[0].data == b"v1"


@pytest.mark.parametrize("batch_size", [1, 500])
async def test_a_handler_that_always_fails_dead_letters_on_the_last_delivery(
    nc: Client, batch_size: int
) -> None:
    """Whatever the batch size, a message its handler never gets through is kept with the
    error on its last delivery, not nak'ed into oblivion."""
    js = nc.jetstream()
    await ensure_streams(js, stream_configs(StreamSettings()))
    subject = subjects.interaction_received(tenant_id="acme", account_id="acme-fb")
    for i in range(3):
        await js.publish(subject, f"m{i}".encode(), headers={MSG_ID: f"m{i}"})
    parsed: list[int] = []
    read: list[int] = []

    async def handler(batch: list) -> None:  # type: ignore[type-arg]
        read.extend(deliveries(m) for m in batch)  # off the reply subject alone, first
        parsed.extend(m.metadata.num_delivered for m in batch)
        raise RuntimeError("the database refused it")

    consumer = BatchConsumer(
        js=js,
        stream=subjects.INTERACTIONS_STREAM,
        config=work_consumer(
            durable="fails",
            filter_subject=subjects.all_interactions(),
            ack_wait=timedelta(seconds=5),
            max_deliver=3,
        ),
        handler=handler,
        batch_size=batch_size,
        retry_delay=0.05,
        idle_timeout=0.5,
    )
    await consumer.start()
    sub = await js.pull_subscribe(
        subjects.dead_letter(stream=subjects.INTERACTIONS_STREAM, consumer="fails"), durable="dlq"
    )
    kept = []
    while len(kept) < 3:
        kept += await sub.fetch(3 - len(kept), timeout=10)
    await sub.unsubscribe()
    await consumer.stop()
    assert sorted(m.data for m in kept) == [b"m0", b"m1", b"m2"]
    assert all(m.headers and m.headers[DLQ_ERROR] == "RuntimeError: the database refused it" for m in kept)
    assert max(parsed) == 3 and parsed.count(3) == 3
    assert read == parsed


async def test_a_backlog_is_taken_in_batches_of_at_most_the_batch_size_each_message_once(nc: Client) -> None:
    """A lone message is handled at once; a backlog in batches of up to `batch_size`, the first
    message of each taken with a long poll and the rest of what is there with one request."""
    js = nc.jetstream()
    await ensure_streams(js, stream_configs(StreamSettings()))
    subject = subjects.interaction_received(tenant_id="acme", account_id="acme-fb")
    await publish_pipelined(js, [Outgoing(subject, f"m{i}".encode(), f"m{i}") for i in range(1234)])
    batches: list[list[bytes]] = []

    async def handler(batch: list) -> None:  # type: ignore[type-arg]
        batches.append([m.data for m in batch])
        for m in batch:
            await m.ack()

    consumer = BatchConsumer(
        js=js,
        stream=subjects.INTERACTIONS_STREAM,
        config=work_consumer(
            durable="backlog",
            filter_subject=subjects.all_interactions(),
            ack_wait=timedelta(seconds=30),
            max_deliver=3,
        ),
        handler=handler,
        batch_size=500,
        idle_timeout=0.5,
    )
    await consumer.start()
    await eventually(lambda: asyncio.sleep(0, sum(map(len, batches)) >= 1234), timeout=20)
    await js.publish(subject, b"late", headers={MSG_ID: "late"})  # a lone one: at once
    await eventually(lambda: asyncio.sleep(0, sum(map(len, batches)) >= 1235), timeout=5)
    await consumer.stop()
    taken = [data for batch in batches for data in batch]
    assert sorted(taken) == sorted([f"m{i}".encode() for i in range(1234)] + [b"late"])
    assert max(map(len, batches)) == 500 and len(batches) <= 5, [len(b) for b in batches]
    assert batches[-1] == [b"late"]
    info = await js.consumer_info(subjects.INTERACTIONS_STREAM, "backlog")
    assert (info.num_pending, info.num_ack_pending) == (0, 0)


async def test_a_message_larger_than_max_payload_is_refused_before_it_reaches_the_server(
    nc: Client,
) -> None:
    """The server closes a connection that sends it one (and nats-py then never reconnects):
    headers count, so a body just under the limit is refused with its headers."""
    js = nc.jetstream()
    await ensure_streams(js, stream_configs(StreamSettings()))
    limit = nc.max_payload
    body = b"x" * (limit - 10)
    message = Outgoing(subjects.archive(source="generic"), body, "big", headers={"Sh-Source": "generic"})
    with pytest.raises(MessageTooLarge, match=f"larger than the {limit} bytes"):
        await publish_pipelined(js, [message])
    assert nc.is_connected
    small = Outgoing(subjects.archive(source="generic"), b"x" * (limit - 200), "fits")
    await publish_pipelined(js, [small])
    assert nc.is_connected


async def test_a_dead_letter_of_a_message_at_the_limit_is_cut_to_fit_and_says_so(nc: Client) -> None:
    js = nc.jetstream()
    await ensure_streams(js, stream_configs(StreamSettings()))
    subject = subjects.archive(source="generic")
    body = b"y" * (nc.max_payload - 100)
    await js.publish(subject, body, headers={MSG_ID: "at-limit"})
    sub = await js.pull_subscribe(subject, durable="reader")
    msg = (await sub.fetch(1, timeout=5))[0]
    await dead_letter(js, msg, stream=subjects.ARCHIVE_STREAM, consumer="reader", error="x" * 1500)
    dlq = await js.pull_subscribe(
        subjects.dead_letter(stream=subjects.ARCHIVE_STREAM, consumer="reader"), durable="d"
    )
    kept = (await dlq.fetch(1, timeout=5))[0]
    assert kept.headers is not None and kept.headers[TRUNCATED] == str(len(body))
    assert body.startswith(kept.data) and len(kept.data) < len(body)
    assert nc.is_connected
