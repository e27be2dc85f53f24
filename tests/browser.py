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
    from playwright.async_api import Browser

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
