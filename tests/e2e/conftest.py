from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.stack import Stack
from tests.helpers import config_yaml

SECRET = "e2e-secret-0123456789"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One running stack per test module, configured with tenant `acme`."""
    workdir = tmp_path_factory.mktemp("stack")
    running = Stack(workdir)
    config = workdir / "acme.yaml"
    config.write_text(config_yaml(tenant="acme", account="acme-fb", secret=SECRET, people=["maria", "li"]))
    running.cli("migrate")
    running.cli("apply", "-f", str(config))
    running.start()
    yield running
    running.stop()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
