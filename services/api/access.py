"""Who may do what: the roles table, and the decisions every route asks of it. Pure, no I/O.

A person's roles come from two places. `apply` grants the roles of the configuration file
(agency admin, tenant admin, client viewer: `RoleGrantRow`); teams make the others (a
member of a team is an agent of its tenant, the team's `lead` its team lead). A machine's
API token has the one role and tenant it was made with.

`ROLES` below is the table the README shows; `may` and the `Viewer`'s scopes read it,
and nothing else decides access.
"""

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


class Role(enum.StrEnum):
    agency_admin = "agency_admin"
    tenant_admin = "tenant_admin"
    team_lead = "team_lead"
    agent = "agent"
    client_viewer = "client_viewer"


class Action(enum.StrEnum):
    see = "see"  # see conversations, their messages and timeline
    act = "act"  # claim, mark responded, pause, resume, resolve, acknowledge
    reassign = "reassign"
    set_status = "set_status"
    reports = "reports"  # reports and CSV
    read_config = "read_config"  # configuration and tokens, read
    manage = "manage"  # tokens made and revoked, set-password links sent


class Reach(enum.StrEnum):
    """How far a role's right goes."""

    none = "no"
    all = "all tenants"
    tenants = "own tenants"
    teams = "own teams"
    own = "own + own teams"  # what they own, and their teams' (their queue, for actions)
    self = "self"


ROLES: Mapping[Action, Mapping[Role, Reach]] = {
    Action.see: {
        Role.agency_admin: Reach.all,
        Role.tenant_admin: Reach.tenants,
        Role.team_lead: Reach.teams,
        Role.agent: Reach.own,
        Role.client_viewer: Reach.none,  # no text: reports only
    },
    Action.act: {
        Role.agency_admin: Reach.all,
        Role.tenant_admin: Reach.tenants,
        Role.team_lead: Reach.teams,
        Role.agent: Reach.own,
        Role.client_viewer: Reach.none,
    },
    Action.reassign: {
        Role.agency_admin: Reach.all,
        Role.tenant_admin: Reach.tenants,
        Role.team_lead: Reach.teams,
        Role.agent: Reach.none,
        Role.client_viewer: Reach.none,
    },
    Action.set_status: {
        Role.agency_admin: Reach.all,
        Role.tenant_admin: Reach.tenants,
        Role.team_lead: Reach.teams,
        Role.agent: Reach.self,
        Role.client_viewer: Reach.none,
    },
    Action.reports: {
        Role.agency_admin: Reach.all,
        Role.tenant_admin: Reach.tenants,
        Role.team_lead: Reach.teams,
        Role.agent: Reach.self,
        Role.client_viewer: Reach.tenants,
    },
    Action.read_config: {  # a team lead reads (never changes) the configuration of their tenants
        Role.agency_admin: Reach.all,
        Role.tenant_admin: Reach.tenants,
        Role.team_lead: Reach.tenants,
        Role.agent: Reach.none,
        Role.client_viewer: Reach.none,
    },
    Action.manage: {
        Role.agency_admin: Reach.all,
        Role.tenant_admin: Reach.tenants,
        Role.team_lead: Reach.none,
        Role.agent: Reach.none,
        Role.client_viewer: Reach.none,
    },
}

# Roles a grant in the configuration (or a token) may carry; the others come from teams.
GRANTED = frozenset({Role.agency_admin, Role.tenant_admin, Role.client_viewer})
TOKEN_ROLES = frozenset({Role.tenant_admin, Role.client_viewer})


@dataclass(frozen=True)
class Team:
    id: str
    tenant_id: str


@dataclass(frozen=True)
class Target:
    """What an action is about: a conversation (tenant, team, owner), a person, or a tenant."""

    tenant_id: str = ""
    team_id: str | None = None
    owner_id: str | None = None
    person_id: str | None = None  # a person acted on (set status), with the teams they serve in
    person_teams: frozenset[Team] = frozenset()
    person_tenants: frozenset[str] = frozenset()  # tenants they hold a granted role in


@dataclass(frozen=True)
class Viewer:
    """Who is asking: a signed-in person, or a machine's token (`person_id` None)."""

    person_id: str | None
    agency_admin: bool = False
    tenant_admin: frozenset[str] = frozenset()  # tenant ids
    client_viewer: frozenset[str] = frozenset()
    leads: frozenset[Team] = frozenset()  # teams they lead
    member_of: frozenset[Team] = frozenset()  # teams they serve in
    token_id: str | None = None
    label: str = field(default="", compare=False)  # how logs and the timeline name them

    @classmethod
    def of_person(
        cls,
        person_id: str,
        *,
        grants: Iterable[tuple[str, str]],
        leads: Iterable[Team],
        teams: Iterable[Team],
    ) -> "Viewer":
        """A person's viewer from their grants (role, tenant id) and teams."""
        grants = list(grants)
        return cls(
            person_id=person_id,
            agency_admin=any(role == Role.agency_admin for role, _ in grants),
            tenant_admin=frozenset(t for role, t in grants if role == Role.tenant_admin and t),
            client_viewer=frozenset(t for role, t in grants if role == Role.client_viewer and t),
            leads=frozenset(leads),
            member_of=frozenset(teams),
            label=person_id,
        )

    @classmethod
    def of_token(cls, token_id: str, *, name: str, tenant_id: str, role: Role) -> "Viewer":
        if role not in TOKEN_ROLES:
            raise ValueError(f"a token cannot carry the role {role.value}")
        return cls(
            person_id=None,
            tenant_admin=frozenset({tenant_id}) if role == Role.tenant_admin else frozenset(),
            client_viewer=frozenset({tenant_id}) if role == Role.client_viewer else frozenset(),
            token_id=token_id,
            label=f"token:{name}",
        )

    # -- what the viewer is -------------------------------------------------------------------

    def roles(self) -> dict[Role, frozenset[str]]:
        """Each role the viewer holds, with the tenants it holds it in (agency admin: none named)."""
        held: dict[Role, frozenset[str]] = {}
        if self.agency_admin:
            held[Role.agency_admin] = frozenset()
        if self.tenant_admin:
            held[Role.tenant_admin] = self.tenant_admin
        if self.leads:
            held[Role.team_lead] = frozenset(team.tenant_id for team in self.leads)
        if self.member_of:
            held[Role.agent] = frozenset(team.tenant_id for team in self.member_of)
        if self.client_viewer:
            held[Role.client_viewer] = self.client_viewer
        return held

    def tenants(self) -> frozenset[str] | None:
        """Every tenant the viewer has any role in (None: all of them, an agency admin)."""
        if self.agency_admin:
            return None
        return (
            self.tenant_admin
            | self.client_viewer
            | {team.tenant_id for team in self.leads}
            | {team.tenant_id for team in self.member_of}
        )

    # -- scopes: what a listing may show -------------------------------------------------------

    def scope(self, action: Action) -> "Scope":
        """Where `action` reaches for this viewer, as the tenants, teams and owner it may touch."""
        if self.agency_admin and ROLES[action][Role.agency_admin] is Reach.all:
            return Scope(everything=True)
        tenants: set[str] = set()
        teams: set[str] = set()
        owner: str | None = None
        people: set[str] = set()
        queues: set[str] = set()
        for role, in_tenants in self.roles().items():
            reach = ROLES[action][role]
            if reach is Reach.tenants:
                tenants |= in_tenants
            elif reach is Reach.teams:
                teams |= {team.id for team in self._teams(role)}
            elif reach is Reach.own:
                # An agent sees all of their teams' work, but acts on their own and their queue only.
                (queues if action is Action.act else teams).update(team.id for team in self._teams(role))
                owner = self.person_id
            elif reach is Reach.self and self.person_id is not None:
                people.add(self.person_id)
        return Scope(
            tenants=frozenset(tenants),
            teams=frozenset(teams),
            owner=owner,
            people=frozenset(people),
            queues=frozenset(queues - teams),
        )

    def _teams(self, role: Role) -> frozenset[Team]:
        return self.leads if role is Role.team_lead else self.member_of if role is Role.agent else frozenset()

    def may(self, action: Action, target: Target) -> bool:
        return self.scope(action).covers(target)


@dataclass(frozen=True)
class Scope:
    """Where one action reaches: everything, or these tenants, teams, queues, an owner, these people.

    For a conversation: its tenant among `tenants`, its team among `teams`, or its owner
    `owner` (an agent's own, whatever team it sits in now, if within their tenants). For a
    person: `people` names them, or a team of `teams` has them."""

    everything: bool = False
    tenants: frozenset[str] = frozenset()
    teams: frozenset[str] = frozenset()
    owner: str | None = None
    people: frozenset[str] = frozenset()
    queues: frozenset[str] = frozenset()  # teams whose conversations are reached while nobody owns them

    @property
    def empty(self) -> bool:
        return not (self.everything or self.tenants or self.teams or self.queues or self.owner or self.people)

    def covers(self, target: Target) -> bool:
        if self.everything:
            return True
        if target.person_id is not None:  # a person: one of ours, or serving our teams or tenants
            return (
                target.person_id in self.people
                or any(
                    team.id in self.teams or team.tenant_id in self.tenants for team in target.person_teams
                )
                or bool(target.person_tenants & self.tenants)
            )
        if target.tenant_id in self.tenants:
            return True
        if target.team_id is not None and target.team_id in self.teams:
            return True
        if target.team_id is not None and target.team_id in self.queues and target.owner_id is None:
            return True
        return self.owner is not None and target.owner_id == self.owner


def table_rows() -> list[tuple[str, list[str]]]:
    """The roles table as the README prints it: one row per action, one column per role."""
    return [(action.value, [ROLES[action][role].value for role in Role]) for action in Action]
