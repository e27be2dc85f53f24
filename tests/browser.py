"""Debian's chromium, headless, as a real browser for the page tests."""

import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    found = shutil.which("chromium")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("chromium is missing in CI: .ci/run installs it with scripts/ensure-chromium")
    pytest.skip("chromium is not installed (scripts/ensure-chromium installs it)")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )


def dump_dom(url: str) -> str:
    """The page's DOM after the browser loaded and ran it."""
    return _run("--virtual-time-budget=2000", "--dump-dom", url).stdout


def screenshot(url: str, path: Path) -> Path:
    _run("--window-size=1000,1200", f"--screenshot={path}", url)
    return path


@asynccontextmanager
async def playwright_browser() -> AsyncIterator["Browser"]:
    """Debian's chromium driven by Playwright for Python (its own browser download is not used)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as driver:
        browser = await driver.chromium.launch(
            executable_path=chromium(), headless=True, args=[flag for flag in FLAGS if flag != "--headless"]
        )
        try:
            yield browser
        finally:
            await browser.close()


AXE = Path(__file__).parent / "fixtures" / "axe" / "axe.min.js"


async def accessibility_problems(page: "Page") -> list[str]:
    """What axe-core finds against WCAG 2 A and AA on the page as it stands (labels, contrast,
    names, structure), one line per rule broken. The page's context must bypass its CSP: axe
    is loaded into it as a script of the test's."""
    await page.add_script_tag(path=AXE)
    found = await page.evaluate(
        "async () => (await axe.run(document, {runOnly: {type: 'tag', values: "
        "['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})).violations"
        ".map(v => `${v.impact} ${v.id}: ${v.help} (${v.nodes.map(n => n.target.join(' ')).join(', ')})`)"
    )
    return [str(line) for line in found]
