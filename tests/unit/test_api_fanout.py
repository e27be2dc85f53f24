"""Who sees each event live (services/api/fanout.py): a matrix of viewers of two tenants against
every kind of event (a conversation's, a reassignment across teams, a deadline naming its owner,
a person's, a tenant's, a command's outcome to whoever gave it), the facts an event leaves, the
index the hub narrows sessions with, and the Server-Sent Events a browser receives."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.api.access import Action, Role, Team, Viewer
from services.api.fanout import (
    Audience,
    Facts,
    PersonFacts,
    Sight,
    audience_of,
    facts_after,
    may_see,
    payload_of,
    sequence_of,
)
from services.api.views import CommandOutcomeView, TimelineEntry
from shared.events import (
    AlertChannel,
    AlertKind,
    AlertSent,
    CommandApplied,
    CommandRejected,
    ConnectorProblem,
    ConversationAssigned,
    ConversationPaused,
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
CONV = "c0ffee" + "0" * 26
CARE = Team("t-care", "kettle")  # lead rosa; rosa, kai, sam
SOCIAL = Team("t-social", "kettle")  # sid
NORTH = Team("t-north", "northwind")  # sam, nils

VIEWERS: dict[str, Viewer] = {
    "ada": Viewer.of_person("ada", grants=[("agency_admin", "")], leads=[], teams=[]),
    "tina": Viewer.of_person("tina", grants=[("tenant_admin", "kettle")], leads=[], teams=[]),
    "nadia": Viewer.of_person("nadia", grants=[("tenant_admin", "northwind")], leads=[], teams=[]),
    "rosa": Viewer.of_person("rosa", grants=[], leads=[CARE], teams=[CARE]),
    "kai": Viewer.of_person("kai", grants=[], leads=[], teams=[CARE]),
    "sid": Viewer.of_person("sid", grants=[], leads=[], teams=[SOCIAL]),
    "sam": Viewer.of_person("sam", grants=[], leads=[], teams=[CARE, NORTH]),
    "nils": Viewer.of_person("nils", grants=[], leads=[], teams=[NORTH]),
    "vera": Viewer.of_person("vera", grants=[("client_viewer", "kettle")], leads=[], teams=[]),
    "kettle-token": Viewer.of_token("tok-1", name="ops", tenant_id="kettle", role=Role.tenant_admin),
}
PEOPLE: dict[str, PersonFacts] = {  # what the hub reads of each person from the database
    "kai": PersonFacts(frozenset({CARE})),
    "sam": PersonFacts(frozenset({CARE, NORTH})),
    "nils": PersonFacts(frozenset({NORTH})),
    "vera": PersonFacts(tenants=frozenset({"kettle"})),
}


def conv(tenant: str = "kettle", **values: object) -> dict[str, object]:
    return {
        "tenant_id": tenant,
        "conversation_id": CONV,
        "account_id": f"{tenant}-fb",
        "occurred_at": T,
        **values,
    }


def paused(tenant: str = "kettle") -> ConversationPaused:
    return ConversationPaused(**conv(tenant), reason="waiting on the customer", paused_at=T)


def assigned(team: Team, owner: str | None, previous: str | None) -> ConversationAssigned:
    return ConversationAssigned(
        **conv(team.tenant_id),
        team_id=team.id,
        owner_id=owner,
        previous_owner_id=previous,
        reason="reassigned by rosa",
        assigned_at=T,
        step="reassign",
    )


def deadline(owner: str | None) -> DeadlineChanged:
    return DeadlineChanged(
        **conv(),
        deadline_version=2,
        kind=DeadlineKind.first_response,
        owner_id=owner,
        started_at=T,
        warn_at=T + timedelta(minutes=30),
        due_at=T + timedelta(hours=1),
        reason="first response",
    )


def outcome(
    *,
    tenant: str = "kettle",
    conversation: str | None = None,
    person: str | None = None,
    issued_by: str = "router",
    rejected: bool = False,
    command_type: str = "conversation.claim",
) -> CommandApplied | CommandRejected:
    values: dict[str, object] = {
        "tenant_id": tenant,
        "occurred_at": T,
        "command_id": "cmd-12345678",
        "command_type": command_type,
        "issued_by": issued_by,
        "issued_at": T,
        "conversation_id": conversation,
        "person_id": person,
    }
    if rejected:
        return CommandRejected(**values, code=Rejection.at_capacity, reason="kai is at capacity (5/5)")
    return CommandApplied(**values, summary="done")


def who_sees(audience: Audience) -> set[str]:
    return {name for name, viewer in VIEWERS.items() if may_see(Sight.of(viewer), audience)}


# -- the matrix ---------------------------------------------------------------------------------

KETTLE_ADMINS = {"ada", "tina", "kettle-token"}


@pytest.mark.parametrize(
    ("case", "event", "before", "person", "seen_by"),
    [
        (
            "kai's conversation in care",
            paused(),
            Facts("kettle", CARE.id, "kai"),
            None,
            KETTLE_ADMINS | {"rosa", "kai", "sam"},
        ),
        (
            "care's queue",
            paused(),
            Facts("kettle", CARE.id, None),
            None,
            KETTLE_ADMINS | {"rosa", "kai", "sam"},
        ),
        (
            "kai's own conversation in a team he is not in",
            paused(),
            Facts("kettle", SOCIAL.id, "kai"),
            None,
            KETTLE_ADMINS | {"sid", "kai"},
        ),
        (
            "a conversation of the other tenant",
            paused("northwind"),
            Facts("northwind", NORTH.id, "nils"),
            None,
            {"ada", "nadia", "sam", "nils"},
        ),
        (
            "reassigned from kai in care to sid in social: both sides see it go",
            assigned(SOCIAL, "sid", previous="kai"),
            Facts("kettle", CARE.id, "kai"),
            None,
            KETTLE_ADMINS | {"rosa", "kai", "sam", "sid"},
        ),
        (
            "taken from social's queue into care",
            assigned(CARE, "kai", previous=None),
            Facts("kettle", SOCIAL.id, None),
            None,
            KETTLE_ADMINS | {"rosa", "kai", "sam", "sid"},
        ),
        (
            "a deadline naming kai on social's queue: kai sees his new conversation",
            deadline("kai"),
            Facts("kettle", SOCIAL.id, None),
            None,
            KETTLE_ADMINS | {"sid", "kai"},
        ),
        (
            "a conversation nothing is known of: its tenant's admins only",
            paused(),
            None,
            None,
            KETTLE_ADMINS,
        ),
        (
            "facts of another tenant are not believed",
            paused(),
            Facts("northwind", NORTH.id, "nils"),
            None,
            KETTLE_ADMINS,
        ),
        (
            "kai's status: his teams, his tenant, himself",
            outcome(tenant="", person="kai", command_type="person.set_status"),
            None,
            PEOPLE["kai"],
            KETTLE_ADMINS | {"rosa", "kai", "sam"},
        ),
        (
            "sam serves both tenants: both sides see his status",
            outcome(tenant="", person="sam", command_type="person.set_status"),
            None,
            PEOPLE["sam"],
            KETTLE_ADMINS | {"rosa", "kai", "sam", "nadia", "nils"},
        ),
        (
            "a digest alert to nils",
            AlertSent(
                tenant_id="northwind",
                occurred_at=T,
                alert_id="a1",
                alert_kind=AlertKind.digest,
                channel=AlertChannel.email,
                person_id="nils",
            ),
            None,
            PEOPLE["nils"],
            {"ada", "nadia", "sam", "nils"},
        ),
        (
            "a client viewer in no team is a person of her tenant",
            outcome(tenant="", person="vera", command_type="person.set_status"),
            None,
            PEOPLE["vera"],
            KETTLE_ADMINS,
        ),
        (
            "a person nothing is known of: the agency admin and themselves",
            outcome(tenant="", person="kai", command_type="person.set_status"),
            None,
            None,
            {"ada", "kai"},
        ),
        (
            "a tenant-wide recompute: who reads kettle's configuration",
            outcome(command_type="tenant.recompute", issued_by="apply"),
            None,
            None,
            KETTLE_ADMINS | {"rosa"},
        ),
        (
            "a refused claim reaches whoever gave it, even where they do not see",
            outcome(tenant="northwind", conversation=CONV, issued_by="kai", rejected=True),
            Facts("northwind", NORTH.id, "nils"),
            None,
            {"ada", "nadia", "sam", "nils", "kai"},
        ),
        (
            "a status kai was refused to set for nils: kai hears it",
            outcome(
                tenant="", person="nils", issued_by="kai", rejected=True, command_type="person.set_status"
            ),
            None,
            PEOPLE["nils"],
            {"ada", "nadia", "sam", "nils", "kai"},
        ),
        (
            "kai's reply that failed on a conversation of his: who sees the conversation",
            ReplyEvent(
                **conv(),
                reply_id="reply-1",
                platform=Platform.facebook,
                person_id="kai",
                state=ReplyState.failed,
                error="(#10) This message is sent outside of allowed window",
            ),
            Facts("kettle", CARE.id, "kai"),
            None,
            KETTLE_ADMINS | {"rosa", "kai", "sam"},
        ),
        (
            "a reply on northwind's conversation: northwind's side, not the kettle agent who wrote it",
            ReplyEvent(
                **conv("northwind"),
                reply_id="reply-2",
                platform=Platform.x,
                person_id="kai",
                state=ReplyState.sent,
            ),
            Facts("northwind", NORTH.id, "nils"),
            None,
            {"ada", "nadia", "sam", "nils"},
        ),
        (
            "a tenant command of tina's: she reads it, the agents do not",
            outcome(command_type="tenant.recompute", issued_by="tina"),
            None,
            None,
            KETTLE_ADMINS | {"rosa"},
        ),
    ],
)
def test_each_viewer_sees_exactly_what_the_roles_table_gives_them(
    case: str, event: Event, before: Facts | None, person: PersonFacts | None, seen_by: set[str]
) -> None:
    audience = audience_of(event, before, person)
    assert who_sees(audience) == seen_by, case
    assert "vera" not in who_sees(audience)  # a client viewer reads no conversation, live or not
    # The hub checks an event only against sessions of its tenants and the people it names:
    # nobody who may see it is left out of that index.
    for name in seen_by:
        sight = Sight.of(VIEWERS[name])
        assert (
            sight.tenants is None
            or sight.tenants & audience.tenants
            or (sight.person_id is not None and sight.person_id in audience.people)
        ), (case, name)


def test_a_reassignment_leaves_the_conversation_with_its_new_team_and_owner() -> None:
    before = Facts("kettle", CARE.id, "kai")
    moved = assigned(SOCIAL, "sid", previous="kai")
    after = facts_after(moved, before)
    assert after == Facts("kettle", SOCIAL.id, "sid")
    # what happens next to it is the new side's only
    assert who_sees(audience_of(paused(), after)) == KETTLE_ADMINS | {"sid"}


def test_the_previous_owner_named_by_the_event_sees_it_leave_whatever_was_believed() -> None:
    believed = Facts("kettle", CARE.id, "rosa")  # a row read after the event already moved on
    audience = audience_of(assigned(CARE, "sam", previous="kai"), believed)
    assert Facts("kettle", CARE.id, "kai") in audience.conversation
    assert Facts("kettle", CARE.id, "rosa") not in audience.conversation
    unknown = audience_of(assigned(SOCIAL, "sid", previous="kai"), None)
    assert "kai" in who_sees(unknown) and "rosa" not in who_sees(unknown)


def test_the_facts_an_event_leaves() -> None:
    care = Facts("kettle", CARE.id, None)
    assert facts_after(deadline("kai"), care) == Facts("kettle", CARE.id, "kai")
    assert facts_after(deadline(None), Facts("kettle", CARE.id, "kai")) == care
    assert facts_after(deadline("kai"), None) == Facts("kettle", None, "kai")
    assert facts_after(paused(), care) == care
    assert facts_after(paused(), None) is None
    assert facts_after(paused(), Facts("northwind", NORTH.id, "nils")) is None
    assert facts_after(outcome(tenant="", person="kai"), care) is None  # about no conversation


@properties(300)
@given(
    team=st.sampled_from([CARE, SOCIAL, NORTH]),
    owner=st.sampled_from([None, "kai", "sid", "sam", "nils", "rosa", "someone"]),
    viewer=st.sampled_from(sorted(VIEWERS)),
)
def test_a_conversation_event_is_seen_as_the_conversation_is(
    team: Team, owner: str | None, viewer: str
) -> None:
    """The same rule as every read: `Scope.covers` of the conversation."""
    facts = Facts(team.tenant_id, team.id, owner)
    expected = VIEWERS[viewer].may(Action.see, facts.target())
    assert may_see(Sight.of(VIEWERS[viewer]), audience_of(paused(team.tenant_id), facts)) == expected


# -- what the browser receives --------------------------------------------------------------------


def blocks(payload: bytes) -> list[dict[str, str]]:
    return [
        dict(line.split(": ", 1) for line in block.splitlines())
        for block in payload.decode().split("\n\n")
        if block
    ]


def test_an_event_is_one_timeline_event_with_its_stream_sequence_as_id() -> None:
    payload = payload_of(paused(), seq=41, message_id="paused:abc:1")
    assert payload is not None and payload.endswith(b"\n\n")
    [block] = blocks(payload)
    assert (block["id"], block["event"]) == ("41", "timeline")
    entry = TimelineEntry.model_validate_json(block["data"])
    assert (entry.id, entry.seq, entry.tenant, entry.conversation_id) == ("paused:abc:1", 41, "kettle", CONV)
    assert entry.kind == "conversation.paused" and entry.summary == "Paused: waiting on the customer"
    assert entry.detail["reason"] == "waiting on the customer"


def test_an_outcome_is_its_timeline_entry_then_its_outcome_with_the_id_on_the_last() -> None:
    payload = payload_of(outcome(conversation=CONV, issued_by="kai", rejected=True), seq=9, message_id="r:1")
    assert payload is not None
    entry, told = blocks(payload)
    assert "id" not in entry and entry["event"] == "timeline"
    assert told["id"] == "9" and told["event"] == "outcome"
    view = CommandOutcomeView.model_validate_json(told["data"])
    assert (view.command_id, view.status, view.code, view.reason) == (
        "cmd-12345678",
        "rejected",
        "at_capacity",
        "kai is at capacity (5/5)",
    )
    assert (view.issued_by, view.conversation_id, view.outcome_url) == (
        "kai",
        CONV,
        "/api/commands/cmd-12345678",
    )
    assert json.loads(entry["data"])["summary"] == "claim by kai rejected: kai is at capacity (5/5)"


def test_what_no_person_reads_is_not_sent() -> None:
    problem = ConnectorProblem(
        tenant_id="kettle",
        account_id="kettle-fb",
        platform=Platform.facebook,
        problem="silent",
        detail="no webhook for 6 hours",
        since=T,
    )
    assert payload_of(problem, seq=3, message_id="x") is None


# -- Last-Event-ID --------------------------------------------------------------------------------


def test_a_last_event_id_is_a_whole_number() -> None:
    assert sequence_of("0") == 0
    assert sequence_of("12345") == 12345
    assert sequence_of(str(2**63 - 1)) == 2**63 - 1
    for text in ("", "-1", "1.5", " 7", "7 ", "1e3", "٣", "99999999999999999999", str(2**63), "abc"):
        assert sequence_of(text) is None, text


@properties(400)
@given(text=st.text(max_size=40))
def test_any_last_event_id_is_a_sequence_or_nothing(text: str) -> None:
    seq = sequence_of(text)
    assert seq is None or (0 <= seq < 2**63 and text.isascii() and int(text) == seq)


def test_a_reply_event_is_a_timeline_event_the_conversation_page_refreshes_on() -> None:
    event = ReplyEvent(
        **conv(), reply_id="reply-1", platform=Platform.facebook, person_id="kai", state=ReplyState.sent,
        method="send_api", platform_id="m_1", url="https://www.facebook.com/m_1",
    )  # fmt: skip
    payload = payload_of(event, seq=9, message_id="reply:reply-1:sent")
    assert payload is not None
    [block] = blocks(payload)
    assert (block["id"], block["event"]) == ("9", "timeline")
    entry = TimelineEntry.model_validate_json(block["data"])
    assert entry.conversation_id == CONV and entry.kind == "reply.changed" and entry.actor == "kai"
    assert entry.summary == "Reply sent by kai on Messenger"
