"""Arming and cancelling timers: one JetStream schedule subject per conversation."""

import asyncio
import json
import logging
import uuid
from collections.abc import Iterable
from datetime import datetime

from nats.js import JetStreamContext

from services.notify.timers import TimerPayload, schedulable
from shared import subjects
from shared.jetstream import Outgoing, at_header, publish_pipelined

log = logging.getLogger(__name__)

# A fired message waits for notify at most this long, then expires: storage stays
# bounded by what is armed. A notify down for longer loses no alert, since the
# reconciler re-arms every armed deadline at start.
FIRED_TTL = "24h"


def _schedule(timer: TimerPayload, *, again: bool) -> Outgoing:
    msg_id = f"sched:{timer.conversation_id}:{timer.deadline_version}:{timer.step}:{timer.attempt}"
    if again:
        msg_id += f":{uuid.uuid4().hex[:8]}"
    retry = timer.step == "retry"
    keys = {"tenant_id": timer.tenant_id, "conversation_id": timer.conversation_id}
    return Outgoing(
        subject=subjects.retry_schedule(**keys) if retry else subjects.timer_schedule(**keys),
        payload=timer.model_dump_json().encode(),
        # The version (and attempt) in the id: a re-arm inside the duplicate
        # window must not be taken for a duplicate of the previous one.
        msg_id=msg_id,
        headers={
            "Nats-Schedule": at_header(timer.at),
            "Nats-Schedule-Target": subjects.retry_fired(**keys) if retry else subjects.timer_fired(**keys),
            "Nats-Schedule-TTL": FIRED_TTL,
        },
    )


class TimerScheduler:
    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    async def arm(self, timers: Iterable[TimerPayload], *, again: bool = False) -> None:
        """Arm (or move) each conversation's next timer; publishing again replaces it.

        `again` arms a timer that may have been armed before with the same version
        (the reconciler, a stale timer's repair): its message id must then differ,
        or JetStream would drop it as a duplicate.
        """
        timers = list(timers)
        beyond = [timer for timer in timers if not schedulable(timer.at)]
        for timer in beyond:  # a caller's mistake: published, it would fire at once
            log.error(
                "timer not armed: after what NATS can schedule",
                extra={
                    "conversation_id": timer.conversation_id,
                    "step": timer.step,
                    "at": timer.at.isoformat(),
                },
            )
        await publish_pipelined(
            self._js, [_schedule(timer, again=again) for timer in timers if schedulable(timer.at)]
        )

    async def arm_groups(
        self, pairs: Iterable[tuple[str, str]], *, at: datetime, again: bool = False
    ) -> None:
        """Arm the end of a burst window for each (person, channel); within one window the same
        message id, so the first arm holds and the window is never pushed further out."""
        outgoing = []
        for person, channel in pairs:
            msg_id = f"group:{person}:{channel}:{at.timestamp():.0f}"
            if again:
                msg_id += f":{uuid.uuid4().hex[:8]}"
            outgoing.append(
                Outgoing(
                    subject=subjects.group_schedule(person_id=person, channel=channel),
                    payload=b"{}",
                    msg_id=msg_id,
                    headers={
                        "Nats-Schedule": at_header(at),
                        "Nats-Schedule-Target": subjects.group_fired(person_id=person, channel=channel),
                        "Nats-Schedule-TTL": FIRED_TTL,
                    },
                )
            )
        await publish_pipelined(self._js, outgoing)

    async def cancel(self, keys: Iterable[tuple[str, str]]) -> None:
        """Cancel the timers of (tenant, conversation) pairs by purging their schedule subjects."""
        await asyncio.gather(
            *(
                self._js.purge_stream(
                    subjects.TIMERS_STREAM,
                    subject=subjects.timer_schedule(tenant_id=tenant, conversation_id=conversation),
                )
                for tenant, conversation in keys
            )
        )

    async def armed_conversations(self) -> set[str]:
        """Conversation ids that have a schedule waiting on the server.

        The server lists at most 100,000 subjects per answer: page with `offset`.
        """
        armed: set[str] = set()
        nc = self._js._nc
        while True:
            request = {"subjects_filter": subjects.timer_schedule_all(), "offset": len(armed)}
            reply = await nc.request(
                f"$JS.API.STREAM.INFO.{subjects.TIMERS_STREAM}", json.dumps(request).encode(), timeout=30
            )
            answer = json.loads(reply.data)
            if "error" in answer:
                raise RuntimeError(f"stream info failed: {answer['error']}")
            page = answer.get("state", {}).get("subjects") or {}
            armed.update(subject.rsplit(".", 1)[1] for subject in page)
            total = answer.get("total", len(page))
            if not page or len(armed) >= total:
                return armed

    async def storage(self) -> tuple[int, int]:
        """Messages and bytes held by the timer stream."""
        info = await self._js.stream_info(subjects.TIMERS_STREAM)
        return info.state.messages, info.state.bytes
