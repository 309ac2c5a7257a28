"""The demo page's "break something" panel in headless Chromium, on the demo's own node (call
handling, monitor, changes, status page, alerting; test calls every second): the
Massachusetts rule is refused with the calls it would hit; a PSAP cut from the page shows
its outage confirmed, then cleared after "heal all". Every wait is bounded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.sync_api import expect
from rich.console import Console

from console_kit import chromium
from firebox.console.testing import free_port, serve_built
from firebox.deployment import load_deployment
from firebox.node import build_node, start_sip, stop_sip, write_demo
from firebox.web.demo import install_demo_controls


def demo_node(tmp_path: Path) -> Any:
    port = free_port()

    async def build() -> tuple[Any, Any, Any]:
        path, state = write_demo(tmp_path / "run", seed=911, n_towns=40, listen=f"127.0.0.1:{port}",
                                 sip_listen="127.0.0.1:0", call_handling=True, console=Console(quiet=True))  # fmt: skip
        text = path.read_text()
        assert "probe_period_seconds: 30.0" in text
        path.write_text(text.replace("probe_period_seconds: 30.0", "probe_period_seconds: 1.0"))
        node = build_node(load_deployment(path), console=Console(quiet=True))
        (app,) = node.apps.values()
        assert not any(getattr(r, "path", None) == "/demo" for r in app.routes)  # as `firebox serve` builds it
        faults = install_demo_controls(node)
        http = await start_sip(node)

        async def close() -> None:
            faults.close()
            await stop_sip(node)
            if http is not None:
                await http.aclose()
            node.policy_store.close()

        return app, (node, state), close

    return serve_built(build, timeout_s=120)


def test_cut_a_psap_from_the_page_then_heal(tmp_path: Path) -> None:
    with demo_node(tmp_path) as (url, (node, state)), chromium() as browser:
        victim = next(p for p in state.psaps if p.alternates)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url + "/")
        panel = page.locator("#demobox")
        expect(panel).to_be_visible(timeout=20_000)
        expect(panel).to_contain_text("demo only")

        page.get_by_role("button", name="Apply the bad firewall rule").click()
        expect(page.locator("#demo-result")).to_contain_text("firebox refused the rule", timeout=20_000)
        assert node.core.bcf.rules.rules == ()  # nothing applied

        page.get_by_label("PSAP to cut").select_option(victim.id)
        page.get_by_role("button", name="Cut a PSAP").click()
        expect(page.locator("#demo-result")).to_contain_text("is cut off")
        row = page.locator(f'#demo-outages tr[data-key="{victim.id}"][data-state="confirmed"]')
        expect(row).to_be_visible(timeout=60_000)
        # its towns turn red on the map
        expect(page.locator(f'#map path.down[data-psap="{victim.id}"]').first).to_be_attached()
        page.screenshot(path=str(tmp_path / "cut.png"))

        page.get_by_role("button", name="Heal all").click()
        expect(page.locator(f'#demo-outages tr[data-key="{victim.id}"][data-state="cleared"]')).to_be_visible(timeout=60_000)
        expect(row).to_have_count(0, timeout=10_000)
        expect(page.locator("#map path.down")).to_have_count(0)
        assert errors == []
