"""The Round walkthrough page through AppTest: every preset stepped forward and back, the bytes on the
arrows against the ledger, the losses against the round's, greyed techniques, side by side, Vanilla SL's
sequence, a stored run's checkpoint, links and read-only mode. Digits, n = 3, b = 8: seconds in all."""

from __future__ import annotations

import html
import re
import time

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from engine import data as engine_data
from engine.config import validate_config
from engine.data import DatasetNotFound, load_dataset
from engine.presets import PRESETS
from engine.round import run_round
from engine.trace import RoundResult, trace_round
from engine.trainer import Trainer
from pages import walkthrough_diagram as wd
from pages import walkthrough_steps as ws
from storage import queries
from storage.db import connect
from tests.pages.support import ROOT, TIMEOUT

N = 3
APP = str(ROOT / "app.py")


def walkthrough(algo: str = "locfedmix_sl", **params: str) -> AppTest:
    """The page opened by a link: ``?algo=...&n=3&data=digits`` plus ``params`` (vs, step, run)."""
    at = AppTest.from_file(str(ROOT / "pages" / "walkthrough.py"), default_timeout=TIMEOUT)
    at.query_params.update({"algo": algo, "n": str(N), "data": "digits", **params})
    return at.run()


def expected(algo: str) -> RoundResult:
    """The round the page traces, traced here by the engine itself."""
    return trace_round(ws.walkthrough_config(algo, N, "digits"))


def param(at: AppTest, name: str) -> str:
    """A query parameter as the page left it (AppTest keeps a link's values as lists, the page's as strings)."""
    value = at.query_params[name]
    return value if isinstance(value, str) else value[0]


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def headings(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown if m.value.startswith("#### ")]


def diagrams(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown if "<svg" in m.value]


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption)


def go(at: AppTest, label: str) -> AppTest:
    button(at, label).click().run()
    assert not at.exception, at.exception
    return at


def open_phase(algo: str, phase: str, res: RoundResult, group: int = 0, **params: str) -> AppTest:
    """The page at the step of ``phase`` (of schedule step ``group``), by a link."""
    steps = ws.walk(res)
    at_step = next(i for i, s in enumerate(steps) if s.phase == phase and (s.group == group or phase == "averaging"))
    at = walkthrough(algo, step=str(at_step + 1), **params)
    assert not at.exception, at.exception
    return at


@pytest.mark.parametrize("algo", list(PRESETS))
def test_every_preset_steps_through_every_phase_forward_and_back(db_url, algo):
    steps = ws.walk(expected(algo))
    at = walkthrough(algo)
    assert not at.exception, at.exception
    seen = [headings(at)]
    while not button(at, "Next").disabled:
        seen.append(headings(go(at, "Next")))
    assert len(seen) == len(steps)
    assert {s.phase for s in steps} >= set(ws.PHASES)  # every phase shows, run or greyed
    assert param(at, "step") == str(len(steps))
    back = [headings(at)]
    while not button(at, "Back").disabled:
        back.append(headings(go(at, "Back")))
    assert back[::-1] == seen  # Back retraces Next's steps exactly
    assert param(at, "step") == "1"


@pytest.mark.parametrize("algo", ["locfedmix_sl", "splitfed", "vanilla_sl", "splitfed_v2"])
def test_upload_arrows_carry_the_ledgers_bytes(db_url, algo):
    res = expected(algo)
    shown = 0
    for group in sorted({s.group for s in ws.walk(res)}):
        at = open_phase(algo, "upload", res, group)
        event = res.trace.get("upload", group)[0].values
        svg = diagrams(at)[0]
        assert svg.count(f">{event['bytes_per_client']:,} B<") == len(event["clients"])  # one label per arrow
        total = int(re.search(r"= ([\d,]+) B", svg).group(1).replace(",", ""))
        assert metrics(at)["smashed data up, this step"] == f"{total:,} B"
        shown += total
    assert shown == res.ledger_after["bytes_smashed_up"] - res.ledger_before["bytes_smashed_up"]


def test_other_arrows_carry_the_ledgers_bytes_too(db_url):
    res = expected("locfedmix_sl")
    delta = {k: res.ledger_after[k] - res.ledger_before[k] for k in res.ledger_after}
    at = open_phase("locfedmix_sl", "grads_down", res)
    assert f"{delta['bytes_grads_down']:,} B" in diagrams(at)[0]
    assert metrics(at)["gradients down"] == f"{delta['bytes_grads_down']:,} B"
    at = open_phase("locfedmix_sl", "averaging", res)
    assert metrics(at)["models up and down"] == f"{delta['bytes_model_up'] + delta['bytes_model_down']:,} B"
    assert f"{delta['bytes_model_up'] // N:,} B each way" in diagrams(at)[0]


@pytest.mark.parametrize("algo", ["locfedmix_sl", "vanilla_sl"])
def test_losses_shown_are_the_rounds(db_url, algo):
    res = expected(algo)
    losses = res.losses
    at = open_phase(algo, "server", res)
    assert (f"L = {losses.loss:.4f}, L~ = {losses.mixup:.4f}, L^ = {losses.local:.4f}") in captions(at)
    step_loss = res.trace.get("server", 0)[0].values["loss"]
    assert metrics(at)["L (server)"] == f"{step_loss:.4f}"
    if algo == "locfedmix_sl":  # one schedule step: the step's losses are the round's
        assert metrics(at)["L (server)"] == f"{losses.loss:.4f}"
        assert metrics(at)["L~ (mixup)"] == f"{losses.mixup:.4f}"
        at = open_phase(algo, "local", res)
        assert metrics(at)["L^ (local), the round's"] == f"{losses.local:.4f}"


@pytest.mark.parametrize(("algo", "greyed", "line"), [
    ("parallel_sl", ["mixup", "local", "averaging"], "③ smashed-data mixup is off"),
    ("locsplitfed", ["mixup", "grads_down"], "② global-gradient backward is off"),
    ("vanilla_sl", ["mixup", "local", "averaging"], "⑤ does not apply to Vanilla SL"),
    ("locfedmix_sl", [], None),
])
def test_techniques_that_are_off_are_greyed_with_one_line(db_url, algo, greyed, line):
    res = expected(algo)
    off = [s.phase for s in ws.walk(res) if s.event is None]
    assert off == greyed
    at = walkthrough(algo)
    lines = []
    while True:
        (heading,), (svg,) = headings(at), diagrams(at)
        is_off = ":gray[" in heading
        assert is_off == ("not in this round" in heading) == ('class="wt-off"' in svg)
        if is_off:
            lines.append(captions(at))
        if button(at, "Next").disabled:
            break
        go(at, "Next")
    assert len(lines) == len(greyed)
    if line:
        assert any(line in text for text in lines)


def test_side_by_side_steps_two_algorithms_together_on_the_same_batch(db_url):
    plain, lfm = expected("parallel_sl"), expected("locfedmix_sl")
    assert plain.trace.get("batch")[0].values["x"].equal(lfm.trace.get("batch")[0].values["x"])
    at = walkthrough("parallel_sl", vs="locfedmix_sl", step="4")
    assert [h.value for h in at.subheader] == ["Parallel SL", "LocFedMix-SL"]
    first, second = headings(at)
    assert ":gray[" in first and "Smashed-data mixup" in first  # Parallel SL has no ③ ...
    assert ":gray[" not in second and "Smashed-data mixup" in second  # ... LocFedMix-SL mixes
    assert len(diagrams(at)) == 2 and len(at.get("image")) == 1
    go(at, "Next")
    assert all("The server's loss" in h for h in headings(at))


def test_vanilla_sl_serves_one_client_at_a_time_and_hands_the_model_on(db_url):
    res = expected("vanilla_sl")
    handoffs = res.trace.get("handoff")
    assert [h.values["to"] for h in handoffs] == [1, 2, None]
    at = open_phase("vanilla_sl", "handoff", res, 0)
    (heading,), (svg,) = headings(at), diagrams(at)
    assert heading.startswith("#### Client 0 ·")
    assert "client 0 hands the lower model to client 1" in svg
    assert f"w_c: {handoffs[0].values['bytes']:,} B" in svg
    assert "waits for the model" in svg  # client 2 has not had its turn
    go(at, "Next")
    assert headings(at)[0].startswith("#### Client 1 · 1.")


@pytest.mark.parametrize("algo", ["splitfed_v1", "splitfed_v2"])
def test_splitfed_serves_the_clients_in_turn_one_batch_each(db_url, algo):
    """A step per batch, client by client in the round's drawn order; one batch per client here (the page
    says so); V1's server step trains the client's own copy of the upper model."""
    res = expected(algo)
    order = [e.values["clients"][0] for e in res.trace.get("batch")]
    assert sorted(order) == list(range(N)) and res.config.local_steps == 1
    at = walkthrough(algo)
    assert "serves the clients in turn" in captions(at) and "local_steps = 1" in captions(at)
    assert headings(at)[0] == f"#### Client {order[0]} · 1. The client draws a batch"
    at = open_phase(algo, "server", res, 1)
    (heading,), (svg,) = headings(at), diagrams(at)
    assert heading.startswith(f"#### Client {order[1]} · 5.")
    assert "done this round" in svg and "waits its turn" in svg  # the clients before and after this turn
    assert (f"copy for client {order[1]}" in svg) == (algo == "splitfed_v1")
    assert "one per batch" in captions(at)
    at = open_phase(algo, "averaging", res)
    assert ("average of the clients' copies" in " ".join(m.value for m in at.markdown)) == (algo == "splitfed_v1")


def test_a_stored_runs_checkpoint_is_traced_one_round_on(db_url):
    db = connect(db_url)
    cfg = validate_config({**ws.walkthrough_config("locfedmix_sl", N, "digits").model_dump(), "name": "trained"})
    trainer = Trainer(cfg)
    for _ in range(2):
        run_round(trainer.state)
    with db.write() as s:
        run_id = queries.create_run(s, cfg)
        queries.claim_next_run(s, "w1")
        queries.save_checkpoint(s, run_id, "w1", 2, trainer.checkpoint_bytes())
    res = trace_round(None, checkpoint=trainer.checkpoint_bytes())
    assert res.round == 3
    at = walkthrough("parallel_sl", run=str(run_id), step="5")
    assert not at.exception, at.exception
    assert next(s for s in at.selectbox if s.label == "start from").value == run_id
    assert next(s for s in at.selectbox if s.label == "algorithm").disabled
    assert "round 3 of a stored run" in captions(at)
    assert f"L = {res.losses.loss:.4f}" in captions(at)
    with db.write() as s:  # the run goes (as it would when it finishes: a finished run drops its checkpoint)
        queries.delete_run(s, run_id)
    st.cache_data.clear()
    at.run()
    assert not at.exception, at.exception
    assert f"Run #{run_id} no longer keeps a checkpoint" in " ".join(i.value for i in at.info)
    assert "first round of fresh models" in captions(at)


def test_a_link_to_a_run_without_a_checkpoint_says_so(db_url):
    at = walkthrough(run="7")
    assert not at.exception
    assert "Run #7 keeps no checkpoint" in " ".join(i.value for i in at.info)


def test_a_link_keeps_the_settings_and_the_step(db_url):
    at = walkthrough("table3_row2", step="4")
    assert next(s for s in at.selectbox if s.label == "algorithm").value == "table3_row2"
    assert "Smashed-data mixup" in headings(at)[0] and ":gray[" not in headings(at)[0]
    go(at, "Next")
    assert param(at, "step") == "5" and param(at, "algo") == "table3_row2"
    go(at, "First")
    assert param(at, "step") == "1"


def test_any_technique_combination_by_its_codes(db_url):
    at = walkthrough("1,2,3,splitlr")
    assert next(s for s in at.selectbox if s.label == "algorithm").value == "custom"
    res = expected("1,2,3,splitlr")
    at = open_phase("1,2,3,splitlr", "server", res)
    lr = res.trace.get("server")[0].values["server_lr"]
    assert metrics(at)["server learning rate η_s"] == f"{lr:.4g}" and lr > res.config.optim.lr  # SplitLr
    at = walkthrough("1,9")
    assert not at.exception
    assert "technique codes: unknown code(s) 9" in " ".join(e.value for e in at.error).replace("\\", "")


def test_a_step_renders_in_under_a_second_once_traced(db_url):
    at = walkthrough("locfedmix_sl")
    while not button(at, "Next").disabled:
        go(at, "Next")
    timings = []
    while not button(at, "Back").disabled:
        start = time.perf_counter()
        go(at, "Back")
        timings.append(time.perf_counter() - start)
    assert max(timings) < 1.0, timings


def test_the_page_works_read_only_and_stores_nothing(db_url, monkeypatch):
    monkeypatch.setenv("SPLITLAB_READONLY", "1")
    at = walkthrough("locfedmix_sl", vs="splitfed")
    assert not at.exception, at.exception
    for _ in range(3):
        go(at, "Next")
    assert len(diagrams(at)) == 2
    with connect(db_url).read() as s:
        assert queries.list_runs(s) == []


@pytest.mark.parametrize("readonly", [False, True], ids=["full", "read-only"])
def test_the_app_lists_the_walkthrough_in_both_navigations(db_url, monkeypatch, readonly):
    if readonly:
        monkeypatch.setenv("SPLITLAB_READONLY", "1")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("pages/walkthrough.py").run()
    assert not at.exception, at.exception
    assert at.header[0].value == "Round walkthrough"


# ---- links that ask for what the page cannot show (issue 26, item 7) -----------------------------

def infos(at: AppTest) -> str:
    return "\n".join(i.value for i in at.info).replace("\\", "")  # the quoted link value is markdown-escaped


def here(dataset: str) -> bool:
    try:
        load_dataset(dataset)
        return True
    except DatasetNotFound:
        return False


@pytest.mark.parametrize(("raw", "why", "shown"), [
    ("1000", "is more than the walkthrough shows (at most 8)", 8),
    ("1", "is fewer than the walkthrough shows (at least 2)", 2),
    ("1e3", "is not a whole number", 3),
])
def test_clients_in_a_link_out_of_range_say_what_is_shown_instead(db_url, raw, why, shown):
    at = walkthrough(n=raw)
    assert not at.exception, at.exception
    assert f"clients n = {raw} in the link {why}: showing n = {shown}." in infos(at)
    assert next(s for s in at.slider if s.label == "clients n").value == shown
    assert param(at, "n") == str(shown)
    svg = diagrams(at)[0]
    assert f">client {shown - 1}<" in svg and f">client {shown}<" not in svg


@pytest.mark.parametrize(("raw", "asked"), [("cifar10", "CIFAR-10"), ("imagenet", "imagenet")])
def test_a_data_set_the_walkthrough_does_not_show_is_named_with_the_one_shown(db_url, raw, asked):
    shown = "fashion-mnist" if here("fashion-mnist") else "digits"
    at = walkthrough(data=raw)
    assert not at.exception, at.exception
    assert (f"data set {asked} (in the link) is not one the walkthrough shows (it shows Fashion-MNIST and "
            f"digits): showing {ws.DATASET_NAMES[shown]}.") in infos(at)
    assert next(s for s in at.selectbox if s.label == "data set").value == shown
    assert param(at, "data") == shown
    assert f", {ws.DATASET_NAMES[shown]}." in captions(at)  # the intro names the data set traced on


def test_a_data_set_that_is_not_here_is_marked_in_the_list_and_replaced_by_digits(db_url, monkeypatch):
    real = engine_data.load_dataset

    def without_fashion_mnist(name, *args, **kwargs):  # this host may hold it: the page must not find it
        if name == "fashion-mnist":
            raise DatasetNotFound("no Fashion-MNIST here (test)", "fashion-mnist")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(engine_data, "load_dataset", without_fashion_mnist)
    st.cache_resource.clear()  # the page's class names, cached by data set
    try:
        at = walkthrough(data="fashion-mnist")
    finally:
        monkeypatch.undo()
        st.cache_resource.clear()
    assert not at.exception, at.exception
    box = next(s for s in at.selectbox if s.label == "data set")
    assert box.format_func("fashion-mnist") == "Fashion-MNIST (not here)" and box.format_func("digits") == "digits"
    assert "Fashion-MNIST is not on this machine (see README, Data): showing digits" in \
        " ".join(w.value for w in at.warning)
    assert ", digits." in captions(at)


@pytest.mark.parametrize(("raw", "message"), [
    ("99", "step = 99 in the link is past this round's last step: showing step 9."),
    ("0", "step = 0 in the link is not a step (they count from 1): showing step 1."),
    ("four", "step = four in the link is not a whole number: showing step 1."),
])
def test_a_step_outside_the_round_says_which_step_is_shown(db_url, raw, message):
    at = walkthrough(step=raw)
    assert not at.exception, at.exception
    assert message in infos(at)
    assert param(at, "step") == message.rstrip(".").rsplit(" ", 1)[1]


def test_a_side_by_side_algorithm_that_is_no_preset_says_so(db_url):
    at = walkthrough(vs="locfedmix")
    assert "side by side with = locfedmix in the link is not one of the presets: showing one algorithm." in infos(at)
    assert len(diagrams(at)) == 1 and "vs" not in at.query_params


def test_a_link_in_range_says_nothing(db_url):
    at = walkthrough(n="08", step="9", vs="splitfed", projector="0")
    assert not at.exception, at.exception
    assert not at.info and not at.warning
    assert next(s for s in at.slider if s.label == "clients n").value == 8 and param(at, "step") == "9"


# ---- projector mode (issue 26, item 6) -----------------------------------------------------------

def test_projector_mode_from_the_link_and_back_by_its_toggle(db_url):
    at = walkthrough(vs="parallel_sl", projector="1")
    assert not at.exception, at.exception
    toggle = next(t for t in at.toggle if t.label == "projector")
    assert toggle.value and param(at, "projector") == "1"
    assert not at.header and not at.subheader  # the chrome goes: no page title, the columns named in one line
    assert [m.value for m in at.markdown if m.value.startswith("##### ")] == [
        "##### LocFedMix-SL", "##### Parallel SL"]
    assert 'viewBox="0 0 580 ' in diagrams(at)[0]  # the projector's layout
    toggle.set_value(False).run()
    assert not at.exception, at.exception
    assert "projector" not in at.query_params
    assert at.header[0].value == "Round walkthrough" and 'viewBox="0 0 540 ' in diagrams(at)[0]


def test_a_projector_value_that_is_neither_on_nor_off_says_so(db_url):
    at = walkthrough(projector="big")
    assert "projector = 'big' in the link is neither on nor off" in infos(at)
    assert not next(t for t in at.toggle if t.label == "projector").value


def font_sizes(svg: str) -> list[float]:
    return [float(x) for x in re.findall(r'font-size="([\d.]+)"', svg)]


@pytest.mark.parametrize("algo", ["locfedmix_sl", "vanilla_sl", "splitfed_v1", "sglr"])
def test_projector_diagrams_have_no_text_under_14_units_and_fit_their_width(algo):
    """On screen a projector diagram is drawn at least 1:1 (the browser test measures it); here, every text
    of every step is at least 14 units and, at a generous 0.6 em a character, inside the diagram."""
    res = trace_round(ws.walkthrough_config(algo, ws.MAX_CLIENTS, "digits"))
    for layout in (wd.PROJECTOR_WIDE, wd.PROJECTOR_NARROW):
        for step in ws.walk(res):
            svg = wd.diagram_svg(step, res, layout)
            assert min(font_sizes(svg)) >= 14, (step.phase, svg)
            for x, size, anchor, text in re.findall(
                    r'<text x="([\d.]+)" y="[\d.]+" font-size="(\d+)" fill="[^"]+" text-anchor="(\w+)"[^>]*>([^<]*)<',
                    svg):
                width = wd.CHAR_EM * int(size) * len(html.unescape(text))
                left = float(x) - (width / 2 if anchor == "middle" else 0)
                assert 0 <= left and left + width <= layout.width + 1, (step.phase, text)
