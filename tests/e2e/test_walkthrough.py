"""The Round walkthrough in a real browser: LocFedMix-SL opened by a link at its mixup step, stepped with
the keyboard to its averaging step (screenshots of both: ``artifacts/screenshots/walkthrough-*.png``),
two algorithms side by side on a read-only host, and a link asking for what the page cannot show (it
says what it shows instead). Nothing is trained into the database. Projector mode: ``test_projector.py``.
"""

from __future__ import annotations

import re

from engine.data import DatasetNotFound, load_dataset
from tests.e2e.support import settle, shoot, wait_drawn

VIEW = {"width": 1400, "height": 1700}  # Streamlit scrolls inside its main block: tall enough for a whole step


def main_text(page) -> str:
    return page.locator("[data-testid='stMain']").inner_text()


def wait_for_step(page, title: str) -> str:
    page.get_by_role("heading", name=title).first.wait_for(timeout=60_000)
    settle(page, 60_000)
    wait_drawn(page)  # the images and charts
    text = main_text(page)
    assert "Traceback" not in text and page.locator("[data-testid='stException']").count() == 0
    assert not re.search(r"\bNone\b|\bnan\b", text)
    return text


def shoot_still(page, name: str) -> None:
    """A screenshot with no tooltip or focus ring on it (the pointer parked in the sidebar's empty foot)."""
    page.mouse.move(20, VIEW["height"] - 20)
    page.evaluate("document.activeElement && document.activeElement.blur()")
    shoot(page, name)


def diagram_text(page, nth: int = 0) -> str:
    svg = page.locator("svg[role='img'][aria-label]").nth(nth)
    svg.wait_for(timeout=10_000)
    assert svg.bounding_box()["width"] > 400  # drawn, at a readable size
    return svg.text_content()


def test_locfedmix_walkthrough_from_mixup_to_averaging_by_keyboard(start_app, browser):
    app = start_app()
    page = browser.new_page(viewport=VIEW)
    page.goto(f"{app.url}/walkthrough?algo=locfedmix_sl&n=3&data=digits&step=4")
    text = wait_for_step(page, "4. ③ Smashed-data mixup at the server")
    assert "Step 4 of 9" in text
    assert "the server mixes 3 pairs of smashed data" in diagram_text(page)
    assert page.get_by_role("img").count() >= 2  # the diagram and the mixed pairs
    shoot_still(page, "walkthrough-mixup")

    page.get_by_role("heading", name="Round walkthrough").click()  # focus on no widget: → and ← step
    for _ in range(5):
        page.keyboard.press("ArrowRight")
        settle(page)
    text = wait_for_step(page, "9. ⑤ Averaging the lower models")
    assert "Step 9 of 9" in text and "step=9" in page.url
    assert re.search(r"lower models averaged: [\d,]+ B up and down", diagram_text(page))
    page.locator(".js-plotly-plot .xtick").first.wait_for(timeout=20_000)  # distances to the average, drawn
    assert page.locator(".js-plotly-plot").count() == 1
    shoot_still(page, "walkthrough-averaging")

    page.keyboard.press("ArrowLeft")
    wait_for_step(page, "8. The clients' updates")
    assert "step=8" in page.url
    page.keyboard.press("Home")
    wait_for_step(page, "1. Each client draws a batch")
    assert "step=1" in page.url


def test_side_by_side_on_a_read_only_host(start_app, browser):
    app = start_app(readonly=True)
    page = browser.new_page(viewport=VIEW)
    page.goto(f"{app.url}/walkthrough?algo=parallel_sl&vs=locfedmix_sl&n=3&data=digits&step=4")
    wait_for_step(page, "4. ③ Smashed-data mixup at the server")
    assert "is not part of this round" in diagram_text(page, 0)  # Parallel SL: ③ off, greyed
    assert "mixes 3 pairs" in diagram_text(page, 1)
    page.get_by_role("button", name="Next").click()
    text = wait_for_step(page, "5. The server's loss and its step")
    assert text.count("5. The server's loss and its step") >= 2  # both columns step together
    shoot_still(page, "walkthrough-side-by-side")

    page.get_by_text("autoplay").click()  # a step every few seconds, in the fragment, until the last
    page.get_by_text("Step 7 of 9").wait_for(timeout=30_000)
    assert "step=7" in page.url


def test_a_link_asking_for_what_the_page_cannot_show_says_what_it_shows_instead(start_app, browser):
    try:
        load_dataset("fashion-mnist")
        shown = "Fashion-MNIST"  # the page's default data set, when it is here
    except DatasetNotFound:
        shown = "digits"
    app = start_app(readonly=True)
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    page.goto(f"{app.url}/walkthrough?algo=locfedmix_sl&data=cifar10&n=1000&step=99")
    text = wait_for_step(page, "9. ⑤ Averaging the lower models")
    assert "clients n = 1000 in the link is more than the walkthrough shows (at most 8): showing n = 8." in text
    assert (f"data set CIFAR-10 (in the link) is not one the walkthrough shows (it shows Fashion-MNIST and digits): "
            f"showing {shown}.") in text
    assert "step = 99 in the link is past this round's last step: showing step 9." in text
    assert "n = 8 clients" in text and "Step 9 of 9" in text
    assert re.search(r"[?&]n=8(&|$)", page.url) and "step=9" in page.url and "cifar10" not in page.url
    assert "client 7" in diagram_text(page) and "client 8" not in diagram_text(page)
    shoot_still(page, "walkthrough-link-out-of-range")
