from datetime import timedelta

import pytest

from stayhuman.config import ConfigError, cross_check, parse_config
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


def test_the_shipped_examples_are_valid() -> None:
    from pathlib import Path

    from stayhuman.config import load_config
    from stayhuman.supervisor import DEMO_CONFIG

    for path in (Path(__file__).parents[2] / "examples" / "stayhuman.yaml", DEMO_CONFIG):
        document = load_config(path)
        cross_check(document, source=str(path), known_people=set())
