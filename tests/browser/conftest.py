"""A real headless Chromium (Debian's package, never a downloaded browser) driven by
Playwright against Django's live server. Skipped when chromium or Playwright is missing
(`make test` installs both: scripts/ensure-browser.sh and the dev extra)."""

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.telephony.conftest import mango, mango_server, pbx  # noqa: F401 (fixtures)

CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.fixture(scope="session")
def chromium() -> Iterator:
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (scripts/ensure-browser.sh installs it)")
    # Playwright's sync API keeps an event loop running in this thread, so Django believes it
    # is called from async code and refuses ORM calls; nothing here is really concurrent.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with playwright_api.sync_playwright() as playwright:
        # --no-sandbox: the suite may run as root in a container, where the sandbox cannot start.
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        yield browser
        browser.close()


@pytest.fixture
def browser_context(chromium) -> Iterator:
    context = chromium.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    context.set_default_timeout(15_000)
    yield context
    context.close()


@pytest.fixture
def screenshot(tmp_path: Path):
    """Full-page PNG of a page; kept under docs/screenshots/ when SAVE_SCREENSHOTS=1."""

    def take(page, name: str) -> Path:
        path = tmp_path / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 5000  # a real rendering, not a blank page
        if os.environ.get("SAVE_SCREENSHOTS") == "1":
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, SCREENSHOTS / path.name)
        return path

    return take
