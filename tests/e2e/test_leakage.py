"""Privacy leakage in a real browser: runs a real worker trained with ``privacy.every`` (and one
without; the session's ``leakage_db``) on the InfoPro, Compare and result pages, on a full host and
a read-only one. Each page draws its leakage section with no traceback and never shows "None" or
"nan"; screenshots go to ``artifacts/screenshots/leakage-*.png``.
"""

from __future__ import annotations

import re
import shutil

import pytest

from storage.db import close
from tests.e2e.support import settle, shoot, wait_drawn

TALL = {"width": 1400, "height": 3200}  # Streamlit scrolls inside its main block: a tall window shows it all


def main_text(page) -> str:
    return page.locator("[data-testid='stMain']").inner_text()


def visit(page, url: str, heading: str, charts: int = 0) -> str:
    """Open ``url``; once its heading shows, wait for the script run to end and for ``charts`` charts
    (on a loaded machine the run may end its first 300 ms without the status widget having shown)."""
    page.goto(url)
    page.get_by_role("heading", name=heading).first.wait_for(timeout=60_000)
    settle(page, 60_000)
    if charts:
        page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot').length >= {charts}", timeout=60_000)
    wait_drawn(page)  # the charts and images
    text = main_text(page)
    assert "Traceback" not in text and page.locator("[data-testid='stException']").count() == 0, url
    assert not re.search(r"\bNone\b|\bnan\b", text), url
    return text


@pytest.mark.parametrize("readonly", [False, True], ids=["full", "read-only"])
def test_leakage_pages_in_a_browser(start_app, browser, leakage_db, tmp_path, readonly):
    shutil.copy(leakage_db, tmp_path / "e2e.db")
    app = start_app(readonly=readonly)
    page = browser.new_page(viewport=TALL)
    mode = "readonly" if readonly else "full"

    text = visit(page, f"{app.url}/infopro?run=1", "What the server can see", charts=2)
    assert "attacks client 0 at round 4" in text and "attack SSIM" in text
    assert page.get_by_role("img").count() >= 4  # three clients' snapshots and the server's view
    assert page.locator(".js-plotly-plot").count() == 2  # reconstruction MSE, leakage over rounds
    shoot(page, f"leakage-infopro-{mode}")

    text = visit(page, f"{app.url}/infopro?run=3", "What the server can see")
    assert "Run #3 did not measure privacy leakage" in text
    assert ("New run form" in text) != readonly  # a read-only host has no form to point to
    shoot(page, f"leakage-infopro-hint-{mode}")

    text = visit(page, f"{app.url}/compare", "Compare", charts=2)
    assert "Privacy-utility trade-off" in text and "1 finished run on digits left out" in text
    assert page.locator(".js-plotly-plot").count() == 2  # the trade-off, accuracy against n
    shoot(page, f"leakage-compare-{mode}")

    text = visit(page, f"{app.url}/run?run=1", "Run #1: lfm leaky", charts=6)
    assert "What the server can see (leakage at round 4, client 0)" in text
    assert page.locator(".js-plotly-plot").count() == 6  # four curves, two leakage figures
    shoot(page, f"leakage-result-{mode}")
    close(app.db_url)
