from datetime import UTC, datetime, timedelta

from services.router.assignment import Candidate, choose_owner
from services.router.deadlines import SlaTargets, plan_deadline
from shared.events import DeadlineKind

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def test_round_robin_prefers_longest_since_last_assignment() -> None:
    candidates = [
        Candidate("maria", T0),
        Candidate("li", T0 - timedelta(minutes=5)),
        Candidate("sam", T0 - timedelta(minutes=1)),
    ]
    choice = choose_owner(candidates, team="care")
    assert choice.person_id == "li"
    assert "round robin" in choice.reason and "care" in choice.reason


def test_never_assigned_people_go_first_in_stable_order() -> None:
    candidates = [Candidate("sam", None), Candidate("maria", T0), Candidate("li", None)]
    assert choose_owner(candidates, team="care").person_id == "li"


def test_empty_team_queues() -> None:
    choice = choose_owner([], team="care")
    assert choice.person_id is None
    assert "queue" in choice.reason


def test_deadline_counts_from_when_the_person_wrote() -> None:
    sla = SlaTargets(first_response=timedelta(minutes=30), warn_before=timedelta(minutes=5))
    deadline = plan_deadline(
        kind=DeadlineKind.first_response,
        started_at=T0,
        sla=sla,
        now=T0 + timedelta(minutes=2),
        backfill_cutoff=timedelta(hours=24),
    )
    assert deadline is not None
    assert deadline.due_at == T0 + timedelta(minutes=30)
    assert deadline.warn_at == T0 + timedelta(minutes=25)


def test_next_response_uses_its_own_target() -> None:
    sla = SlaTargets(first_response=timedelta(minutes=30), next_response=timedelta(hours=2))
    deadline = plan_deadline(
        kind=DeadlineKind.next_response, started_at=T0, sla=sla, now=T0, backfill_cutoff=timedelta(hours=24)
    )
    assert deadline is not None and deadline.due_at == T0 + timedelta(hours=2)
    assert deadline.warn_at is None


def test_backfilled_interactions_never_get_a_deadline() -> None:
    sla = SlaTargets(first_response=timedelta(minutes=30))
    kwargs = {"kind": DeadlineKind.first_response, "sla": sla, "backfill_cutoff": timedelta(hours=24)}
    assert plan_deadline(started_at=T0 - timedelta(hours=25), now=T0, **kwargs) is None  # type: ignore[arg-type]
    assert plan_deadline(started_at=T0 - timedelta(hours=23), now=T0, **kwargs) is not None  # type: ignore[arg-type]


def test_no_policy_no_deadline() -> None:
    assert (
        plan_deadline(
            kind=DeadlineKind.first_response,
            started_at=T0,
            sla=None,
            now=T0,
            backfill_cutoff=timedelta(hours=24),
        )
        is None
    )
