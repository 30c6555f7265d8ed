"""Round walkthrough: one round of split learning, step by step, with the engine's own tensors.

The round is traced in memory (:mod:`engine.trace`: the code that trains, with a recorder attached),
on fresh models or as the next round of a stored run's checkpoint. Nothing is written to the
database, so the page works on a read-only host. A traced round is cached by its settings: Next and
Back only draw. A link keeps the settings and the step (``?algo=locfedmix_sl&n=3&data=digits&step=4``);
a value the page cannot show says what was asked for and what is shown instead. Projector mode
(``?projector=1``, :mod:`pages.projector`) fits a step's diagram on a 1280 x 720 screen.
"""

from __future__ import annotations

import time

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from engine.config import ConfigError, RunConfig
from engine.data import DatasetNotFound, load_dataset
from engine.presets import PRESETS
from engine.trace import RoundResult, trace_round
from pages import common, projector
from pages import walkthrough_diagram as wd
from pages import walkthrough_pictures as wp
from pages import walkthrough_steps as ws
from pages.figures import combination_name, defense_words, defenses
from storage import queries

common.run_through_app_py()  # first thing: a deep link on a fresh server reruns through app.py

AUTOPLAY_S = 4       # seconds per step while autoplay is on
CUSTOM = "custom"    # the algorithm choice that takes technique codes
MAX_RUN_CLIENTS = 10  # a stored run is offered only when its clients fit the diagram
DEFAULT = {"algo": "locfedmix_sl", "codes": "1,2,3", "n": 3, "data": "fashion-mnist"}
KEYS_HELP = "Keyboard: → next step, ← back, Home: the first step (or Tab to a button and press Enter)."
PROJECTOR_CSS = """<style>
.wt-diagram svg { max-height: calc(100vh - 190px); }
[data-testid="stMain"] [data-testid="stMarkdown"] p { font-size: 1.2rem; }
[data-testid="stMain"] [data-testid="stCaptionContainer"] p { font-size: 1rem; }
</style>"""


def parse_int(raw: str | None, default: int) -> int:
    try:
        return int(str(raw))
    except ValueError:
        return default


def shown_text(raw: str) -> str:
    """A link's value as a message quotes it: short, and with no markdown in it."""
    return common.escape_markdown(raw if len(raw) <= 40 else raw[:40] + "…")


def dataset_name(name: str) -> str:
    return ws.DATASET_NAMES.get(name, name)


def dataset_choice(name: str) -> str:
    """A data set as the list offers it, saying whether it is here."""
    return dataset_name(name) + ("" if data_here(name) else " (not here)")


def algorithm_label(choice: str) -> str:
    if choice == CUSTOM:
        return "any combination (technique codes)"
    return "–" if not choice else f"{PRESETS[choice].title} ({PRESETS[choice].techniques})"


@st.cache_data(ttl=common.READ_TTL_S, show_spinner=False)
def checkpoint_runs() -> dict[int, str]:
    """Runs that keep a checkpoint (running, interrupted or cancelled: a finished run drops its own) and
    whose clients fit the diagram, by id, with a label."""
    frame = common.runs_frame()
    out = {}
    for _, r in frame.iterrows():
        if int(r["resume_round"] or 0) > 0 and int(r["clients"]) <= MAX_RUN_CLIENTS:
            out[int(r["id"])] = (f"{common.run_label(r, with_status=False)}: round {int(r['resume_round']) + 1} "
                                 f"({combination_name(r['techniques'])}, n = {int(r['clients'])}, {r['dataset']})")
    return out


def from_link(runs: dict[int, str]) -> None:
    """The settings a link names, for every control that has no value yet in this session. A value the
    page cannot show is replaced, saying what was asked for and what is shown instead."""
    q, ss = st.query_params, st.session_state
    algo = q.get("algo", DEFAULT["algo"])
    if "wt_algo" not in ss:
        ss.wt_algo = algo if algo in PRESETS else CUSTOM
    if "wt_codes" not in ss:
        ss.wt_codes = DEFAULT["codes"] if algo in PRESETS else algo
    if "wt_vs" not in ss:
        ss.wt_vs = q.get("vs") if q.get("vs") in PRESETS else ""
        if q.get("vs") and not ss.wt_vs:
            st.info(f"side by side with = {shown_text(q['vs'])} in the link is not one of the presets: "
                    "showing one algorithm.")
    if "wt_n" not in ss:
        ss.wt_n = clients_from_link(q.get("n"))
    if "wt_data" not in ss:
        ss.wt_data = dataset_from_link(q.get("data"))
    if "wt_run" not in ss:
        run = parse_int(q.get("run"), 0)
        ss.wt_run = run if run in runs else 0
        if run and run not in runs:
            st.info(f"Run #{run} keeps no checkpoint to start from (a finished run drops its own): fresh models instead.")
    elif ss.wt_run and ss.wt_run not in runs:  # it finished (dropping its checkpoint) or was deleted meanwhile
        st.info(f"Run #{ss.wt_run} no longer keeps a checkpoint: fresh models instead.")
        ss.wt_run = 0
    if "wt_defense" not in ss:
        ss.wt_defense = defense_from_link(q.get("defense"))
    if "wt_absent" not in ss:
        ss.wt_absent = absence_from_link(q.get("absent"))
    if "wt_step" not in ss:
        ss.wt_step = step_from_link(q.get("step"))


def clients_from_link(raw: str | None) -> int:
    """``?n=``: the number of clients, within what the walkthrough shows."""
    asked = DEFAULT["n"] if raw is None else parse_int(raw, None)
    if asked is not None and ws.MIN_CLIENTS <= asked <= ws.MAX_CLIENTS:
        return asked
    shown = DEFAULT["n"] if asked is None else min(max(asked, ws.MIN_CLIENTS), ws.MAX_CLIENTS)
    if asked is None:
        why = "is not a whole number"
    elif asked > ws.MAX_CLIENTS:
        why = f"is more than the walkthrough shows (at most {ws.MAX_CLIENTS})"
    else:
        why = f"is fewer than the walkthrough shows (at least {ws.MIN_CLIENTS})"
    st.info(f"clients n = {shown_text(raw)} in the link {why}: showing n = {shown}.")
    return shown


def dataset_from_link(raw: str | None) -> str:
    """``?data=``: one of the walkthrough's data sets (the default one when the link names another)."""
    if raw is None or raw in ws.DATASETS:
        return raw or DEFAULT["data"]
    shown = DEFAULT["data"] if data_here(DEFAULT["data"]) else "digits"
    asked = ws.DATASET_NAMES.get(raw, shown_text(raw))
    offered = " and ".join(dataset_name(d) for d in ws.DATASETS)
    st.info(f"data set {asked} (in the link) is not one the walkthrough shows (it shows {offered}): "
            f"showing {dataset_name(shown)}.")
    return shown


def choice_from_link(name: str, raw: str | None, choices: dict[str, str], instead: str) -> str:
    """``?<name>=<key>``: one of ``choices`` (the empty key when the link names none, or one the walkthrough
    does not show: then it says so, and what it shows ``instead``)."""
    if raw is None or raw in choices:
        return raw or ""
    offered = ", ".join(k for k in choices if k)
    st.info(f"{name} = {shown_text(raw)} in the link is not one the walkthrough shows ({offered}): {instead}.")
    return ""


def absence_from_link(raw: str | None) -> str:
    """``?absent=fraction:0.5``: one of the ways clients come and go the walkthrough shows."""
    return choice_from_link("absent", raw, ws.ABSENCE_CHOICES, "every client takes part")


def defense_from_link(raw: str | None) -> str:
    """``?defense=noise:0.5``: one of the defenses the walkthrough offers."""
    return choice_from_link("defense", raw, ws.DEFENSE_CHOICES, "showing no defense")


def step_from_link(raw: str | None) -> int:
    """``?step=``, counted from 1, as a position counted from 0 (a step past the round's last one is said
    and replaced when the round is drawn, which knows how many steps it has)."""
    step = 1 if raw is None else parse_int(raw, None)
    if step is None or step < 1:
        why = "is not a whole number" if step is None else "is not a step (they count from 1)"
        st.info(f"step = {shown_text(raw)} in the link {why}: showing step 1.")
        return 0
    st.session_state.wt_step_linked = step
    return step - 1


def controls(runs: dict[int, str], shown_data: str | None) -> DeltaGenerator | None:
    """The algorithm(s), n, the data set, autoplay, projector mode; a stored run to start from when one keeps a
    checkpoint. Projector mode keeps the settings behind one button named by what is shown (returned: the
    intro goes there too); otherwise they take two rows, wide enough that no label is cut at 1280 px."""
    ss = st.session_state
    from_run = bool(ss.wt_run)
    options = [*PRESETS, CUSTOM]
    menu = None
    if ss.wt_projector:
        top = st.container(horizontal=True, vertical_alignment="center")
        menu = top.popover(settings_label(shown_data), icon=":material/tune:")
        c1 = c2 = c3 = c4 = menu
        c5 = c6 = top
    else:
        c1, c2 = st.columns(2)
        c3, c4, c5, c6 = st.columns([2.2, 2.2, 1.3, 1.3], vertical_alignment="bottom")
    c1.selectbox("algorithm", options, key="wt_algo", format_func=algorithm_label, disabled=from_run,
                 help="A preset, or any combination of ① to ⑤ and SGLR by its technique codes.")
    if ss.wt_algo == CUSTOM:
        c1.text_input("technique codes", key="wt_codes", disabled=from_run,
                      help="1 (always), 2, 3, 4 or 4p, 5, splitlr, splitavg, comma-separated: 1,2,3,4p,5 is "
                           "LocFedMix-SL; 1 alone is Vanilla SL.")
    c2.selectbox("side by side with", ["", *PRESETS], key="wt_vs", format_func=algorithm_label, disabled=from_run,
                 help="A second algorithm on the same batch (same seed, data and clients), stepping together.")
    c2.selectbox("defense", list(ws.DEFENSE_CHOICES), key="wt_defense", format_func=ws.DEFENSE_CHOICES.get,
                 disabled=from_run,
                 help="What every client does to its smashed data before the upload (for both algorithms side by "
                      "side): step 3 then shows what the server receives beside what the client computed. A stored "
                      "run keeps its own.")
    c2.selectbox("clients that come and go", list(ws.ABSENCE_CHOICES), key="wt_absent",
                 format_func=ws.ABSENCE_CHOICES.get, disabled=from_run,
                 help="A round where some clients are missing (for both algorithms side by side): they are greyed, "
                      "with why, and the round goes on with the others. A stored run keeps its own.")
    c3.slider("clients n", ws.MIN_CLIENTS, ws.MAX_CLIENTS, key="wt_n", disabled=from_run)
    c4.selectbox("data set", ws.DATASETS, key="wt_data", format_func=dataset_choice, disabled=from_run,
                 help="A data set that is not on this machine is shown as digits (bundled, no download).")
    c5.toggle("autoplay", key="wt_autoplay", on_change=restart_clock,
              help=f"Step forward every {AUTOPLAY_S} s until the last step.")
    projector.toggle(c6, "wt_projector")
    if runs:
        (menu or st).selectbox("start from", [0, *runs], key="wt_run",
                     format_func=lambda r: runs[r] if r else "fresh models: the first round of a new run",
                     help="The next round of a stored run's checkpoint, so the pictures show trained models. "
                          "Offered: runs that keep a checkpoint (running, interrupted or cancelled; a finished run "
                          "drops its own) with at most 10 clients.")
    st.query_params.update({"algo": ss.wt_algo if ss.wt_algo != CUSTOM else ss.wt_codes, "n": str(ss.wt_n),
                            "data": ss.wt_data})
    for name, value in (("vs", ss.wt_vs), ("run", str(ss.wt_run) if ss.wt_run else ""), ("defense", ss.wt_defense),
                        ("absent", ss.wt_absent)):
        if value:
            st.query_params[name] = value
        elif name in st.query_params:
            del st.query_params[name]
    return menu


def settings_label(shown_data: str | None) -> str:
    """What is shown, in one line: the projector's settings button."""
    ss = st.session_state
    if ss.wt_run:
        return f"Run #{ss.wt_run}: its next round"
    names = [PRESETS[ss.wt_algo].title if ss.wt_algo in PRESETS else f"techniques {ss.wt_codes}"]
    names += [PRESETS[ss.wt_vs].title] if ss.wt_vs else []
    defense = f" · {ws.DEFENSE_CHOICES[ss.wt_defense]}" if ss.wt_defense else ""
    absent = f" · {ws.ABSENCE_CHOICES[ss.wt_absent]}" if ss.wt_absent else ""
    return f"{' and '.join(names)} · n = {ss.wt_n} · {dataset_name(shown_data)}{defense}{absent}"


def restart_clock() -> None:
    st.session_state.wt_tick = time.monotonic()


@st.cache_resource(show_spinner="Loading the data set…")
def class_names(dataset: str) -> tuple[str, ...]:
    """The data set's class names; raises DatasetNotFound when its files are not on this machine."""
    return tuple(load_dataset(dataset).classes)


@st.cache_data(max_entries=32, show_spinner="Tracing one round…")
def fresh_round(config_json: str) -> RoundResult:
    """The first round of a new run of this config, traced (cached: stepping never recomputes)."""
    return trace_round(RunConfig.model_validate_json(config_json))


@st.cache_data(max_entries=8, show_spinner="Tracing the run's next round…")
def stored_round(run_id: int, checkpoint_round: int) -> RoundResult | None:
    """The round after ``run_id``'s checkpoint (at ``checkpoint_round``, part of the cache key), traced."""
    with common.db().read() as s:
        checkpoint = queries.load_checkpoint(s, run_id)
    return None if checkpoint is None else trace_round(None, checkpoint=checkpoint.data)


def data_here(dataset: str) -> bool:
    try:
        class_names(dataset)
        return True
    except DatasetNotFound:
        return False


def dataset_or_digits(dataset: str) -> str:
    """``dataset`` when its files are here; otherwise digits (bundled), saying so."""
    if data_here(dataset):
        return dataset
    st.warning(f"{dataset_name(dataset)} is not on this machine (see README, Data): showing digits, which needs "
               "no download.")
    return "digits"


def results(runs: dict[int, str], dataset: str | None) -> list[RoundResult]:
    """The traced round(s) the settings name: one, or two side by side on the same batch (on ``dataset``;
    a stored run's round is on its own data set)."""
    ss = st.session_state
    if ss.wt_run:
        frame = common.runs_frame()
        saved = int(frame.loc[frame["id"] == ss.wt_run, "resume_round"].iloc[0])
        try:
            res = stored_round(int(ss.wt_run), saved)
        except DatasetNotFound as err:
            st.error(f"Run #{ss.wt_run} trained on data that is not on this machine: {err}")
            st.stop()
        if res is None:
            st.error(f"Run #{ss.wt_run} no longer keeps a checkpoint (it finished or was deleted).")
            st.stop()
        return [res]
    algorithms = [ss.wt_codes if ss.wt_algo == CUSTOM else ss.wt_algo] + ([ss.wt_vs] if ss.wt_vs else [])
    out = []
    for algorithm in algorithms:
        try:
            cfg = ws.walkthrough_config(algorithm.strip(), ss.wt_n, dataset, defense=ss.wt_defense,
                                        absence=ss.wt_absent)
        except ConfigError as err:
            text = err.text().removeprefix("techniques: ")  # parse_techniques' words for the --techniques flag
            st.error(f"technique codes: {common.escape_markdown(text)}")
            st.stop()
        out.append(fresh_round(cfg.model_dump_json()))
    return out


def go_to(step: int) -> None:
    st.session_state.wt_step = step
    restart_clock()


def autoplay(total: int) -> None:
    """While autoplay is on, a timer rerun moves one step on, until the last."""
    ss = st.session_state
    if not ss.get("wt_autoplay"):
        return
    now = time.monotonic()
    if now - ss.get("wt_tick", now) >= AUTOPLAY_S - 0.5 and ss.wt_step < total - 1:
        ss.wt_step += 1
        ss.wt_tick = now


def navigation(at: int, total: int, title: str) -> None:
    """First, Back, Next (each as wide as its label: none is cut) and the progress through the round."""
    row = st.container(horizontal=True, vertical_alignment="center", gap="medium")
    row.button("First", key="wt_first", icon=":material/first_page:", on_click=go_to, args=(0,), disabled=at == 0,
               shortcut="Home", help=KEYS_HELP)
    row.button("Back", key="wt_back", icon=":material/arrow_back:", on_click=go_to, args=(at - 1,),
               disabled=at == 0, shortcut="Left", help=KEYS_HELP)
    row.button("Next", key="wt_next", icon=":material/arrow_forward:", on_click=go_to, args=(at + 1,),
               disabled=at >= total - 1, shortcut="Right", help=KEYS_HELP, type="primary")
    row.progress((at + 1) / total, text=f"Step {at + 1} of {total}: {ws.short_title(title)}")


def walkthrough(rounds: list[RoundResult], classes: tuple[str, ...] | None) -> None:
    """The steps, with Next / Back; a fragment, so a step redraws only itself (and autoplay ticks)."""
    ss = st.session_state
    walks = [ws.walk(r) for r in rounds]
    keys = ws.timeline(walks)
    autoplay(len(keys))
    linked = ss.pop("wt_step_linked", None)
    if linked is not None and linked > len(keys):
        st.info(f"step = {linked} in the link is past this round's last step: showing step {len(keys)}.")
    ss.wt_step = min(max(int(ss.wt_step), 0), len(keys) - 1)
    at = ss.wt_step
    first = next(s for w in walks for s in w if s.key == keys[at])
    title = ws.step_title(first, next(r for r, w in zip(rounds, walks) if first in w))
    navigation(at, len(keys), title)
    st.query_params["step"] = str(at + 1)
    columns = st.columns(len(rounds)) if len(rounds) > 1 else [st.container()]
    big = bool(ss.wt_projector)
    for c, (res, steps, column) in enumerate(zip(rounds, walks, columns)):
        with column:
            if len(rounds) > 1 and not big:
                st.subheader(ws.algorithm_name(res.config), divider="gray")
            show_step(res, ws.step_at(steps, keys[at]), steps, keys[at], classes, f"c{c}", compact=len(rounds) > 1,
                      big=big, shared_title=title)


def show_step(res: RoundResult, step: ws.Step | None, steps: list[ws.Step], key, classes, slot: str,
              compact: bool, big: bool = False, shared_title: str = "") -> None:
    """One column's step: its title, the diagram, what it is for, its numbers and pictures. ``big``
    (projector mode): larger text, and one algorithm's words beside its diagram rather than under it; side
    by side, a column names its algorithm and, where it differs from the progress bar's, its step."""
    layout = {(False, False): wd.WIDE, (True, False): wd.NARROW, (False, True): wd.PROJECTOR_WIDE,
              (True, True): wd.PROJECTOR_NARROW}[compact, big]
    title = "No step here" if step is None else ws.step_title(step, res)
    ran = step is not None and step.event is not None
    heading = title if ran else f":gray[{title}{'' if step is None else ' · not in this round'}]"
    if big and compact:  # side by side on a projector: one short line names the column (and its step)
        own = "" if title == shared_title else f" · {title}"
        off = "" if ran else f" · :gray[{'no step here' if step is None else 'not in this round'}]"
        heading = f"##### {ws.algorithm_name(res.config)}{own if ran else ''}{off}"
    else:
        heading = f"#### {heading}"
    st.markdown(heading)
    beside = big and not compact  # one algorithm on a projector: its words beside its diagram
    left, right = st.columns([3, 2]) if beside else (st.container(), st.container())
    with left:
        diagram(wd.diagram_svg(step, res, layout))
    with right:
        if step is None:
            st.caption(ws.absent_line(key, res))
            return
        if step.event is None:
            st.caption(f":material/block: {ws.off_line(step.phase, res)}")
            return
        st.markdown(ws.purpose(step, res))
        numbers(step, res, slot)
        if beside:
            shape_lines(step)
    pictures(step, res, steps, classes, slot, compact, wp.PROJECTOR_CHART_FONT_PX if big else wp.CHART_FONT_PX)
    if not beside:
        shape_lines(step)


def shape_lines(step: ws.Step) -> None:
    for line in ws.shapes(step):
        st.caption(line)


def diagram(svg: str) -> None:
    """The SVG inline (``st.html`` drops SVG; a markdown HTML block keeps it, its text selectable)."""
    st.markdown(f'<div class="wt-diagram">{svg}</div>', unsafe_allow_html=True)


def numbers(step: ws.Step, res: RoundResult, slot: str) -> None:
    v, losses = step.event.values, res.losses
    cells: list[tuple[str, str]] = []
    if step.phase == "upload":
        cells = [("smashed data up, this step", ws.fmt_bytes(v["bytes"])),
                 ("per client", ws.fmt_bytes(v["bytes_per_client"]))]
        if ws.one_at_a_time(res):
            cells.append(("this round, every client", ws.fmt_bytes(round_delta(res, "bytes_smashed_up"))))
        forward = res.trace.get("forward", step.group)
        if ws.received_changes(v, forward[0].values if forward else None):
            snr = ws.received_snr_db(v, forward[0].values)
            cells.append(("received vs computed, SNR", f"{snr:.1f} dB"))
    elif step.phase == "server":
        cells = [("L (server)", f"{v['loss']:.4f}")] + (
            [("L~ (mixup)", f"{v['mixup']:.4f}")] if res.config.mixup.enabled else []) + [
            ("server learning rate η_s", f"{v['server_lr']:.4g}")]
    elif step.phase == "grads_down":
        cells = [("gradients down", ws.fmt_bytes(v["bytes"])), ("messages", str(v["messages"]))]
    elif step.phase == "local":
        cells = [("L^ (local), the round's", f"{losses.local:.4f}")]
    elif step.phase == "averaging":
        cells = [("models up and down", ws.fmt_bytes(v["bytes"])), ("spread before", f"{v['spread_before']:.2e}"),
                 ("spread after", f"{v['spread_after']:.1e}")]
    elif step.phase == "handoff":
        cells = [("lower model handed on", ws.fmt_bytes(v["bytes"]))]
    for column, (label, value) in zip(st.columns(max(len(cells), 1)), cells):
        column.metric(label, value)
    if step.phase == "server":
        st.caption(f"The round's losses, as the engine's round returned them: L = {losses.loss:.4f}, "
                   f"L~ = {losses.mixup:.4f}, L^ = {losses.local:.4f}"
                   + (" (means over the round's steps, one per client)." if ws.sequential(res) else
                      " (means over the round's steps, one per batch)." if ws.splitfed(res) else "."))


def round_delta(res: RoundResult, kind: str) -> int:
    return res.ledger_after[kind] - res.ledger_before[kind]


def pictures(step: ws.Step, res: RoundResult, steps: list[ws.Step], classes, slot: str, compact: bool,
             font_px: int = wp.CHART_FONT_PX) -> None:
    v = step.event.values
    same = {s.phase: s.event.values for s in steps if s.group == step.group and s.event is not None}
    samples = 4 if compact else ws.BATCH_SIZE
    if step.phase == "batch":
        st.image(wp.batch_picture(v, classes, samples), width="content")
    elif step.phase == "forward":
        st.image(wp.smashed_picture(same["batch"], v, 3 if compact else 4), width="content",
                 caption="Each client's first image and the channels of its smashed data that vary most, each "
                         "scaled to its own range (black: zero after the ReLU).")
    elif step.phase == "mixup":
        st.image(wp.mixup_picture(same["batch"], same["forward"], v, classes, compact=compact), width="content",
                 caption="Each pair mixes sample 1 of client a with sample 1 of client b (lam = λ), shown in one "
                         "channel; the mixed label is soft: λ of a's class and 1 − λ of b's.")
    elif step.phase == "upload":
        received(step, res, same, compact)
    elif step.phase == "grads_down":
        st.plotly_chart(wp.grads_figure(v, font_px), key=f"{slot}_grads", config={"displayModeBar": False})
    elif step.phase == "local":
        picture = wp.local_picture(v, 2 if compact else 3)
        if picture is not None:
            st.image(picture, width="content", caption="Each client's inputs beside its InfoPro decoder's "
                                                         "reconstruction from the smashed data.")
    elif step.phase == "client_update":
        st.plotly_chart(wp.moved_figure(v, font_px), key=f"{slot}_moved", config={"displayModeBar": False})
    elif step.phase == "averaging":
        st.plotly_chart(wp.averaging_figure(v, font_px), key=f"{slot}_avg", config={"displayModeBar": False})


def received(step: ws.Step, res: RoundResult, same: dict, compact: bool) -> None:
    """With a defense on: what the server receives beside what the client computed (nothing without one)."""
    v = step.event.values
    if not ws.defense_lines(v, res.config):
        return
    changed = ws.received_changes(v, same.get("forward"))
    if changed is None:
        st.caption(":material/info: This round did not record what the server receives after the defense.")
    elif not changed:
        st.caption("The server receives the smashed data exactly as the client computed them: this defense acts "
                   "on the client's loss (how the lower model learns), not on what is sent.")
    else:
        st.image(wp.received_picture(same["batch"], same["forward"], v, 1 if compact else 2), width="content",
                 caption="Each client's first image; for its busiest channels, the smashed data as computed and as "
                         "the server receives them after the defense, both scaled to the computed channel's range "
                         "(values beyond it drawn black or white).")


def intro(rounds: list[RoundResult]) -> None:
    res = rounds[0]
    start = f"round {res.round} of a stored run" if st.session_state.wt_run else "the first round of fresh models"
    names = " and ".join(ws.algorithm_name(r.config) for r in rounds)
    config = res.config.model_dump()
    defended = f" Defense: {defense_words(config)}." if defenses(config) else ""
    st.caption(f"{names}: {start}, n = {res.config.num_clients} clients, b = {res.config.batch_size}, "
               f"{dataset_name(res.config.data.dataset)}.{defended} {KEYS_HELP}")
    for note in filter(None, (ws.schedule_note(r) for r in rounds)):
        st.caption(f":material/info: {note}")
    for warning in res.config.warnings():
        st.caption(f":material/info: {warning}")


projector.from_link("wt_projector")
if st.session_state.wt_projector:
    projector.style()
    st.html(PROJECTOR_CSS)
else:
    st.header("Round walkthrough")
    st.caption("What happens inside one round of split learning, step by step: the engine's own tensors, recorded "
               "by the code that trains, with the bytes the ledger counts. Nothing is stored.")
stored = checkpoint_runs()
from_link(stored)
shown_data = None if st.session_state.wt_run else dataset_or_digits(st.session_state.wt_data)
menu = controls(stored, shown_data)
traced = results(stored, shown_data)
try:
    names = class_names(traced[0].config.data.dataset)
except DatasetNotFound:
    names = None
with menu or st.container():
    intro(traced)
run_every = AUTOPLAY_S if st.session_state.get("wt_autoplay") else None
st.fragment(run_every=run_every)(walkthrough)(traced, names)
