"""The status page in headless Chromium (Playwright) at a phone's size, served by uvicorn on
127.0.0.1: a PSAP is cut on the board and its towns turn "Down" on the open page without a
reload; the search box filters as one types."""

from __future__ import annotations

from console_kit import SHOTS, chromium
from playwright.sync_api import expect

from firebox.alerting.status import board_from_demo
from firebox.alerting.statuspage import create_status_app
from firebox.console.testing import serve
from firebox.demo.state import generate_state
from firebox.monitor.detector import Outage, OutageScope, OutageState

T0 = 1_741_107_600.0


def test_town_turns_down_live_when_its_psap_is_cut() -> None:
    state = generate_state(seed=911, n_towns=60)
    board = board_from_demo(state, now=T0)
    psap = next(p for p in state.psaps if len(p.towns) >= 3)
    town = state.town(psap.towns[0])
    assert town is not None
    app = create_status_app(board, title="Demo State 911 status", poll_seconds=0.5)
    with serve(app) as url, chromium() as browser:
        page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url + "/status/")
        card = page.locator(f"#{town.id}")
        expect(card.locator(".badge")).to_have_text("Working")
        expect(page.locator("#summary")).to_have_text("911 is working in all 60 towns.")
        expect(page.locator("#live")).to_have_text("live", timeout=10_000)  # the script polls
        page.evaluate("window.__notReloaded = true")

        # The detector confirms the PSAP's outage; the board takes it (as the monitor would).
        cut = Outage(id=f"psap-{psap.id}-1", scope=OutageScope.PSAP, key=psap.id, state=OutageState.CONFIRMED,
                     started=T0 + 60, cause="test calls get no answer", updated=T0 + 60)  # fmt: skip
        board.apply_outage(cut.as_dict(), T0 + 60)

        expect(card.locator(".badge")).to_have_text("Down", timeout=10_000)
        expect(card).to_have_class("town down")
        expect(page.locator("#summary")).to_contain_text(f"911 is down in {len(psap.towns)} towns")
        assert page.evaluate("window.__notReloaded") is True  # updated in place
        # Towns not working come first; what to do instead is open, with a tel: link.
        first_ids = page.locator("#towns > li").evaluate_all("els => els.map(e => e.id)")
        assert set(first_ids[: len(psap.towns)]) == set(psap.towns)
        expect(card.locator(f'a[href="tel:+1{psap.business_line}"]')).to_be_visible()
        expect(card.locator("details")).to_have_attribute("open", "")
        page.screenshot(path=str(SHOTS / "status_page.png"), full_page=False)

        # The search box filters as one types (no reload, no request).
        page.get_by_label("Find your town").fill(town.title[:6])
        expect(card).to_be_visible()
        other = next(t for t in state.towns if town.title[:6].lower() not in t.title.lower())
        expect(page.locator(f"#{other.id}")).to_be_hidden()

        # Cleared: back to working, live.
        board.apply_outage({**cut.as_dict(), "state": "cleared", "end": None}, T0 + 120)
        expect(card.locator(".badge")).to_have_text("Working", timeout=10_000)
        assert errors == []
    assert (SHOTS / "status_page.png").stat().st_size > 10_000
