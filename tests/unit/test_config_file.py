from datetime import timedelta
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from services.notify.chain import Chain, Step, Target
from stayhuman.config import (
    REDACTED,
    ConfigError,
    Summary,
    cross_check,
    parse_config,
    redact,
    render_yaml,
    scrub,
    secret_values,
)
from tests.helpers import config_yaml


def valid() -> str:
    return config_yaml(tenant="acme", account="acme-fb", secret="s" * 20, people=["maria", "li"])


def test_valid_file_parses_with_durations() -> None:
    document = parse_config(valid(), source="acme.yaml")
    assert document.tenants[0].sla_policies[0].first_response == timedelta(minutes=30)
    cross_check(document, source="acme.yaml", known_people=set())


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (
            "first_response: 30m",
            "first_response: soon",
            "acme.yaml: tenants[0].sla_policies[0].first_response",
        ),
        ("platform: facebook", "platform: myspace", "acme.yaml: tenants[0].accounts[0].platform"),
        ("email: maria@example.com", "email: not-an-email", "acme.yaml: people[0].email"),
        ("- id: acme", "- id: Acme Corp", "acme.yaml: tenants[0].id"),
    ],
)
def test_errors_name_file_path_and_problem(before: str, after: str, expected: str) -> None:
    text = valid().replace(before, after)
    assert text != valid()
    with pytest.raises(ConfigError) as error:
        parse_config(text, source="acme.yaml")
    assert expected in str(error.value)


def test_not_yaml() -> None:
    with pytest.raises(ConfigError, match=r"acme.yaml: not valid YAML"):
        parse_config("people: [unclosed", source="acme.yaml")


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"tenants\[0\].colour: Extra inputs are not permitted"):
        parse_config(
            valid().replace("    name: Tenant acme", "    name: Tenant acme\n    colour: blue"),
            source="acme.yaml",
        )


def test_references_must_resolve() -> None:
    text = (
        valid()
        .replace("members: [maria, li]", "members: [maria, ghost]")
        .replace("team: care", "team: sales")
    )
    document = parse_config(text, source="acme.yaml")
    with pytest.raises(ConfigError) as error:
        cross_check(document, source="acme.yaml", known_people=set())
    problems = error.value.problems
    assert "acme.yaml: tenants[0].teams[0].members[1]: no person 'ghost'" in problems
    assert "acme.yaml: tenants[0].accounts[0].team: no team 'sales' in tenant 'acme'" in problems


def test_people_may_come_from_an_earlier_file() -> None:
    document = parse_config(valid().replace("members: [maria, li]", "members: [maria, ana]"), source="x.yaml")
    cross_check(document, source="x.yaml", known_people={"ana"})


def test_secrets_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_SECRET", "from-the-environment-123")
    document = parse_config(valid().replace("s" * 20, "${ACME_SECRET}"), source="a.yaml")
    assert document.tenants[0].accounts[0].webhook_secret == "from-the-environment-123"
    monkeypatch.delenv("ACME_SECRET")
    with pytest.raises(
        ConfigError,
        match=r"a.yaml: tenants\[0\].accounts\[0\].webhook_secret: environment variable ACME_SECRET is not set",
    ):
        parse_config(valid().replace("s" * 20, "${ACME_SECRET}"), source="a.yaml")


def test_the_shipped_examples_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    from stayhuman.config import load_config
    from stayhuman.supervisor import DEMO_CONFIG

    monkeypatch.setenv("STAYHUMAN_DEMO_PLATFORM_URL", "http://127.0.0.1:8086")  # `up --demo` sets it
    for path in (Path(__file__).parents[2] / "examples" / "stayhuman.yaml", DEMO_CONFIG):
        document = load_config(path)
        cross_check(document, source=str(path), known_people=set())


ROUTING = """\
people:
  - id: maria
    name: Maria Lopez
    email: maria@example.com
    skills: [billing, german]
    languages: [en, de]
    capacity: 8
    priority_weights: {urgent: 3, high: 2}
    timezone: Europe/Berlin
    working_hours: {mon: [["09:00", "17:00"]], tue: [["09:00", "17:00"]]}
    out_of_office: {from: 2026-12-20T00:00:00+01:00, until: 2027-01-04T09:00:00+01:00, substitute: li}
    notify:
      warning: [push]
      breach: [email, push]
      escalation: [email, apprise]
    apprise: ["ntfy://ntfy.example/maria-alerts", "slack://T1/B2/C3"]
    quiet_hours: {from: "22:00", until: "07:00"}
  - id: li
    name: Li Wei
    email: li@example.com
tenants:
  - id: bluebird
    name: Bluebird Coffee
    vip: ["@oprah", "1234567"]
    auto_resolve_after: 3d
    manager: li
    escalation:
      - {after: 10m, notify: lead}
      - {after: 30m, notify: manager, repeat: {every: 30m, times: 2}}
      - {after: 2h, notify: person, person: li}
    calendars:
      - name: office
        timezone: Europe/Berlin
        hours: {mon: [["09:00", "18:00"]], tue: [["09:00", "18:00"]]}
        holidays: {country: DE, subdivision: BY}
        closed_days: [2026-12-24, 2026-12-31]
    sla_policies:
      - name: standard
        first_response: 1h
        next_response: 2h
        resolution: 2d
        warn_before: 15m
        calendar: office
        priorities:
          urgent: {first_response: 15m, next_response: 30m, resolution: 4h}
          high: {first_response: 30m}
        vip_bump: 1
        high_reach: {followers: 100000, bump: 1}
    teams:
      - id: care
        name: Customer care
        sla_policy: standard
        lead: maria
        members: [maria, li]
      - id: billing
        name: Billing
        members: [maria]
    topics:
      - name: refunds
        match: {keywords: [refund, "money back"], languages: [de]}
        team: billing
        priority: high
        sla_policy: standard
        skills: [billing]
        escalation: [{after: 5m, notify: team}]
      - name: spam
        match: {patterns: ['https?://\\S+\\.xyz']}
        no_sla: true
      - name: general
        default: true
        team: care
"""


def problems_of(text: str, *, known_people: frozenset[str] = frozenset()) -> list[str]:
    """Every problem reported for a file, whether the schema or the cross-check finds it."""
    try:
        cross_check(
            parse_config(text, source="config.yaml"), source="config.yaml", known_people=set(known_people)
        )
    except ConfigError as error:
        return error.problems
    return []


def test_the_routing_configuration_parses() -> None:
    assert problems_of(ROUTING) == []
    document = parse_config(ROUTING, source="config.yaml")
    maria, li = document.people
    assert maria.capacity == 8 and maria.priority_weights == {"urgent": 3, "high": 2}
    assert maria.out_of_office is not None and maria.out_of_office.substitute == "li"
    assert maria.out_of_office.starts.utcoffset() == timedelta(hours=1)
    assert li.capacity == 20 and li.timezone == "UTC" and li.working_hours is None and li.active
    tenant = document.tenants[0]
    assert tenant.auto_resolve_after == timedelta(days=3)
    policy = tenant.sla_policies[0]
    assert policy.priorities["urgent"].resolution == timedelta(hours=4)
    assert policy.priorities["high"].next_response is None
    assert policy.high_reach is not None and policy.high_reach.followers == 100_000
    assert [t.priority for t in tenant.topics] == ["high", "normal", "normal"]
    assert tenant.topics[1].match == {"patterns": [r"https?://\S+\.xyz"]}


def test_the_alert_configuration_parses() -> None:
    maria, li = parse_config(ROUTING, source="config.yaml").people
    assert maria.notify == {
        "warning": ["push"],
        "breach": ["email", "push"],
        "escalation": ["email", "apprise"],
    }
    assert maria.apprise == ["ntfy://ntfy.example/maria-alerts", "slack://T1/B2/C3"]
    assert maria.quiet_hours is not None
    assert (maria.quiet_hours.starts, maria.quiet_hours.until) == ("22:00", "07:00")
    assert (li.notify, li.apprise, li.quiet_hours) == ({}, [], None)  # absent: email, no quiet hours
    tenant = parse_config(ROUTING, source="config.yaml").tenants[0]
    assert tenant.manager == "li"
    assert Chain.parse(tenant.escalation).steps[2] == Step(
        after=timedelta(hours=2), notify=Target.person, person_id="li"
    )
    assert [t.escalation for t in tenant.topics] == [[{"after": "5m", "notify": "team"}], None, None]


def test_quiet_hours_may_wrap_midnight_and_drop_the_leading_zero() -> None:
    text = ROUTING.replace('{from: "22:00", until: "07:00"}', '{from: "7:30", until: "9:00"}')
    quiet = parse_config(text, source="config.yaml").people[0].quiet_hours
    assert quiet is not None and (quiet.starts, quiet.until) == ("07:30", "09:00")
    assert problems_of(text) == []


def test_apprise_urls_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    text = ROUTING.replace('"slack://T1/B2/C3"', '"${MARIA_SLACK_URL}"')
    monkeypatch.setenv("MARIA_SLACK_URL", "slack://T9/B9/secret")
    assert parse_config(text, source="config.yaml").people[0].apprise[1] == "slack://T9/B9/secret"
    monkeypatch.delenv("MARIA_SLACK_URL")
    assert "config.yaml: people[0].apprise[1]: environment variable MARIA_SLACK_URL is not set" in (
        problems_of(text)
    )


def test_a_bad_apprise_url_is_not_repeated_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARIA_SLACK_URL", "hooks.slack.example/T9/B9/secret-token")
    text = ROUTING.replace('"slack://T1/B2/C3"', '"${MARIA_SLACK_URL}"')
    assert problems_of(text) == [
        "config.yaml: people[0].apprise[1]: not an Apprise URL such as ntfy://ntfy.sh/topic (scheme://...)"
    ]


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (
            "      warning: [push]\n",
            "      warnings: [push]\n",
            "config.yaml: people[0].notify.warnings: 'warnings' is not an alert kind;"
            " use one of assigned, warning, breach, escalation",
        ),
        (
            "breach: [email, push]",
            "breach: [email, sms]",
            "config.yaml: people[0].notify.breach[1]: 'sms' is not a channel; use one of email, push, apprise",
        ),
        (
            "warning: [push]",
            "warning: []",
            "config.yaml: people[0].notify.warning: name at least one of email, push, apprise",
        ),
        (
            "breach: [email, push]",
            "breach: [push, push]",
            "config.yaml: people[0].notify.breach: 'push' is named twice",
        ),
        (
            "warning: [push]",
            "warning: push",
            "config.yaml: people[0].notify.warning: Input should be a valid list",
        ),
        (
            '"ntfy://ntfy.example/maria-alerts"',
            '"ntfy.example/maria-alerts"',
            "config.yaml: people[0].apprise[0]: not an Apprise URL such as ntfy://ntfy.sh/topic (scheme://...)",
        ),
        (
            '    apprise: ["ntfy://ntfy.example/maria-alerts", "slack://T1/B2/C3"]\n',
            "",
            "config.yaml: people[0].notify.escalation: channel apprise needs a URL under apprise",
        ),
        (
            '    apprise: ["ntfy://ntfy.example/maria-alerts", "slack://T1/B2/C3"]\n',
            "    apprise: []\n",
            "config.yaml: people[0].notify.escalation: channel apprise needs a URL under apprise",
        ),
        (
            '{from: "22:00", until: "07:00"}',
            '{from: 22:00, until: "07:00"}',
            "config.yaml: people[0].quiet_hours.from: 1320 is not a time HH:MM (quote times in YAML: '22:00')",
        ),
        (
            '{from: "22:00", until: "07:00"}',
            '{from: "22:00", until: 7:00}',
            "config.yaml: people[0].quiet_hours.until: 420 is not a time HH:MM (quote times in YAML: '07:00')",
        ),
        (
            '{from: "22:00", until: "07:00"}',
            '{from: "22:00", until: "24:00"}',
            "config.yaml: people[0].quiet_hours.until: '24:00' is not a time HH:MM",
        ),
        (
            '{from: "22:00", until: "07:00"}',
            '{from: "10pm", until: "07:00"}',
            "config.yaml: people[0].quiet_hours.from: '10pm' is not a time HH:MM",
        ),
        (
            '{from: "22:00", until: "07:00"}',
            '{from: "7:00", until: "07:00"}',
            "config.yaml: people[0].quiet_hours: from and until are the same time",
        ),
        (
            '{from: "22:00", until: "07:00"}',
            '{from: "22:00"}',
            "config.yaml: people[0].quiet_hours.until: Field required",
        ),
        ("    manager: li\n", "    manager: ghost\n", "config.yaml: tenants[0].manager: no person 'ghost'"),
        (
            "notify: person, person: li}",
            "notify: person, person: ghost}",
            "config.yaml: tenants[0].escalation[2].person: no person 'ghost'",
        ),
        (
            "{after: 10m, notify: lead}",
            "{after: 10m, notify: boss}",
            "config.yaml: tenants[0].escalation[0].notify: 'boss' is not one of owner, team, lead, manager, person",
        ),
        (
            "{after: 10m, notify: lead}",
            "{after: 3h, notify: lead}",
            "config.yaml: tenants[0].escalation[1].after: steps must come in order of their wait",
        ),
        (
            "repeat: {every: 30m, times: 2}",
            "repeat: {every: 30m, times: 0}",
            "config.yaml: tenants[0].escalation[1].repeat.times: a whole number from 1 to 20",
        ),
        (
            "    manager: li\n",
            "",
            "config.yaml: tenants[0].escalation[1].notify: tenant 'bluebird' names no manager to notify",
        ),
        (
            "escalation: [{after: 5m, notify: team}]",
            "escalation: {after: 5m, notify: team}",
            "config.yaml: tenants[0].topics[0].escalation: expected a list of steps",
        ),
        (
            "escalation: [{after: 5m, notify: team}]",
            "escalation: [{after: 5m, notify: person, person: ghost}]",
            "config.yaml: tenants[0].topics[0].escalation[0].person: no person 'ghost'",
        ),
        (
            "escalation: [{after: 5m, notify: team}]",
            "escalation: [{after: 5m, notify: team, when: later}]",
            "config.yaml: tenants[0].topics[0].escalation[0]: unknown key 'when'",
        ),
        ("escalation: [{after: 5m, notify: team}]", "escalation: []", ""),  # no escalation for this topic
    ],
)
def test_alert_problems_name_the_path(before: str, after: str, expected: str) -> None:
    text = ROUTING.replace(before, after, 1)
    assert text != ROUTING
    problems = problems_of(text)
    if not expected:
        assert problems == []
    else:
        assert any(problem.startswith(expected) for problem in problems), problems


def test_people_a_chain_names_may_be_stored_already() -> None:
    text = ROUTING.replace("    manager: li\n", "    manager: ana\n").replace("person: li}", "person: sam}")
    assert problems_of(text, known_people=frozenset({"ana", "sam"})) == []


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (
            "        team: billing\n",
            "        team: billng\n",
            "config.yaml: tenants[0].topics[0].team: no team 'billng' in tenant 'bluebird'",
        ),
        (
            "        priority: high\n        sla_policy: standard\n",
            "        priority: high\n        sla_policy: premium\n",
            "config.yaml: tenants[0].topics[0].sla_policy: no SLA policy 'premium' in tenant 'bluebird'",
        ),
        (
            "        calendar: office\n",
            "        calendar: shop\n",
            "config.yaml: tenants[0].sla_policies[0].calendar: no calendar 'shop' in tenant 'bluebird'",
        ),
        (
            "        lead: maria\n",
            "        lead: ghost\n",
            "config.yaml: tenants[0].teams[0].lead: no person 'ghost'",
        ),
        (
            "substitute: li}",
            "substitute: ghost}",
            "config.yaml: people[0].out_of_office.substitute: no person 'ghost'",
        ),
        (
            "substitute: li}",
            "substitute: maria}",
            "config.yaml: people[0].out_of_office.substitute: 'maria' cannot substitute for themselves",
        ),
        (
            "      - name: spam\n",
            "      - name: refunds\n",
            "config.yaml: tenants[0].topics: 'refunds' is defined twice",
        ),
        (
            "        no_sla: true\n",
            "        team: care\n",
            "",  # a topic that is not no_sla with a team: valid
        ),
        (
            "        no_sla: true\n",
            "        priority: low\n",
            "config.yaml: tenants[0].topics[1].team: a topic needs a team (only a no_sla topic may go without one)",
        ),
        (
            "        no_sla: true\n",
            "        no_sla: true\n        sla_policy: standard\n",
            "config.yaml: tenants[0].topics[1].sla_policy: a no_sla topic has no SLA; remove sla_policy or no_sla",
        ),
        (
            "        default: true\n",
            "        default: true\n        match: {kinds: [dm]}\n",
            "config.yaml: tenants[0].topics[2].match: the default topic takes what no other topic matched;"
            " remove match",
        ),
        (
            "        no_sla: true\n",
            "        no_sla: true\n        default: true\n",
            "config.yaml: tenants[0].topics[1].match: the default topic takes what no other topic matched;"
            " remove match",
        ),
        (
            'match: {keywords: [refund, "money back"], languages: [de]}',
            "match: {keywords: [refund], colour: blue}",
            "config.yaml: tenants[0].topics[0].match.colour: unknown key; expected one of",
        ),
        (
            'match: {keywords: [refund, "money back"], languages: [de]}',
            "match: {patterns: ['(unclosed']}",
            "config.yaml: tenants[0].topics[0].match.patterns[0]: invalid regular expression",
        ),
        (
            "        priority: high\n",
            "        priority: critical\n",
            "config.yaml: tenants[0].topics[0].priority: 'critical' is not a priority;"
            " use one of low, normal, high, urgent",
        ),
        (
            "priority_weights: {urgent: 3, high: 2}",
            "priority_weights: {urgent: 3, hgh: 2}",
            "config.yaml: people[0].priority_weights.hgh: 'hgh' is not a priority",
        ),
        (
            "priority_weights: {urgent: 3, high: 2}",
            "priority_weights: {urgent: 0}",
            "config.yaml: people[0].priority_weights.urgent: Input should be greater than or equal to 1",
        ),
        (
            "          high: {first_response: 30m}",
            "          asap: {first_response: 30m}",
            "config.yaml: tenants[0].sla_policies[0].priorities.asap: 'asap' is not a priority",
        ),
        (
            "          high: {first_response: 30m}",
            "          high: {}",
            "config.yaml: tenants[0].sla_policies[0].priorities.high: name at least one of first_response,"
            " next_response, resolution",
        ),
        (
            "    capacity: 8\n",
            "    capacity: 0\n",
            "config.yaml: people[0].capacity: Input should be greater than or equal to 1",
        ),
        (
            "        vip_bump: 1\n",
            "        vip_bump: 4\n",
            "config.yaml: tenants[0].sla_policies[0].vip_bump: Input should be less than or equal to 3",
        ),
        (
            "    languages: [en, de]\n",
            "    languages: [en, 'deutsch please']\n",
            "config.yaml: people[0].languages[1]: String should match pattern",
        ),
        (
            "    auto_resolve_after: 3d\n",
            "    auto_resolve_after: whenever\n",
            "config.yaml: tenants[0].auto_resolve_after: 'whenever' is not a duration",
        ),
        (
            "until: 2027-01-04T09:00:00+01:00",
            "until: 2026-12-19T09:00:00+01:00",
            "config.yaml: people[0].out_of_office: until must be later than from",
        ),
        (
            "from: 2026-12-20T00:00:00+01:00",
            "from: 2026-12-20T00:00:00",
            "config.yaml: people[0].out_of_office.from: Input should have timezone info",
        ),
        (
            "        timezone: Europe/Berlin\n",
            "        timezone: Europe/Berln\n",
            "config.yaml: tenants[0].calendars[0].timezone: 'Europe/Berln' is not an IANA timezone",
        ),
        (
            "    timezone: Europe/Berlin\n",
            "    timezone: Mars/Olympus\n",
            "config.yaml: people[0].timezone: 'Mars/Olympus' is not an IANA timezone",
        ),
        (
            'hours: {mon: [["09:00", "18:00"]], tue: [["09:00", "18:00"]]}',
            'hours: {mon: [["09:00", 18:00]]}',
            "config.yaml: tenants[0].calendars[0].hours.mon[0]: 1080 is not a time HH:MM"
            " (quote times in YAML: '18:00')",
        ),
        (
            'working_hours: {mon: [["09:00", "17:00"]], tue: [["09:00", "17:00"]]}',
            'working_hours: {monday: [["09:00", "17:00"]]}',
            "config.yaml: people[0].working_hours.monday: unknown weekday",
        ),
        (
            'working_hours: {mon: [["09:00", "17:00"]], tue: [["09:00", "17:00"]]}',
            "working_hours: {}",
            "config.yaml: people[0].working_hours: no weekday has hours, so it would never be open",
        ),
        (
            "holidays: {country: DE, subdivision: BY}",
            "holidays: {country: DE, subdivision: XX}",
            "config.yaml: tenants[0].calendars[0].holidays.subdivision: 'XX' is not a subdivision of 'DE'",
        ),
        (
            "holidays: {country: DE, subdivision: BY}",
            "holidays: {country: QQ}",
            "config.yaml: tenants[0].calendars[0].holidays.country: 'QQ' is not a known country code",
        ),
        (
            "closed_days: [2026-12-24, 2026-12-31]",
            "closed_days: [2026-12-24, christmas]",
            "config.yaml: tenants[0].calendars[0].closed_days[1]: Input should be a valid date",
        ),
    ],
)
def test_routing_problems_name_the_path(before: str, after: str, expected: str) -> None:
    text = ROUTING.replace(before, after, 1)
    assert text != ROUTING
    problems = problems_of(text)
    if not expected:
        assert problems == []
    else:
        assert any(problem.startswith(expected) for problem in problems), problems


def test_duplicate_calendars() -> None:
    twin = "      - name: office\n        timezone: UTC\n"
    text = ROUTING.replace("    sla_policies:\n", twin + "    sla_policies:\n")
    assert problems_of(text) == ["config.yaml: tenants[0].calendars: 'office' is defined twice"]


def test_only_one_default_topic() -> None:
    text = ROUTING.replace(
        "      - name: spam\n        match: {patterns: ['https?://\\S+\\.xyz']}\n",
        "      - name: spam\n        default: true\n",
    )
    assert text != ROUTING
    assert problems_of(text) == [
        "config.yaml: tenants[0].topics: only one topic may be the default;"
        " topics[1], topics[2] all say default: true"
    ]


def test_every_cross_check_problem_is_reported_at_once() -> None:
    text = (
        ROUTING.replace("        team: billing\n", "        team: billng\n")
        .replace("        lead: maria\n", "        lead: ghost\n")
        .replace("        calendar: office\n", "        calendar: shop\n")
        .replace("        timezone: Europe/Berlin\n", "        timezone: Nowhere\n")
    )
    problems = problems_of(text)
    assert len(problems) == 4, problems


def test_people_referenced_may_be_stored_already() -> None:
    text = ROUTING.replace("substitute: li}", "substitute: sam}").replace("lead: maria", "lead: sam")
    assert problems_of(text, known_people=frozenset({"sam"})) == []


def test_the_summary_counts_in_the_singular_and_the_plural() -> None:
    summary = Summary(
        created={"people": 1, "team memberships": 2, "SLA policies": 1},
        updated={"accounts": 1, "API tokens": 2},
        removed={"topics": 3, "calendars": 1},
        kept={"teams": 1},
        commands=1,
    )
    assert str(summary) == (
        "created 1 SLA policy, 1 person, 2 team memberships; updated 2 API tokens, 1 account;"
        " removed 1 calendar, 3 topics; queued 1 command for the router;"
        " kept 1 team that the file no longer has (--prune removes them)"
    )


@pytest.mark.parametrize("platform", ["facebook", "instagram", "x", "mastodon", "bluesky", "youtube"])
def test_a_platform_account_needs_no_webhook_secret(platform: str) -> None:
    text = (
        valid()
        .replace("platform: facebook", f"platform: {platform}")
        .replace(f"webhook_secret: {'s' * 20}", "")
    )
    assert "webhook_secret" not in text
    assert parse_config(text, source="a.yaml").tenants[0].accounts[0].webhook_secret is None


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        (None, "a platform: other account receives the generic webhook: give it a webhook_secret"),
        ("short", "webhook_secret: String should have at least 16 characters"),
        ("''", "webhook_secret: String should have at least 16 characters"),
    ],
)
def test_a_generic_account_needs_a_long_secret(secret: str | None, problem: str) -> None:
    line = f"webhook_secret: {'s' * 20}"
    text = (
        valid()
        .replace("platform: facebook", "platform: other")
        .replace(line, f"webhook_secret: {secret}" if secret else "")
    )
    with pytest.raises(ConfigError, match=r"a.yaml: tenants\[0\].accounts\[0\]") as error:
        parse_config(text, source="a.yaml")
    assert problem in str(error.value)
    assert parse_config(valid().replace("platform: facebook", "platform: other"), source="a.yaml")


def test_a_team_lead_need_not_be_a_member() -> None:
    """A supervisor who takes no conversations may lead; a lead must be a person."""
    supervisor = valid().replace(
        "people:\n", "people:\n  - {id: olga, name: Olga, email: olga@example.com}\n"
    )
    led = supervisor.replace(
        "        sla_policy: standard\n        members:",
        "        sla_policy: standard\n        lead: olga\n        members:",
    )
    assert "lead: olga" in led and "members: [maria, li]" in led
    cross_check(parse_config(led, source="a.yaml"), source="a.yaml", known_people=set())
    with pytest.raises(ConfigError) as error:
        cross_check(
            parse_config(led.replace("lead: olga", "lead: ghost"), source="a.yaml"),
            source="a.yaml",
            known_people=set(),
        )
    assert error.value.problems == ["a.yaml: tenants[0].teams[0].lead: no person 'ghost'"]


def test_the_example_and_the_demo_share_no_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Applied to one installation, neither changes the other (people are installation-wide)."""
    from pathlib import Path

    from stayhuman.config import load_config
    from stayhuman.supervisor import DEMO_CONFIG

    monkeypatch.setenv("STAYHUMAN_DEMO_PLATFORM_URL", "http://127.0.0.1:8086")  # `up --demo` sets it
    example = load_config(Path(__file__).parents[2] / "examples" / "stayhuman.yaml")
    demo = load_config(DEMO_CONFIG)

    def ids(document):  # type: ignore[no-untyped-def]
        return (
            {p.id for p in document.people},
            {t.id for t in document.tenants},
            {a.id for t in document.tenants for a in t.accounts},
        )

    for mine, theirs in zip(ids(example), ids(demo), strict=True):
        assert mine and theirs and not mine & theirs


ROLES = """\
agency_admins: [ada]
people:
  - {id: ada, name: Ada, email: ada@example.com}
  - {id: tina, name: Tina, email: tina@example.com}
  - {id: vera, name: Vera, email: vera@example.com}
tenants:
  - id: kettle
    name: Kettle & Co
    admins: [tina]
    viewers: [vera]
    api_tokens:
      - {name: deploy, token: deploy-token-aaaaaaaaaaaaaaaaaaaa}
      - {name: reports, token: reports-token-bbbbbbbbbbbbbbbbbbb, role: client_viewer}
"""


def test_roles_are_granted_in_the_file() -> None:
    document = parse_config(ROLES, source="roles.yaml")
    cross_check(document, source="roles.yaml", known_people=set())
    tenant = document.tenants[0]
    assert document.agency_admins == ["ada"]
    assert (tenant.admins, tenant.viewers) == (["tina"], ["vera"])
    assert [token.role for token in tenant.api_tokens] == ["tenant_admin", "client_viewer"]
    # Left out, a list is not given: apply keeps what is stored (see apply's docstrings).
    bare = parse_config(ROLES.replace("agency_admins: [ada]\n", ""), source="roles.yaml")
    assert "agency_admins" not in bare.model_fields_set and bare.agency_admins == []


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (
            "agency_admins: [ada]",
            "agency_admins: [ada, ghost]",
            "config.yaml: agency_admins[1]: no person 'ghost'",
        ),
        ("admins: [tina]", "admins: [ghost]", "config.yaml: tenants[0].admins[0]: no person 'ghost'"),
        (
            "viewers: [vera]",
            "viewers: [vera, nobody]",
            "config.yaml: tenants[0].viewers[1]: no person 'nobody'",
        ),
        ("admins: [tina]", "admins: [tina, tina]", "config.yaml: tenants[0].admins: 'tina' is named twice"),
        (
            "admins: [tina]",
            "admins: [Tina Smith]",
            "config.yaml: tenants[0].admins[0]: String should match pattern",
        ),
        (
            "role: client_viewer",
            "role: agency_admin",
            "config.yaml: tenants[0].api_tokens[1].role: Input should be 'tenant_admin' or 'client_viewer'",
        ),
        (
            "reports-token-bbbbbbbbbbbbbbbbbbb",
            "deploy-token-aaaaaaaaaaaaaaaaaaaa",
            "config.yaml: tenants[0].api_tokens[1].token: the same value as tenants[0].api_tokens[0]; "
            "every token needs its own",
        ),
    ],
)
def test_role_problems_name_the_path(before: str, after: str, expected: str) -> None:
    text = ROLES.replace(before, after)
    assert text != ROLES
    problems = problems_of(text)
    assert any(problem.startswith(expected) for problem in problems), problems
    assert not any("deploy-token-aaaa" in problem for problem in problems)  # never a token's value


def test_people_given_roles_may_be_stored_already() -> None:
    text = ROLES.replace("  - {id: ada, name: Ada, email: ada@example.com}\n", "")
    assert problems_of(text) == ["config.yaml: agency_admins[0]: no person 'ada'"]
    assert problems_of(text, known_people=frozenset({"ada"})) == []


def test_the_summary_counts_role_grants() -> None:
    summary = Summary(created={"role grants": 1}, removed={"role grants": 2}, kept={"role grants": 1})
    assert str(summary) == (
        "created 1 role grant; updated nothing; removed 2 role grants;"
        " kept 1 role grant that the file no longer has (--prune removes them)"
    )


# -- reply credentials ------------------------------------------------------------------------

# A value for each key a reply block may have; the secrets are told apart by their text.
REPLY_VALUES = {
    "page_access_token": "EAAG-page-token-0001",
    "access_token": "user-access-token-0002",
    "refresh_token": "user-refresh-token-0003",
    "client_id": "client-id-4",
    "client_secret": "client-secret-0005",
    "identifier": "kettle.bsky.social",
    "app_password": "abcd-efgh-ijkl-mnop",
    "url": "https://hooks.example.com/stayhuman",
    "secret": "outbound-signing-secret-0006",
    "api_base_url": "https://api.example.com",
    "token_url": "https://api.example.com/oauth2/token",
}
REPLY_SECRET_KEYS = {
    "page_access_token",
    "access_token",
    "refresh_token",
    "client_secret",
    "app_password",
    "secret",
}
VALID_REPLIES = {
    "facebook": ["page_access_token"],
    "instagram": ["page_access_token", "api_base_url"],
    "x": ["access_token", "refresh_token", "client_id", "client_secret", "token_url"],
    "youtube": ["access_token", "refresh_token", "client_id", "client_secret"],
    "mastodon": ["access_token", "api_base_url"],
    "bluesky": ["identifier", "app_password"],
    "other": ["url", "secret"],
}


def with_reply(platform: str, block: Any, **account: Any) -> str:
    """The valid file with its one account on `platform`, replying with `block`."""
    document = yaml.safe_load(valid())
    document["tenants"][0]["accounts"][0].update(platform=platform, reply=block, **account)
    return yaml.safe_dump(document, sort_keys=False)


@pytest.mark.parametrize(("platform", "keys"), VALID_REPLIES.items())
def test_each_platform_takes_its_own_reply_keys(platform: str, keys: list[str]) -> None:
    block = {key: REPLY_VALUES[key] for key in keys}
    text = with_reply(platform, block)
    assert problems_of(text) == []
    reply = parse_config(text, source="config.yaml").tenants[0].accounts[0].reply
    assert reply is not None and reply.given() == block


def test_x_needs_no_client_secret_and_mastodon_may_reply_on_the_instance_it_polls() -> None:
    x = {key: REPLY_VALUES[key] for key in ("access_token", "refresh_token", "client_id")}
    assert problems_of(with_reply("x", x)) == []
    polled = {"api_base_url": "https://mastodon.example", "external_id": "1090", "access_token": "r" * 20}
    assert problems_of(with_reply("mastodon", {"access_token": REPLY_VALUES["access_token"]}, **polled)) == []


def test_an_account_without_a_reply_block_is_not_connected() -> None:
    assert parse_config(valid(), source="config.yaml").tenants[0].accounts[0].reply is None
    assert problems_of(with_reply("facebook", None)) == []


AT = "config.yaml: tenants[0].accounts[0].reply"


@pytest.mark.parametrize(
    ("platform", "keys", "expected"),
    [
        (
            "facebook",
            [],
            [
                f"{AT}.page_access_token: missing; a platform: facebook account replies with page_access_token"
                " (optionally api_base_url)"
            ],
        ),
        (
            "x",
            ["access_token", "client_secret"],
            [
                f"{AT}.{key}: missing; a platform: x account replies with access_token, refresh_token and"
                " client_id (optionally client_secret, api_base_url, token_url)"
                for key in ("refresh_token", "client_id")
            ],
        ),
        (
            "youtube",
            ["access_token", "refresh_token", "client_id"],
            [
                f"{AT}.client_secret: missing; a platform: youtube account replies with access_token,"
                " refresh_token, client_id and client_secret (optionally api_base_url, token_url)"
            ],
        ),
        (
            "mastodon",
            ["access_token"],
            [
                f"{AT}.api_base_url: missing; a platform: mastodon account replies on its instance: give the"
                " instance's URL here or as the account's api_base_url"
            ],
        ),
        (
            "bluesky",
            ["identifier"],
            [
                f"{AT}.app_password: missing; a platform: bluesky account replies with identifier and app_password"
                " (optionally api_base_url)"
            ],
        ),
        ("other", ["secret"], [f"{AT}.url: missing; a platform: other account replies with url and secret"]),
    ],
)
def test_missing_reply_keys_are_named(platform: str, keys: list[str], expected: list[str]) -> None:
    assert problems_of(with_reply(platform, {key: REPLY_VALUES[key] for key in keys})) == expected


@pytest.mark.parametrize(
    ("platform", "extra", "takes"),
    [
        ("facebook", ["refresh_token", "app_password"], "page_access_token (optionally api_base_url)"),
        ("instagram", ["token_url"], "page_access_token (optionally api_base_url)"),
        ("bluesky", ["access_token"], "identifier and app_password (optionally api_base_url)"),
        ("other", ["api_base_url", "page_access_token"], "url and secret"),
        ("mastodon", ["client_id"], "access_token (optionally api_base_url)"),
    ],
)
def test_reply_keys_a_platform_does_not_use_are_named(platform: str, extra: list[str], takes: str) -> None:
    block = {key: REPLY_VALUES[key] for key in [*VALID_REPLIES[platform], *extra]}
    problems = problems_of(with_reply(platform, block))
    assert sorted(problems) == sorted(
        f"{AT}.{key}: a platform: {platform} account does not use {key}; its replies take {takes}"
        for key in extra
    )
    assert not any(REPLY_VALUES[key] in problem for problem in problems for key in REPLY_SECRET_KEYS)


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("url", "ftp://hooks.example.com/in", "url: not an http or https URL"),
        ("url", "https://", "url: not an http or https URL"),
        ("url", "https://hooks.example.com:port/in", "url: not an http or https URL"),
        ("secret", "too-short-secret", None),  # 16 characters: long enough
        ("secret", "short-secret-15", "secret: String should have at least 16 characters"),
        ("password", "a-password-0007", "password: Extra inputs are not permitted"),
    ],
)
def test_reply_values_are_checked_and_never_repeated(key: str, value: str, problem: str | None) -> None:
    block = {"url": REPLY_VALUES["url"], "secret": REPLY_VALUES["secret"], key: value}
    problems = problems_of(with_reply("other", block))
    assert problems == ([f"{AT}.{problem}"] if problem else [])
    assert not any(value in line for line in problems)


def test_a_page_token_shorter_than_a_token_is_refused() -> None:
    assert problems_of(with_reply("facebook", {"page_access_token": "short"})) == [
        f"{AT}.page_access_token: String should have at least 8 characters"
    ]


def test_reply_secrets_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KETTLE_PAGE_TOKEN", "EAAG-from-the-environment")
    text = with_reply("facebook", {"page_access_token": "${KETTLE_PAGE_TOKEN}"})
    reply = parse_config(text, source="config.yaml").tenants[0].accounts[0].reply
    assert reply is not None and reply.given() == {"page_access_token": "EAAG-from-the-environment"}
    monkeypatch.delenv("KETTLE_PAGE_TOKEN")
    assert (
        problems_of(text)[0] == f"{AT}.page_access_token: environment variable KETTLE_PAGE_TOKEN is not set"
    )


def test_a_reply_base_url_is_kept_without_its_trailing_slash() -> None:
    block = {
        "page_access_token": REPLY_VALUES["page_access_token"],
        "api_base_url": "http://127.0.0.1:8123/v21.0/",
    }
    reply = parse_config(with_reply("facebook", block), source="config.yaml").tenants[0].accounts[0].reply
    assert reply is not None and reply.api_base_url == "http://127.0.0.1:8123/v21.0"


def kept_account(text: str) -> tuple[dict[str, Any], str]:
    """The account as the file kept for its tenant has it, and that file's whole text."""
    document = parse_config(text, source="config.yaml")
    kept = scrub(redact(document.source()), secret_values(document))
    return kept["tenants"][0]["accounts"][0], render_yaml(kept)


@pytest.mark.parametrize(("platform", "keys"), VALID_REPLIES.items())
def test_reply_secrets_are_redacted_in_the_kept_file(platform: str, keys: list[str]) -> None:
    block = {key: REPLY_VALUES[key] for key in keys}
    expected = {key: REDACTED if key in REPLY_SECRET_KEYS else value for key, value in block.items()}
    document = parse_config(with_reply(platform, block), source="config.yaml")
    assert redact(document.source())["tenants"][0]["accounts"][0]["reply"] == expected  # where written
    assert {block[key] for key in keys if key in REPLY_SECRET_KEYS} <= secret_values(document)
    account, text = kept_account(with_reply(platform, block))
    assert account["reply"] == expected
    assert not any(block[key] in text for key in keys if key in REPLY_SECRET_KEYS)


def test_a_reply_url_with_credentials_is_redacted_and_its_password_wherever_it_is_pasted() -> None:
    url = "https://stayhuman:hook-password-0008@hooks.example.com/in"
    document = yaml.safe_load(with_reply("other", {"url": url, "secret": REPLY_VALUES["secret"]}))
    document["tenants"][0]["topics"] = [{"name": "general", "default": True, "team": "care"}]
    document["tenants"][0]["name"] = "Acme hook-password-0008"
    account, text = kept_account(yaml.safe_dump(document, sort_keys=False))
    assert account["reply"] == {"url": REDACTED, "secret": REDACTED}
    assert "hook-password-0008" not in text and "hooks.example.com" not in text


@given(
    secret=st.text(
        st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp")),
        min_size=16,
        max_size=60,
    )
)
def test_no_reply_secret_reaches_the_kept_file(secret: str) -> None:
    """Whatever a secret's text, the kept file holds it nowhere (not even pasted into a name)."""
    document = yaml.safe_load(with_reply("other", {"url": REPLY_VALUES["url"], "secret": secret}))
    document["tenants"][0]["name"] = f"Acme {secret}"
    _, text = kept_account(yaml.safe_dump(document, sort_keys=False))
    assert secret not in text
