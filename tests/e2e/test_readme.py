"""The README's snippets and tables are true."""

import json
import re
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.api.settings import ApiSettings
from services.ingest.settings import IngestSettings
from services.notify.settings import NotifySettings
from services.outbound.settings import OutboundSettings
from services.router.settings import RouterSettings
from shared.events import Platform
from stayhuman.supervisor import DEMO_CONFIG, UpSettings
from tests.e2e.stack import Stack

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"


def shell_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", README.read_text(), re.DOTALL)


def test_every_setting_is_documented() -> None:
    text = README.read_text()
    for settings in (
        IngestSettings,
        RouterSettings,
        NotifySettings,
        ApiSettings,
        OutboundSettings,
        UpSettings,
    ):
        for name in settings.model_fields:
            assert f"STAYHUMAN_{name.upper()}`" in text, f"STAYHUMAN_{name.upper()} missing from README"


def documented_conversation_fields() -> set[str]:
    """The fields the Commands section lists for `stayhuman conversations --json`."""
    text = README.read_text()
    listing = text[text.index("`--json` gives a list of") : text.index("(the customer's last message)")]
    return set(re.findall(r"`([a-z_]+)`", listing)) - {"null", "no_sla"}


def test_the_configuration_reference_names_every_platform() -> None:
    text = README.read_text()
    section = text[text.index("## Configuration") : text.index("### Settings")]
    for platform in Platform:
        assert f"`{platform.value}`" in section
    example = (ROOT / "examples" / "stayhuman.yaml").read_text()
    assert ", ".join(p.value for p in Platform if p is not Platform.other) + " or other" in example


def test_the_two_commands_are_shown() -> None:
    assert "make run" in shell_blocks()[0] and "make test" in shell_blocks()[0]


@pytest.mark.e2e
def test_the_curl_example_is_routed_to_a_deadline_next_to_the_example_configuration(tmp_path: Path) -> None:
    """The demo, then the README's `apply` of examples/stayhuman.yaml, then its curl: the comment
    is accepted, assigned within the demo and given a deadline that will alert."""
    apply_snippet = next(block for block in shell_blocks() if "apply -f examples/stayhuman.yaml" in block)
    curl_snippet = next(block for block in shell_blocks() if "curl" in block)
    stack = Stack(tmp_path / "demo").start("--demo")
    try:
        subprocess.run(
            ["bash", "-euo", "pipefail", "-c", apply_snippet], cwd=ROOT, env=stack.env(), check=True
        )
        # The demo's replies go to the platform `up --demo` printed: the same address, no change.
        platform = re.search(r"^  platform  (http://\S+)/  ", stack.logs(), re.MULTILINE)
        assert platform is not None, stack.logs()[-3000:]
        stack.env_overrides["STAYHUMAN_DEMO_PLATFORM_URL"] = platform.group(1)
        again = stack.cli("apply", "-f", str(DEMO_CONFIG))
        assert again.stdout.endswith(": created nothing; updated nothing\n")  # the example changed none of it
        sent_at = datetime.now(UTC)
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", curl_snippet],
            env={k: v for k, v in stack.env().items() if k != "INGEST_PORT"},  # the setting's own name
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        answer = json.loads(result.stdout)
        assert answer["status"] == "accepted" and answer["duplicate"] is False

        def routed() -> dict[str, Any] | None:
            rows = json.loads(stack.cli("conversations", "--tenant", "kettle", "--json").stdout)
            return next((row for row in rows if row["thread"] == "post-77" and row["owner"]), None)

        deadline = time.monotonic() + 30
        while (row := routed()) is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert row is not None, stack.logs()[-3000:]
        assert row["author"] == "Dana Reyes" and row["owner"] in {"rosa", "kai"}
        assert set(row) == documented_conversation_fields()
        due = datetime.fromisoformat(row["due_at"])  # it alerts: the demo's 45 s from when it was written
        assert sent_at - timedelta(seconds=2) < due - timedelta(seconds=45) <= datetime.now(UTC)
        accounts = {a["id"]: a for a in json.loads(stack.cli("accounts", "--json").stdout)}
        assert accounts["kettle-fb"]["state"] == "ok" and accounts["kettle-fb"]["last_event_at"]
        assert accounts["bluebird-fb"]["state"] == "waiting"
    finally:
        stack.stop()
