"""What the timeline keeps of each event: the sentence a person reads, who did it, when, whom it
is about; and what becomes of each command. Every event type of SH_EVENTS, and any valid one."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, reject
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from services.api.history import (
    SUMMARY_MAX,
    CommandOutcomeEntry,
    TimelineEntry,
    caused_by,
    decode,
    entry_of,
    outcome_of,
    row_id,
    summary,
    unstorable,
)
from shared.events import (
    AlertAcknowledged,
    AlertChannel,
    AlertFailed,
    AlertKind,
    AlertSent,
    Author,
    CommandApplied,
    CommandRejected,
    ConnectorProblem,
    ConversationAssigned,
    ConversationOpened,
    ConversationPaused,
    ConversationReopened,
    ConversationResolved,
    ConversationResponded,
    ConversationResumed,
    DeadlineChanged,
    DeadlineKind,
    Event,
    Platform,
    Rejection,
    ReplyEvent,
    ReplyState,
)
from tests.fuzz import properties

T = datetime(2026, 12, 1, 13, 40, tzinfo=UTC)
LATER = T + timedelta(minutes=3)
CONV = "c0ffee" + "0" * 26
AROUND = {"tenant_id": "acme", "conversation_id": CONV, "account_id": "acme-fb", "occurred_at": LATER}


def entry(event: Event, message_id: str = "m:1", *, issued_by: str | None = None) -> TimelineEntry:
    made = entry_of(event, message_id=message_id, seq=7, issued_by=issued_by)
    assert made is not None
    return made


def sentence(event: Event, *, message_id: str = "m:1", issued_by: str | None = None) -> str:
    return entry(event, message_id, issued_by=issued_by).summary


def test_an_opened_conversation_says_where_and_by_whom_with_its_topic_and_priority() -> None:
    event = ConversationOpened(
        **AROUND, platform=Platform.facebook, thread_id="t1", interaction_id="i1", opened_at=T,
        author=Author(id="991", name="Jane Doe", handle="jane"), topic="billing", priority="high",
    )  # fmt: skip
    kept = entry(event, "opened:" + CONV)
    assert kept.summary == "Opened on facebook by Jane Doe (@jane), topic billing, priority high"
    assert (kept.id, kept.seq, kept.kind, kept.actor) == (
        "opened:" + CONV,
        7,
        "conversation.opened",
        "router",
    )
    assert (kept.tenant_id, kept.conversation_id, kept.person_id, kept.at) == ("acme", CONV, None, T)
    assert json.loads(kept.detail) == json.loads(event.model_dump_json())
    plain = event.model_copy(
        update={"author": Author(id="991", handle="@jane"), "topic": None, "priority": "normal"}
    )
    assert sentence(plain) == "Opened on facebook by @jane"
    assert sentence(event.model_copy(update={"author": Author(id="991")})).startswith(
        "Opened on facebook by an author"
    )


def test_an_assignment_names_the_owner_and_why_and_whom_it_was_taken_from() -> None:
    event = ConversationAssigned(
        **AROUND, team_id="t", owner_id="maria", assigned_at=T, step="continuity",
        reason="continuity: she answered this author last",
    )  # fmt: skip
    kept = entry(event)
    assert kept.summary == "Assigned to maria (continuity: she answered this author last)"
    assert (kept.person_id, kept.actor, kept.at) == ("maria", "router", T)
    moved = event.model_copy(update={"previous_owner_id": "li", "reason": "rosa gave it"})
    assert sentence(moved) == "Assigned to maria, from li (rosa gave it)"
    queued = event.model_copy(
        update={"owner_id": None, "reason": "team support: 2 members busy; waiting in the team queue"}
    )
    assert sentence(queued) == "Not assigned (team support: 2 members busy; waiting in the team queue)"
    assert entry(queued).person_id is None
    freed = queued.model_copy(update={"previous_owner_id": "li", "reason": "li is offline"})
    assert sentence(freed) == "Unassigned from li (li is offline)"


def test_a_deadline_says_what_is_due_when_and_when_it_warns_in_utc() -> None:
    event = DeadlineChanged(
        **AROUND, deadline_version=1, kind=DeadlineKind.first_response, owner_id="maria", started_at=T,
        warn_at=T.replace(hour=13, minute=55), due_at=T.replace(hour=14, minute=5), reason="first_response",
    )  # fmt: skip
    kept = entry(event)
    assert kept.summary == "Deadline: first response due 14:05 UTC (warning 13:55)"
    assert (kept.person_id, kept.actor, kept.at, kept.kind) == ("maria", "router", LATER, "deadline.changed")
    days = event.model_copy(
        update={"due_at": datetime(2026, 12, 3, 9, 0, tzinfo=UTC), "warn_at": datetime(2026, 12, 2, 16, 0, tzinfo=UTC),
                "reason": "owner changed", "kind": DeadlineKind.resolution}
    )  # fmt: skip
    assert (
        sentence(days)
        == "Deadline: resolution due 2026-12-03 09:00 UTC (warning 2026-12-02 16:00); owner changed"
    )
    no_warning = event.model_copy(update={"warn_at": None})
    assert sentence(no_warning) == "Deadline: first response due 14:05 UTC"
    cleared = event.model_copy(update={"due_at": None, "warn_at": None, "kind": None, "reason": "paused"})
    assert sentence(cleared) == "Deadline cleared: paused"
    assert sentence(cleared.model_copy(update={"reason": "cleared"})) == "Deadline cleared"


def test_replies_reopenings_and_a_reply_marked_by_hand() -> None:
    replied = ConversationResponded(**AROUND, interaction_id="i2", responded_at=T)
    assert (sentence(replied), entry(replied).at) == ("The brand replied in the thread", T)
    by_hand = ConversationResponded(**AROUND, interaction_id="", responded_at=T)
    assert sentence(by_hand) == "Marked responded"
    kept = entry(by_hand, f"responded:{CONV}:cmd-abc123456", issued_by="kai")
    assert (kept.summary, kept.actor) == ("Marked responded by kai", "kai")
    # a reply in the thread is the brand's, whatever command is around
    assert entry(replied, issued_by="kai").actor == "router"
    reopened = ConversationReopened(**AROUND, interaction_id="i3", reopened_at=T)
    assert (sentence(reopened), entry(reopened).at) == ("Reopened: the customer wrote again", T)


def test_pauses_resumes_and_resolves_name_who_asked_when_known() -> None:
    paused = ConversationPaused(**AROUND, reason="waiting on the customer", paused_at=T)
    assert (sentence(paused), entry(paused).actor) == ("Paused: waiting on the customer", "router")
    kept = entry(paused, issued_by="kai")
    assert (kept.summary, kept.actor, kept.at) == ("Paused by kai: waiting on the customer", "kai", T)
    resumed = ConversationResumed(**AROUND, resumed_at=T)
    assert sentence(resumed) == "Resumed: the clock runs again"
    assert sentence(resumed, issued_by="li") == "Resumed by li: the clock runs again"
    resolved = ConversationResolved(**AROUND, reason="resolved by kai", resolved_at=T)
    assert sentence(resolved) == "Resolved by kai"
    assert sentence(resolved, issued_by="kai") == "Resolved by kai"
    spam = resolved.model_copy(update={"reason": "topic spam: recorded, no answer needed"})
    assert sentence(spam) == "Resolved: topic spam: recorded, no answer needed"
    assert sentence(spam, issued_by="rosa") == "Resolved by rosa: topic spam: recorded, no answer needed"
    # the router's own timers (auto-resolve) are no person's doing
    quiet = resolved.model_copy(update={"reason": "no new message for 2 days after the reply"})
    assert (sentence(quiet, issued_by="router"), entry(quiet, issued_by="router").actor) == (
        "Resolved: no new message for 2 days after the reply",
        "router",
    )
    # who asked is for the events a command causes directly, not the assignments around them
    assigned = ConversationAssigned(**AROUND, team_id="t", owner_id="maria", reason="owns it", assigned_at=T)
    assert entry(assigned, issued_by="kai").actor == "router"


def test_the_command_that_caused_an_event_is_read_from_the_routers_message_id() -> None:
    assert caused_by(f"paused:{CONV}:cmd-0a1b2c3d4e") == "0a1b2c3d4e"
    assert caused_by(f"assigned:{CONV}:cmd-0a1b2c3d4e:claim:kai") == "0a1b2c3d4e"
    assert caused_by(f"deadline:{CONV}:3") is None
    assert caused_by("cmd-0a1b2c3d4e") is None
    assert caused_by(f"paused:{CONV}:cmd-") is None


def outcome_fields(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "tenant_id": "acme", "occurred_at": LATER, "command_id": "0a1b2c3d4e5f", "command_type": "conversation.claim",
        "issued_by": "kai", "issued_at": T, "conversation_id": CONV, "person_id": "maria",
    }  # fmt: skip
    return {**fields, **changes}


def test_a_rejected_command_says_what_was_asked_by_whom_and_why_not() -> None:
    event = CommandRejected(
        **outcome_fields(), code=Rejection.at_capacity, reason="maria is at capacity (2/2)"
    )
    kept = entry(event, "outcome:0a1b2c3d4e5f")
    assert kept.summary == "claim by kai rejected: maria is at capacity (2/2)"
    assert (kept.actor, kept.person_id, kept.conversation_id, kept.at) == ("kai", "maria", CONV, LATER)
    assert outcome_of(event) == CommandOutcomeEntry(
        command_id="0a1b2c3d4e5f", tenant_id="acme", conversation_id=CONV, person_id="maria",
        command_type="conversation.claim", issued_by="kai", outcome="rejected", code="at_capacity",
        reason="maria is at capacity (2/2)", at=LATER,
    )  # fmt: skip
    assert sentence(event.model_copy(update={"reason": ""})) == "claim by kai rejected (at_capacity)"


def test_an_applied_command_says_what_it_changed() -> None:
    event = CommandApplied(
        **outcome_fields(
            command_type="person.set_status", conversation_id=None, tenant_id="", person_id="kai"
        ),
        summary="kai is away",
    )
    kept = entry(event)
    assert (kept.summary, kept.actor, kept.tenant_id, kept.conversation_id) == (
        "set status by kai applied: kai is away", "kai", "", None,
    )  # fmt: skip
    outcome = outcome_of(event)
    assert outcome is not None
    assert (outcome.outcome, outcome.code, outcome.reason, outcome.person_id) == (
        "applied",
        "",
        "kai is away",
        "kai",
    )
    marked = event.model_copy(update={"command_type": "conversation.mark_responded", "summary": ""})
    assert sentence(marked) == "mark responded by kai applied"


@pytest.mark.parametrize(
    ("kind", "step", "channel", "person", "expected"),
    [
        (AlertKind.breach, "breach", AlertChannel.email, "rosa", "Breach alert sent to rosa by email"),
        (AlertKind.warning, "warning", AlertChannel.push, "maria", "Warning sent to maria by Web Push"),
        (AlertKind.escalation, "escalation-2", AlertChannel.apprise, "boss", "Escalation alert (escalation-2) sent to boss by Apprise"),
        (AlertKind.assignment, "assigned.email", AlertChannel.email, "li", "Assignment notice sent to li by email"),
        (AlertKind.connector, "failing", AlertChannel.email, None, "Connector alert sent to the operator by email"),
    ],
)  # fmt: skip
def test_an_alert_sent_says_which_to_whom_and_how(
    kind: AlertKind, step: str, channel: AlertChannel, person: str | None, expected: str
) -> None:
    event = AlertSent(
        tenant_id="acme", occurred_at=LATER, alert_id="a1", alert_kind=kind, step=step, channel=channel,
        person_id=person, conversation_id=CONV, deadline_version=1, detail="<id@mail>",
    )  # fmt: skip
    kept = entry(event, "alert:a1:1:sent")
    assert (kept.summary, kept.actor, kept.person_id, kept.at) == (expected, "notify", person, LATER)
    assert outcome_of(event) is None


def test_a_failed_alert_says_why_and_whether_it_is_retried() -> None:
    event = AlertFailed(
        tenant_id="acme", occurred_at=LATER, alert_id="a1", alert_kind=AlertKind.breach, step="breach",
        channel=AlertChannel.email, person_id="rosa", conversation_id=CONV, error="550 mailbox\r\nunavailable",
        final=True,
    )  # fmt: skip
    assert sentence(event) == "Breach alert to rosa by email failed: 550 mailbox unavailable; given up"
    later = event.model_copy(update={"final": False, "retry_at": LATER + timedelta(minutes=5)})
    assert (
        sentence(later)
        == "Breach alert to rosa by email failed: 550 mailbox unavailable; retrying at 13:48 UTC"
    )
    assert sentence(later.model_copy(update={"retry_at": None})).endswith("; it will be retried")


def test_an_acknowledgement_is_the_persons_doing() -> None:
    event = AlertAcknowledged(
        tenant_id="acme", occurred_at=LATER, conversation_id=CONV, deadline_version=2, person_id="kai",
        acknowledged_at=T, command_id="0a1b2c3d4e5f",
    )  # fmt: skip
    kept = entry(event, "ack:0a1b2c3d4e5f")
    assert (kept.summary, kept.actor, kept.person_id, kept.at) == (
        "kai acknowledged the alert: escalation stopped", "kai", "kai", T,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("platform", "method", "state", "error", "said"),
    [
        (Platform.facebook, "send_api", ReplyState.sent, "", "Reply sent by kai on Messenger"),
        (Platform.facebook, "human_agent", ReplyState.sent, "", "Reply sent by kai on Messenger"),
        (Platform.facebook, "comment_reply", ReplyState.sent, "", "Reply sent by kai on Facebook"),
        (
            Platform.instagram,
            "private_reply",
            ReplyState.in_doubt,
            "timed out",
            "Reply in doubt: check on Instagram",
        ),
        (Platform.x, "post", ReplyState.sending, "", "Sending kai's reply"),
        (
            Platform.x,
            "post",
            ReplyState.failed,
            "Reply to this conversation is not allowed because you have not been mentioned",
            "Reply failed: Reply to this conversation is not allowed because you have not been mentioned",
        ),
        (Platform.mastodon, "status", ReplyState.failed, "", "Reply by kai failed on Mastodon"),
    ],
)
def test_a_reply_says_who_wrote_it_where_and_what_became_of_it(
    platform: Platform, method: str, state: ReplyState, error: str, said: str
) -> None:
    event = ReplyEvent(
        **AROUND,
        reply_id="reply-1",
        platform=platform,
        person_id="kai",
        state=state,
        method=method,
        error=error,
    )
    kept = entry(event)
    assert kept.summary == said
    assert (kept.actor, kept.person_id, kept.conversation_id, kept.kind) == (
        "kai",
        "kai",
        CONV,
        "reply.changed",
    )
    assert decode(event.model_dump_json().encode()) == event  # the consumer keeps it (no dead letter)
    assert outcome_of(event) is None


def test_a_connector_problem_is_no_part_of_a_timeline() -> None:
    event = ConnectorProblem(
        tenant_id="acme", account_id="acme-fb", platform=Platform.facebook, problem="failing", detail="token revoked",
        since=T,
    )  # fmt: skip
    assert entry_of(event, message_id="ops:1", seq=1) is None
    assert outcome_of(event) is None


def test_a_summary_is_one_line_and_platform_text_is_cut_to_fit() -> None:
    event = ConversationOpened(
        **AROUND, platform=Platform.x, thread_id="t", interaction_id="i", opened_at=T,
        author=Author(id="1", name="Evil\nName\u2028\x85" + "x" * 300, handle="h" * 300),
    )  # fmt: skip
    kept = sentence(event)
    assert len(kept) == SUMMARY_MAX and kept.endswith("…")
    assert kept.startswith("Opened on x by Evil Name x") and len(kept.splitlines()) == 1
    assert summary("a\x00b\tc  \r\n d\ud800") == "ab c d\ufffd"


def test_an_id_longer_than_the_column_is_kept_by_its_hash_and_a_row_that_cannot_be_stored_is_named() -> None:
    assert row_id("x" * 200) == "x" * 200
    long = row_id("x" * 201)
    assert long.startswith("sha256:") and len(long) <= 200 and long == row_id("x" * 201) != row_id("y" * 201)
    fine = entry(ConversationResumed(**AROUND, resumed_at=T))
    assert unstorable(fine) is None
    wide = entry(ConversationResumed(**{**AROUND, "conversation_id": "c" * 33}, resumed_at=T))
    assert unstorable(wide) == "conversation_id of 33 characters is longer than the 32 the timeline keeps"
    nul = entry(ConversationResumed(**{**AROUND, "tenant_id": "ac\x00me"}, resumed_at=T))
    assert unstorable(nul) == "tenant_id holds a character no database keeps (NUL or a lone surrogate)"
    rejected = CommandRejected(**outcome_fields(command_id="z" * 65), code=Rejection.invalid, reason="no")
    outcome = outcome_of(rejected)
    assert outcome is not None
    assert unstorable(outcome) == "command_id of 65 characters is longer than the 64 the commandoutcome keeps"


def test_decode_reads_every_event_of_the_stream_and_refuses_anything_else() -> None:
    event = ConversationPaused(**AROUND, reason="waiting on the customer", paused_at=T)
    assert decode(event.model_dump_json().encode()) == event
    for garbage in (b"", b"{}", b"not json", b'{"type": "conversation.paused", "version": 2}',
                    event.model_dump_json().replace('"version":1', '"version":2').encode()):  # fmt: skip
        with pytest.raises(ValueError):
            decode(garbage)


# Any valid event of each type: the mapping never fails, the sentence is one line, short enough.

TEXT = st.text(st.characters(codec=None), max_size=700)  # lone surrogates, control characters, all of Unicode
WHEN = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.sampled_from([UTC])
)
MAYBE_WHEN = st.none() | WHEN
MAYBE = st.none() | TEXT
BASE = {"tenant_id": TEXT, "occurred_at": WHEN, "correlation_id": TEXT, "event_id": TEXT}
CONVERSATION = {**BASE, "conversation_id": TEXT, "account_id": TEXT}
AUTHOR = st.builds(Author, id=st.text(min_size=1, max_size=20).filter(str.isalnum), name=TEXT, handle=TEXT)
COMMAND = {
    **BASE, "command_id": TEXT, "command_type": TEXT, "issued_by": TEXT, "issued_at": WHEN,
    "conversation_id": MAYBE, "person_id": MAYBE,
}  # fmt: skip
DELIVERY = {
    **BASE, "alert_id": TEXT, "alert_kind": st.sampled_from(AlertKind), "step": TEXT,
    "channel": st.sampled_from(AlertChannel), "person_id": MAYBE, "conversation_id": MAYBE,
    "deadline_version": st.none() | st.integers(),
}  # fmt: skip

EVENTS: dict[type[BaseModel], dict[str, st.SearchStrategy[Any]]] = {
    ConversationOpened: {
        **CONVERSATION, "platform": st.sampled_from(Platform), "thread_id": TEXT, "author": AUTHOR,
        "interaction_id": TEXT, "opened_at": WHEN, "topic": MAYBE, "priority": TEXT, "config_version": st.integers(),
    },
    ConversationAssigned: {
        **CONVERSATION, "team_id": MAYBE, "owner_id": MAYBE, "reason": TEXT, "assigned_at": WHEN, "step": TEXT,
        "previous_owner_id": MAYBE,
    },
    ConversationResponded: {**CONVERSATION, "interaction_id": TEXT, "responded_at": WHEN},
    ConversationReopened: {**CONVERSATION, "interaction_id": TEXT, "reopened_at": WHEN},
    ConversationPaused: {**CONVERSATION, "reason": TEXT, "paused_at": WHEN},
    ConversationResumed: {**CONVERSATION, "resumed_at": WHEN},
    ConversationResolved: {**CONVERSATION, "reason": TEXT, "resolved_at": WHEN},
    DeadlineChanged: {
        **CONVERSATION, "deadline_version": st.integers(min_value=1), "kind": st.none() | st.sampled_from(DeadlineKind),
        "owner_id": MAYBE, "started_at": MAYBE_WHEN, "warn_at": MAYBE_WHEN, "due_at": MAYBE_WHEN, "reason": TEXT,
        "priority": TEXT,
    },
    CommandApplied: {**COMMAND, "summary": TEXT},
    CommandRejected: {**COMMAND, "code": st.sampled_from(Rejection), "reason": TEXT},
    AlertSent: {**DELIVERY, "detail": TEXT},
    AlertFailed: {**DELIVERY, "error": TEXT, "final": st.booleans(), "retry_at": MAYBE_WHEN},
    AlertAcknowledged: {
        **BASE, "conversation_id": TEXT, "deadline_version": st.integers(), "person_id": TEXT,
        "acknowledged_at": WHEN, "command_id": MAYBE,
    },
    ReplyEvent: {
        **CONVERSATION, "reply_id": TEXT, "platform": st.sampled_from(Platform), "person_id": TEXT,
        "state": st.sampled_from(ReplyState), "method": TEXT, "platform_id": MAYBE, "url": MAYBE, "error": TEXT,
        "retry": st.booleans(),
    },
}  # fmt: skip


@st.composite
def valid_events(draw: st.DrawFn) -> Event:
    model = draw(st.sampled_from(list(EVENTS)))
    try:
        event = model.model_validate(draw(st.fixed_dictionaries(EVENTS[model])))
    except ValidationError:  # e.g. a time that moved out of years 1 to 9999 in UTC
        reject()
    assert isinstance(event, Event)
    return event


@properties(400)
@given(event=valid_events(), message_id=st.text(st.characters(codec=None), max_size=300), by=MAYBE)
def test_any_valid_event_maps_to_one_line_of_at_most_500_characters(
    event: Event, message_id: str, by: str | None
) -> None:
    kept = entry_of(event, message_id=message_id, seq=3, issued_by=by)
    assert kept is not None
    assert kept.summary and len(kept.summary) <= SUMMARY_MAX
    assert len(kept.summary.splitlines()) == 1 and kept.summary == kept.summary.strip()
    assert kept.kind == event.model_dump()["type"] and kept.tenant_id == event.tenant_id and kept.seq == 3
    assert len(kept.id) <= 200
    json.loads(kept.detail)
    outcome = outcome_of(event)
    assert (outcome is not None) == isinstance(event, CommandApplied | CommandRejected)
    unstorable(kept)
    if outcome is not None:
        assert outcome.outcome in ("applied", "rejected")
        unstorable(outcome)


@properties(200)
@given(event=valid_events())
def test_any_event_read_back_from_its_json_is_the_same_entry(event: Event) -> None:
    """The consumer stores what it decoded; names who asked later from the detail it kept."""
    kept = entry(event)
    try:
        again = decode(kept.detail.encode())
    except ValueError:  # a lone surrogate, escaped: JSON readers refuse it, and so no message holds one
        return
    assert entry(again) == kept
