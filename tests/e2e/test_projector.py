"""Projector mode in a real browser at 1280 x 720 (issue 26, item 6): the round walkthrough's step, its
diagram and the diagram's text on screen without scrolling, no label cut, text of 14 px or more side by
side at n = 4 and n = 8; Live with its curves large. Measured in the page itself (bounding boxes, the
SVG's scale times its font sizes, scrollWidth against clientWidth); screenshots in
``artifacts/screenshots/projector-*.png``.
"""

from __future__ import annotations

import re

from tests.e2e.support import settle, shoot
from tests.pages.support import train_runs

SCREEN = {"width": 1280, "height": 720}
MIN_TEXT_PX = 14

# Every element of the page (and of an open popover) whose text does not fit: a label cut with an ellipsis
# or clipped, or a select showing only part of its choice.
CUT_LABELS = """() => {
  const roots = [...document.querySelectorAll("[data-testid='stMain'], [data-testid='stPopoverBody']")];
  const cut = [];
  for (const e of roots.flatMap(r => [...r.querySelectorAll("*")])) {
    const text = e.tagName === "INPUT" ? e.value : e.textContent.trim();
    if (!text || e.clientWidth === 0 || e.scrollWidth <= e.clientWidth + 1) continue;
    const style = getComputedStyle(e);
    if (e.tagName === "INPUT" || style.textOverflow === "ellipsis" || ["hidden", "clip"].includes(style.overflowX))
      cut.push(`${text.slice(0, 40)} (${e.scrollWidth} px in ${e.clientWidth})`);
  }
  return cut;
}"""

# Each diagram: where it is on screen, where its lowest text ends, its smallest text in screen pixels (the
# font size times the SVG's scale on screen), and any text that runs outside the diagram.
DIAGRAMS = """() => [...document.querySelectorAll("svg[role='img'][aria-label]")].map(svg => {
  const box = svg.getBoundingClientRect(), view = svg.viewBox.baseVal;
  const texts = [...svg.querySelectorAll("text")].filter(t => t.textContent.trim());
  return {top: box.top, bottom: box.bottom, left: box.left, right: box.right,
          textBottom: Math.max(...texts.map(t => t.getBoundingClientRect().bottom)),
          minPx: Math.min(...texts.map(t => parseFloat(getComputedStyle(t).fontSize) * t.getScreenCTM().a)),
          outside: texts.filter(t => { const b = t.getBBox();
            return b.x < -0.5 || b.y < -0.5 || b.x + b.width > view.width + 0.5 || b.y + b.height > view.height + 0.5;
          }).map(t => t.textContent)};
})"""

CHART_TEXT_PX = """() => [...document.querySelectorAll('.js-plotly-plot text')].filter(t => t.textContent.trim())
  .map(t => [t.textContent, parseFloat(getComputedStyle(t).fontSize)])"""


def open_step(page, url: str, heading: str, columns: int = 1) -> None:
    """Open ``url`` and wait until its step (a heading with ``heading`` in it) has its ``columns`` diagrams."""
    page.goto(url)
    page.get_by_role("heading", name=re.compile(re.escape(heading))).first.wait_for(timeout=90_000)
    page.locator("svg[role='img'][aria-label]").nth(columns - 1).wait_for(timeout=30_000)
    settle(page, 60_000)
    text = page.locator("[data-testid='stMain']").inner_text()
    assert "Traceback" not in text and page.locator("[data-testid='stException']").count() == 0


def chrome_hidden(page) -> bool:
    return not page.locator("[data-testid='stSidebar']").is_visible() and \
        not page.locator("[data-testid='stHeader']").is_visible()


def assert_fits_the_screen(page, diagrams: int) -> list[dict]:
    """The step's diagram(s) on screen without scrolling, every text of them at least 14 px, none cut."""
    shown = page.evaluate(DIAGRAMS)
    assert len(shown) == diagrams
    for d in shown:
        assert d["top"] >= 0 and d["bottom"] <= SCREEN["height"] and d["right"] <= SCREEN["width"], d
        assert d["textBottom"] <= SCREEN["height"], d
        assert d["minPx"] >= MIN_TEXT_PX, d
        assert d["outside"] == [], d
    assert page.evaluate("document.querySelector(\"[data-testid='stMain']\").scrollTop") == 0
    assert page.evaluate(CUT_LABELS) == []
    return shown


def test_walkthrough_on_a_projector_fits_1280_by_720(start_app, browser):
    app = start_app(readonly=True)
    page = browser.new_page(viewport=SCREEN)
    measured = {}
    for algo, n, columns in (("locfedmix_sl", 4, 1), ("locfedmix_sl", 8, 1), ("parallel_sl&vs=locfedmix_sl", 4, 2),
                             ("parallel_sl&vs=locfedmix_sl", 8, 2)):
        open_step(page, f"{app.url}/walkthrough?algo={algo}&n={n}&data=digits&step=4&projector=1",
                  "Smashed-data mixup" if columns == 1 else "LocFedMix-SL", columns)
        assert chrome_hidden(page)
        shown = assert_fits_the_screen(page, columns)
        measured[algo, n] = [round(d["minPx"], 1) for d in shown]
        assert page.evaluate(f"[...document.querySelectorAll('svg text')].filter(t => t.textContent === "
                             f"'client {n - 1}').length") == columns  # every client drawn
        if columns == 1:  # one algorithm: its words beside the diagram, on screen too
            words = page.get_by_text(re.compile(r"^The server mixes each client's smashed data")).bounding_box()
            assert words["y"] + words["height"] <= SCREEN["height"]
        shoot(page, f"projector-walkthrough-{'side-by-side' if columns == 2 else 'one'}-n{n}")
    print("smallest diagram text (px):", measured)

    # the settings behind one button, named by what is shown; nothing in it cut either
    page.get_by_role("button", name="Parallel SL and LocFedMix-SL · n = 8 · digits").click()
    page.get_by_role("combobox", name="algorithm").wait_for()
    assert page.evaluate(CUT_LABELS) == []
    shoot(page, "projector-walkthrough-settings")
    page.keyboard.press("Escape")

    # a step with bar charts: their text at least 14 px too
    open_step(page, f"{app.url}/walkthrough?algo=parallel_sl&vs=locfedmix_sl&n=8&data=digits&step=6&projector=1",
              "Parallel SL", 2)
    assert_fits_the_screen(page, 2)
    charts = page.locator(".js-plotly-plot")
    charts.last.scroll_into_view_if_needed()
    page.locator(".js-plotly-plot .xtick").last.wait_for(timeout=20_000)
    sizes = page.evaluate(CHART_TEXT_PX)
    assert charts.count() == 2 and sizes and min(px for _, px in sizes) >= MIN_TEXT_PX, sizes
    shoot(page, "projector-walkthrough-charts")


def test_projector_toggle_keeps_the_link_and_the_normal_view_cuts_no_label(start_app, browser):
    app = start_app(readonly=True)
    page = browser.new_page(viewport=SCREEN)
    open_step(page, f"{app.url}/walkthrough?algo=locfedmix_sl_splitlr&vs=sglr&n=8&data=fashion-mnist&step=1",
              "LocFedMix-SL + SplitLr", 2)
    assert page.get_by_role("heading", name="Round walkthrough").is_visible()
    assert page.locator("[data-testid='stSidebar']").is_visible()
    assert page.evaluate(CUT_LABELS) == []  # the longest preset's name, First, autoplay, the data set: whole
    shoot(page, "projector-walkthrough-off")

    open_step(page, f"{app.url}/walkthrough?algo=parallel_sl&vs=locfedmix_sl&n=8&data=digits&step=4",
              "Smashed-data mixup", 2)

    page.get_by_text("projector", exact=True).click()
    page.wait_for_url(re.compile(r"projector=1"), timeout=20_000)
    page.locator("[data-testid='stSidebar']").wait_for(state="hidden", timeout=20_000)
    page.get_by_role("heading", name="Round walkthrough").wait_for(state="detached", timeout=20_000)
    page.get_by_role("heading", name="LocFedMix-SL", exact=True).wait_for(timeout=20_000)  # a column, in one line
    page.locator("svg[role='img'][aria-label]").nth(1).wait_for(timeout=20_000)
    settle(page)
    assert chrome_hidden(page)
    assert_fits_the_screen(page, 2)

    page.reload()  # a bookmark of this address opens in projector mode
    page.locator("svg[role='img'][aria-label]").nth(1).wait_for(timeout=60_000)
    settle(page)
    assert chrome_hidden(page)
    assert page.get_by_role("switch", name="projector").is_checked()
    page.get_by_text("projector", exact=True).click()
    page.wait_for_url(lambda url: "projector" not in url, timeout=20_000)
    page.get_by_role("heading", name="Round walkthrough").wait_for(timeout=20_000)
    page.locator("[data-testid='stSidebar']").wait_for(timeout=20_000)  # back when the run's style is gone
    settle(page)
    assert page.locator("[data-testid='stSidebar']").is_visible() and not chrome_hidden(page)


def test_live_on_a_projector_draws_its_curves_large(start_app, browser):
    app = start_app()
    base = {"num_clients": 2, "rounds": 6, "batch_size": 8, "eval_every": 1,
            "data": {"dataset": "synthetic", "eval_subset": 32}}
    (run_id,) = train_runs(app.db_url, [("on the projector", {})], base=base)
    page = browser.new_page(viewport=SCREEN)
    page.goto(f"{app.url}/live?run={run_id}&projector=1")
    page.locator(".js-plotly-plot .scatterlayer .trace").first.wait_for(timeout=60_000)
    settle(page)
    assert chrome_hidden(page)
    curves = page.locator(".js-plotly-plot")
    for chart in (curves.nth(0), curves.nth(1)):  # accuracy and loss, side by side, filling the screen
        box = chart.bounding_box()
        assert box["y"] >= 0 and box["y"] + box["height"] <= SCREEN["height"], box
        assert box["height"] >= 480 and box["width"] >= 560, box
    sizes = page.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')].slice(0, 2)
        .flatMap(p => [...p.querySelectorAll('text')]).filter(t => t.textContent.trim())
        .map(t => parseFloat(getComputedStyle(t).fontSize))""")
    assert sizes and min(sizes) >= 16
    assert page.evaluate(CUT_LABELS) == []
    shoot(page, "projector-live")

    page.get_by_text("projector", exact=True).click()  # off: the normal page, the link without the mode
    page.get_by_role("heading", name="Live").wait_for(timeout=20_000)
    page.locator("[data-testid='stSidebar']").wait_for(timeout=20_000)  # back when the run's style is gone
    settle(page)
    assert "projector" not in page.url and f"run={run_id}" in page.url
    assert page.locator("[data-testid='stSidebar']").is_visible()
