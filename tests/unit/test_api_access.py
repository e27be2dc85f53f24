"""The roles table decides every access: each role's reach, checked on conversations, people and
tenants of two tenants, and the README's table is the code's."""

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.api.access import ROLES, Action, Reach, Role, Target, Team, Viewer, table_rows
from tests.fuzz import properties

CARE = Team("t-care", "kettle")  # kettle's care team
SOCIAL = Team("t-social", "kettle")
NORTH = Team("t-north", "northwind")  # the other tenant's team

ADA = Viewer.of_person("ada", grants=[("agency_admin", "")], leads=[], teams=[])
TINA = Viewer.of_person("tina", grants=[("tenant_admin", "kettle")], leads=[], teams=[])
ROSA = Viewer.of_person("rosa", grants=[], leads=[CARE], teams=[CARE])
KAI = Viewer.of_person("kai", grants=[], leads=[], teams=[CARE])
VERA = Viewer.of_person("vera", grants=[("client_viewer", "kettle")], leads=[], teams=[])
BOTH = Viewer.of_person("sam", grants=[], leads=[], teams=[CARE, NORTH])  # serves both tenants


def conversation(team: Team, owner: str | None = None) -> Target:
    return Target(tenant_id=team.tenant_id, team_id=team.id, owner_id=owner)


def person(person_id: str, *teams: Team) -> Target:
    return Target(person_id=person_id, person_teams=frozenset(teams))


def test_an_agency_admin_sees_and_does_everything_in_every_tenant() -> None:
    for action in Action:
        assert ADA.may(action, conversation(NORTH, "someone"))
        assert ADA.may(action, person("nobody-of-ours", NORTH))
    assert ADA.tenants() is None


def test_a_tenant_admin_reaches_their_tenant_only() -> None:
    for action in (
        Action.see,
        Action.act,
        Action.reassign,
        Action.manage,
        Action.read_config,
        Action.reports,
    ):
        assert TINA.may(action, conversation(SOCIAL, "kai"))
        assert not TINA.may(action, conversation(NORTH))
    assert TINA.may(Action.set_status, person("kai", CARE))
    assert not TINA.may(Action.set_status, person("nils", NORTH))
    assert TINA.tenants() == {"kettle"}


def test_a_team_lead_reaches_their_teams_and_reads_but_does_not_change_configuration() -> None:
    assert ROSA.may(Action.see, conversation(CARE, "kai"))
    assert ROSA.may(Action.reassign, conversation(CARE, "kai"))
    assert not ROSA.may(Action.see, conversation(SOCIAL))  # another team of the same tenant
    assert not ROSA.may(Action.reassign, conversation(SOCIAL))
    assert ROSA.may(Action.set_status, person("kai", CARE))
    assert not ROSA.may(Action.set_status, person("sid", SOCIAL))
    assert ROSA.may(Action.read_config, conversation(CARE))
    assert not ROSA.may(Action.manage, Target(tenant_id="kettle"))


def test_an_agent_sees_their_own_and_their_teams_and_acts_on_their_own_and_the_queue() -> None:
    assert KAI.may(Action.see, conversation(CARE, "rosa"))  # a teammate's: seen
    assert not KAI.may(Action.act, conversation(CARE, "rosa"))  # ... not taken from them
    assert KAI.may(Action.act, conversation(CARE, None))  # the team's queue
    assert KAI.may(Action.act, conversation(SOCIAL, "kai"))  # their own, in another team now
    assert not KAI.may(Action.see, conversation(SOCIAL, "sid"))
    assert not KAI.may(Action.reassign, conversation(CARE, "kai"))
    assert KAI.may(Action.set_status, person("kai", CARE))
    assert not KAI.may(Action.set_status, person("rosa", CARE))
    assert not KAI.may(Action.read_config, Target(tenant_id="kettle"))


def test_a_client_viewer_reads_reports_of_their_tenant_and_no_conversation() -> None:
    assert VERA.may(Action.reports, Target(tenant_id="kettle"))
    assert not VERA.may(Action.reports, Target(tenant_id="northwind"))
    for action in (Action.see, Action.act, Action.reassign, Action.set_status, Action.read_config):
        assert not VERA.may(action, conversation(CARE))
    assert VERA.scope(Action.see).empty


def test_a_person_serving_two_tenants_reaches_each_only_through_their_teams() -> None:
    assert BOTH.may(Action.see, conversation(CARE))
    assert BOTH.may(Action.see, conversation(NORTH))
    assert not BOTH.may(Action.see, conversation(SOCIAL))
    assert not BOTH.may(Action.see, Target(tenant_id="northwind", team_id="t-other"))
    assert BOTH.tenants() == {"kettle", "northwind"}


def test_a_token_holds_one_role_in_one_tenant() -> None:
    admin = Viewer.of_token("tok1", name="crm", tenant_id="kettle", role=Role.tenant_admin)
    reports = Viewer.of_token("tok2", name="bi", tenant_id="kettle", role=Role.client_viewer)
    assert admin.may(Action.act, conversation(CARE)) and not admin.may(Action.act, conversation(NORTH))
    assert not reports.may(Action.see, conversation(CARE)) and reports.may(
        Action.reports, Target(tenant_id="kettle")
    )
    with pytest.raises(ValueError, match="team_lead"):
        Viewer.of_token("tok3", name="x", tenant_id="kettle", role=Role.team_lead)


TEAMS = [CARE, SOCIAL, NORTH, Team("t-west", "westbrook")]
viewers = st.builds(
    lambda grants, leads, teams, me: Viewer.of_person(me, grants=grants, leads=leads, teams=teams),
    st.lists(
        st.tuples(
            st.sampled_from(["agency_admin", "tenant_admin", "client_viewer"]),
            st.sampled_from(["kettle", "northwind", "westbrook"]),
        ),
        max_size=2,
    ),
    st.lists(st.sampled_from(TEAMS), max_size=2),
    st.lists(st.sampled_from(TEAMS), max_size=3),
    st.sampled_from(["kai", "rosa", "sam"]),
)
targets = st.builds(
    lambda team, owner: Target(tenant_id=team.tenant_id, team_id=team.id, owner_id=owner),
    st.sampled_from(TEAMS),
    st.sampled_from([None, "kai", "rosa", "sam"]),
)


@properties(300)
@given(viewers, targets, st.sampled_from(list(Action)))
def test_no_role_reaches_a_tenant_the_viewer_has_no_part_in(
    viewer: Viewer, target: Target, action: Action
) -> None:
    """Whatever the mix of roles, a conversation of a tenant the viewer holds no role in is out of reach,
    unless it is their own (an owner always serves the tenant)."""
    tenants = viewer.tenants()
    if tenants is not None and target.tenant_id not in tenants and target.owner_id != viewer.person_id:
        assert not viewer.may(action, target)


def test_the_readme_shows_the_roles_table_of_the_code() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    rows = {
        cells[0]: cells[1:]
        for line in readme.splitlines()
        if line.startswith("| `") and (cells := [c.strip().strip("`") for c in line.strip("|").split("|")])
    }
    for action, reaches in table_rows():
        assert rows.get(action) == reaches, f"README's roles table row for {action}"
    assert all(isinstance(ROLES[a][r], Reach) for a in Action for r in Role)
    assert re.search(
        r"\| action \| agency admin \| tenant admin \| team lead \| agent \| client viewer \|", readme
    )
