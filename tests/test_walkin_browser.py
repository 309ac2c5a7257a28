"""A walk-in in headless Chromium (Playwright): a dispatcher at a station types the address
the person gives, sees the LVF's validated candidates with the PSAP serving them, takes one
with the keyboard, creates the incident, and finds it on the board with its location."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import console_kit
import pytest
from console_kit import SHOTS, chromium
from playwright.sync_api import Browser, expect
from test_walkin import PW, USERS, build_world, expected_psap, make_cad

from firebox.console.app import console_app
from firebox.console.audit import ConsoleAudit
from firebox.console.testing import serve


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    world = build_world(tmp_path_factory.mktemp("demo"))
    cad = make_cad(world)
    app = console_app(cad=cad, users=USERS, audit=ConsoleAudit(tmp_path_factory.mktemp("console") / "audit.db"),
                      cad_poll_s=0.5, leaflet_dir=None)  # fmt: skip
    with serve(app) as url:
        yield {"url": url, "cad": cad, "world": world}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


def test_walk_in_from_a_searched_address(server: dict[str, Any], browser: Browser) -> None:
    url, world = server["url"], server["world"]
    seg, station = world["seg"], world["state"].stations[0]
    page = console_kit.sign_in(browser, url, "ff", PW)
    page.get_by_role("link", name="Incidents").click()
    expect(page.get_by_role("heading", name="Incident board")).to_be_visible()
    page.get_by_label("Type", exact=True).select_option("ems")
    page.get_by_label("Subtype").select_option("medical")
    page.get_by_label("Walked in at station").fill(station.id)
    search = page.get_by_role("combobox", name="Find address or landmark")
    search.fill(f"{seg.l_from} {seg.street_name} {seg.town.lower()}")
    results = page.get_by_role("listbox", name="Locations found")
    expect(results.get_by_role("option").first).to_contain_text(f"{seg.l_from} {seg.street_name} {seg.street_type}")
    expect(results.get_by_role("option").first).to_contain_text("validated")
    page.screenshot(path=str(SHOTS / "walkin-search.png"), full_page=True)
    # The keyboard: down to the first result, Enter takes it (and does not submit the form).
    search.press("ArrowDown")
    expect(results.get_by_role("option").first).to_have_attribute("aria-selected", "true")
    search.press("Enter")
    expect(results).to_be_hidden()
    chosen = page.locator("#new-q-chosen")
    expect(chosen).to_contain_text("validated")
    expect(chosen).to_contain_text("PSAP")
    expect(page.get_by_label("Number")).to_have_value(str(seg.l_from))
    expect(page.get_by_label("Town", exact=True)).to_have_value(seg.town)
    page.get_by_label("Narrative").fill("walked in at the station: neighbour collapsed")
    page.get_by_role("button", name="Create incident").click()
    # The incident: validated, at the LVF's point, served by the PSAP of that point.
    expect(page.get_by_role("heading", name="Recommended units")).to_be_visible()
    expect(page.locator("dd").filter(has_text="validated").first).to_be_visible()
    incident = next(i for i in server["cad"].incidents() if i.source.station == station.id)
    assert incident.location.validated is True and incident.location.method == "lvf"
    expect(page.locator("#incident-served")).to_contain_text(expected_psap(world, incident.location.point))
    # On the board with its location.
    page.get_by_role("link", name="Incidents").click()
    row = page.locator(f'#incident-board tr[data-id="{incident.id}"]')
    expect(row).to_contain_text(f"{seg.l_from} {seg.street_name} {seg.street_type}")
    expect(row).to_contain_text(seg.town)
    expect(row).not_to_contain_text("unvalidated")
    page.screenshot(path=str(SHOTS / "walkin-board.png"), full_page=True)
    assert page.errors == []  # type: ignore[attr-defined]
    page.close()
