"""The browser kit of the console tests: headless Chromium (Debian's, through Playwright),
signing in, and where screenshots go."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"


@contextmanager
def chromium() -> Iterator[Browser]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def sign_in(browser: Browser, url: str, name: str, password: str, *, height: int = 1100, via_root: bool = False) -> Page:
    """A page signed in to the console at ``url`` as ``name``; ``page.errors`` collects the
    page's JavaScript errors. ``via_root``: start at the console's root and be sent to the
    sign-in page."""
    page = browser.new_page(viewport={"width": 1500, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors  # type: ignore[attr-defined]
    if via_root:
        page.goto(url + "/")
        expect(page).to_have_url(url + "/signin")
    else:
        page.goto(url + "/signin")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(url + "/")
    expect(page.locator("#live")).to_have_text("live")
    return page
