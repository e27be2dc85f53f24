"""The container files agree with the code: commands, ports, variables."""

from pathlib import Path

import yaml

ROOT = Path(__file__).parents[2]


def test_compose_runs_each_service_with_its_subcommand() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    for name in ("ingest", "router", "notify", "migrate"):
        assert services[name]["command"] == [name]
    for name in ("ingest", "router", "notify"):
        depends = services[name]["depends_on"]
        assert depends["nats"]["condition"] == "service_healthy"
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["environment"]["STAYHUMAN_HOST"] == "0.0.0.0"
    # no secret is committed: the password must come from the environment
    assert "${POSTGRES_PASSWORD:?" in (ROOT / "compose.yaml").read_text()


def test_dockerfile_runs_as_non_root_without_the_embedded_nats() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "USER stayhuman" in dockerfile
    assert 'ENTRYPOINT ["stayhuman"]' in dockerfile
    assert "rm -f /opt/stayhuman/bin/nats-server" in dockerfile
