"""The README's snippets and tables are true."""

import json
import re
import subprocess
from pathlib import Path

import pytest

from services.ingest.settings import IngestSettings
from services.notify.settings import NotifySettings
from services.router.settings import RouterSettings
from stayhuman.supervisor import UpSettings
from tests.e2e.stack import Stack

README = Path(__file__).parents[2] / "README.md"


def shell_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", README.read_text(), re.DOTALL)


def test_every_setting_is_documented() -> None:
    text = README.read_text()
    for settings in (IngestSettings, RouterSettings, NotifySettings, UpSettings):
        for name in settings.model_fields:
            assert f"STAYHUMAN_{name.upper()}`" in text, f"STAYHUMAN_{name.upper()} missing from README"


def test_the_two_commands_are_shown() -> None:
    assert "make run" in shell_blocks()[0] and "make test" in shell_blocks()[0]


@pytest.mark.e2e
def test_the_curl_example_is_accepted_by_the_demo(tmp_path: Path) -> None:
    snippet = next(block for block in shell_blocks() if "curl" in block)
    stack = Stack(tmp_path / "demo").start("--demo")
    try:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", snippet],
            env={**stack.env(), "INGEST_PORT": str(stack.ports["ingest"])},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        answer = json.loads(result.stdout)
        assert answer["status"] == "accepted" and answer["duplicate"] is False
        listing = stack.cli("conversations", "--tenant", "bluebird")
        assert "Dana Reyes" in listing.stdout and "oat latte" in listing.stdout
    finally:
        stack.stop()
