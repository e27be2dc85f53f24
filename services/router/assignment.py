"""Who owns a conversation: pure choice among a team's people."""

from dataclasses import dataclass
from datetime import UTC, datetime

_NEVER = datetime.min.replace(tzinfo=UTC)


@dataclass
class Candidate:
    person_id: str
    last_assigned_at: datetime | None


@dataclass(frozen=True)
class Choice:
    person_id: str | None
    reason: str


def choose_owner(candidates: list[Candidate], *, team: str) -> Choice:
    """Round robin: the member who has waited longest since their last assignment."""
    if not candidates:
        return Choice(None, f"team {team}: no members; waiting in the team queue")
    pick = min(candidates, key=lambda c: (c.last_assigned_at or _NEVER, c.person_id))
    return Choice(pick.person_id, f"team {team}: round robin, longest since last assignment")
