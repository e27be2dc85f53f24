"""The repository stands alone: its tests read nothing beside it, and its tools are pinned."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_tests_read_nothing_outside_the_repository() -> None:
    outside = re.compile(r"\.\./shared|parents\[3\]|\"shared\" / \"fixtures\"")
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "tests").rglob("*.py")
        if path.name != Path(__file__).name and outside.search(path.read_text())
    ]
    assert offenders == []
    assert (ROOT / "tests" / "fixtures" / "platforms" / "signed_requests.json").is_file()


def test_lint_and_type_tools_are_pinned() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    pins = {re.split(r"[=<>!~\[]", spec, maxsplit=1)[0].lower(): spec for spec in extras}
    for tool in ("ruff", "mypy", "types-pyyaml"):
        assert "==" in pins[tool], f"{tool} must be pinned exactly: {pins[tool]}"


def test_makefile_has_the_documented_targets() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in ("run", "test", "install", "test-unit", "lint", "typecheck", "bench"):
        assert re.search(rf"^{re.escape(target)}:", makefile, re.M), target
