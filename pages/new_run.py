"""New run: choose a preset or any combination of the techniques, check it, queue it."""

from __future__ import annotations

import re
from typing import Any

import streamlit as st

from engine.config import (
    DATASETS,
    MAX_CLIENTS,
    SCHEDULES,
    SPLITFED_SCHEDULES,
    RunConfig,
    config_problems,
    deep_merge,
    field_help,
    validate_config,
)
from engine.presets import PRESETS, PROFILES, TABLE3_ROWS, techniques_to_config
from pages import common
from pages.figures import beta_density
from storage import queries

common.run_through_app_py()  # first thing: a deep link on a fresh server reruns through app.py

HELP = field_help()
# Which section of the form a field's error is shown under.
SECTION_OF = {"data": "data", "num_clients": "scale", "rounds": "scale", "batch_size": "scale", "seed": "scale",
              "optim": "scale", "eval_every": "scale", "image_every": "scale", "privacy": "scale", "mixup": "knobs",
              "averaging": "knobs", "local_loss": "knobs", "cut_layer": "knobs"}


# The form's own label for each field, so a message names what the user sees ("clients n must be ...").
FORM_LABELS = {
    "name": "name", "num_clients": "clients n", "rounds": "rounds T", "batch_size": "batch size b", "seed": "seed",
    "optim.name": "optimiser", "optim.lr": "learning rate η", "eval_every": "evaluate every (rounds)",
    "image_every": "images every (rounds, 0: never)", "data.dataset": "data set", "data.partition": "partition",
    "data.dirichlet_beta": "Dirichlet β", "data.samples_per_client": "items per client",
    "mixup.num_partners": "n_s, mixup partners per client", "mixup.alpha": "λ ~ Beta(α, β): α",
    "mixup.beta": "λ ~ Beta(α, β): β", "averaging.interval": "T_c, average every (rounds)",
    "split_lr.alpha": "SplitLr α", "split_avg.fraction": "SplitAvg φ", "cut_layer": "cut after LeNet-5 block",
    "privacy.every": "leakage every (rounds, 0: off)", "schedule": "① schedule",
    "local_steps": "batches per client per round", "reset_optimizers": "re-create the optimisers",
    "split_avg.enabled": "SGLR SplitAvg",
}
SCHEDULE_LABELS = {"parallel": "parallel: every client at once", "sequential": "sequential (Vanilla SL)",
                   "splitfed_v1": "SplitFed V1: clients in turn, a server copy each",
                   "splitfed_v2": "SplitFed V2: clients in turn, one server model"}


def in_form_words(text: str, labels: dict[str, str] = FORM_LABELS) -> str:
    """A problem's text with every setting it mentions by config name ("a multiple of eval_every (10)")
    named as the form labels it ("a multiple of 'evaluate every (rounds)' (10)")."""
    for key, label in labels.items():
        if "_" in key or "." in key:  # a config name; plain words ("seed", "name") stay as they are
            text = re.sub(rf"(?<![\w.]){re.escape(key)}(?![\w.])", f"'{label}'", text)
    return text


def section_of(field: str) -> str:
    """The form section for an error's field path (whole-config errors go under the techniques)."""
    return SECTION_OF.get(field.split(".")[0], "techniques")


def preset_defaults(preset: str) -> RunConfig:
    """The demo profile with a preset's techniques (and its other settings, e.g. a SplitFed schedule) switched on."""
    return validate_config(deep_merge(PROFILES["demo"], PRESETS[preset].overrides()))


def technique_controls(base: RunConfig) -> dict[str, Any]:
    """① (its schedule) ... ⑤, SplitLr and SplitAvg; returns the config overrides they choose."""
    st.markdown("**Techniques**")
    c1, c2 = st.columns(2)
    schedule = c1.selectbox(FORM_LABELS["schedule"], SCHEDULES, SCHEDULES.index(base.schedule),
                            format_func=SCHEDULE_LABELS.get, help=HELP["schedule"])
    sequential, splitfed = schedule == "sequential", schedule in SPLITFED_SCHEDULES
    backward = c1.checkbox("② global-gradient backward", base.global_backward, help=HELP["global_backward"],
                           disabled=sequential)
    mixup = c1.checkbox("③ smashed-data mixup", base.mixup.enabled, help=HELP["mixup.enabled"])
    local = c1.checkbox("④ local loss", base.local_loss.enabled, help=HELP["local_loss.enabled"])
    average_aux = c1.checkbox("④' average the auxiliary networks too", base.local_loss.average_aux,
                              help=HELP["local_loss.average_aux"], disabled=not local)
    averaging = c1.checkbox("⑤ lower-model averaging", base.averaging.enabled, help=HELP["averaging.enabled"])
    split_lr = c2.checkbox("SGLR SplitLr", base.split_lr.enabled, help=HELP["split_lr.enabled"])
    lr_alpha = c2.slider("SplitLr α (η_s = η·n^α)", 0.0, 2.0, float(base.split_lr.alpha), 0.05, disabled=not split_lr)
    split_avg = c2.checkbox("SGLR SplitAvg", base.split_avg.enabled, help=HELP["split_avg.enabled"])
    phi = c2.slider("SplitAvg φ (fraction of active clients)", 0.05, 1.0, float(base.split_avg.fraction), 0.05,
                    disabled=not split_avg)
    local_steps = c2.number_input(FORM_LABELS["local_steps"], value=base.local_steps, step=1,
                                  help=HELP["local_steps"], disabled=not splitfed)
    reset = c2.checkbox(FORM_LABELS["reset_optimizers"], base.reset_optimizers, help=HELP["reset_optimizers"],
                        disabled=not splitfed)
    return {
        "schedule": schedule,
        "local_steps": local_steps if splitfed else 1,  # the other schedules serve one batch per client
        "reset_optimizers": reset and splitfed,
        "global_backward": True if sequential else backward,
        "mixup": {"enabled": mixup},
        "local_loss": {"enabled": local, "average_aux": average_aux},
        "averaging": {"enabled": averaging},
        "split_lr": {"enabled": split_lr, "alpha": lr_alpha},
        "split_avg": {"enabled": split_avg, "fraction": phi},
    }


def data_controls(base: RunConfig) -> dict[str, Any]:
    st.markdown("**Data**")
    c1, c2, c3 = st.columns(3)
    dataset = c1.selectbox("data set", DATASETS, DATASETS.index(base.data.dataset), help=HELP["data.dataset"])
    partition = c2.selectbox("partition", ["paper", "iid", "dirichlet"], help=HELP["data.partition"])
    beta = c3.number_input("Dirichlet β", value=float(base.data.dirichlet_beta), help=HELP["data.dirichlet_beta"],
                           disabled=partition != "dirichlet")
    per_client = c3.number_input("items per client (0: default)", value=0, help=HELP["data.samples_per_client"])
    return {"data": {"dataset": dataset, "partition": partition, "dirichlet_beta": beta,
                     "samples_per_client": None if per_client == 0 else per_client}}


def scale_controls(base: RunConfig) -> dict[str, Any]:
    st.markdown("**Scale and optimiser**")
    c1, c2, c3, c4 = st.columns(4)
    # No min/max on the widgets: a browser field clamps or silently keeps the old value, so the
    # form would queue a number other than the one shown. The engine's validation judges instead.
    n = c1.number_input("clients n", value=base.num_clients, step=1, help=HELP["num_clients"])
    rounds = c2.number_input("rounds T", value=base.rounds, step=1, help=HELP["rounds"])
    batch = c3.number_input("batch size b", value=base.batch_size, step=1, help=HELP["batch_size"])
    seed = c4.number_input("seed", value=base.seed, step=1, help=HELP["seed"])
    optimizer = c1.selectbox("optimiser", ["adam", "momentum", "sgd"], ["adam", "momentum", "sgd"].index(base.optim.name),
                             help=HELP["optim.name"])
    lr = c2.number_input("learning rate η", value=float(base.optim.lr), format="%.4g", step=0.0005,
                         help=HELP["optim.lr"])
    eval_every = c3.number_input("evaluate every (rounds)", value=base.eval_every, step=1, help=HELP["eval_every"])
    image_every = c4.number_input("images every (rounds, 0: never)", value=base.image_every, step=1,
                                  help=HELP["image_every"])
    privacy_every = c1.number_input(FORM_LABELS["privacy.every"], value=base.privacy.every, step=1,
                                    help=HELP["privacy.every"] + ". Each measurement trains the server's attack: "
                                    "a few seconds on a CPU.")
    return {"num_clients": n, "rounds": rounds, "batch_size": batch, "seed": seed,
            "optim": {"name": optimizer, "lr": lr}, "eval_every": eval_every, "image_every": image_every,
            "privacy": {"every": privacy_every}}


def technique_knobs(base: RunConfig, n: int, choice: dict[str, Any]) -> dict[str, Any]:
    """n_s (bounded by n-1), the λ distribution with its density, mixup vs CutMix, T_c, the regulariser."""
    st.markdown("**Technique settings**")
    c1, c2, c3 = st.columns(3)
    mixup_on = choice["mixup"]["enabled"]
    default_ns = min(base.mixup.num_partners or 0, max(n - 1, 0)) if base.mixup.num_partners is not None else n // 2
    top = min(max(n - 1, 1), MAX_CLIENTS - 1)  # n may be out of range here: its own message says so
    num_partners = c1.slider("n_s, mixup partners per client", 0, top, max(0, min(default_ns, top)),
                             help=HELP["mixup.num_partners"], disabled=not mixup_on or n < 2)
    variant = c1.radio("mixing", ["mixup", "cutmix"], horizontal=True, disabled=not mixup_on, help=HELP["mixup.variant"])
    reduction = c1.radio("over partners", ["mean", "sum"], ["mean", "sum"].index(base.mixup.reduction),
                         horizontal=True, disabled=not mixup_on, help=HELP["mixup.reduction"])
    alpha = c2.number_input("λ ~ Beta(α, β): α", value=float(base.mixup.alpha), step=0.05, disabled=not mixup_on)
    beta = c2.number_input("λ ~ Beta(α, β): β", value=float(base.mixup.beta), step=0.05, disabled=not mixup_on)
    if alpha > 0 and beta > 0:
        c2.plotly_chart(beta_density(alpha, beta), key="beta_density", config={"displayModeBar": False})
    interval = c3.number_input("T_c, average every (rounds)", value=base.averaging.interval, step=1,
                               disabled=not choice["averaging"]["enabled"], help=HELP["averaging.interval"])
    kind = c3.selectbox("local loss", ["infopro", "classifier", "norm"],
                        ["infopro", "classifier", "norm"].index(base.local_loss.kind),
                        disabled=not choice["local_loss"]["enabled"], help=HELP["local_loss.kind"])
    cut = c3.selectbox("cut after LeNet-5 block", [1, 2, 3, 4], base.cut_layer - 1, help=HELP["cut_layer"])
    return {"mixup": {"num_partners": int(num_partners), "variant": variant, "reduction": reduction,
                      "alpha": alpha, "beta": beta},
            "averaging": {"interval": interval}, "local_loss": {"kind": kind}, "cut_layer": int(cut)}


def queue(config: RunConfig) -> int:
    with common.db().write() as s:
        run_id = queries.create_run(s, config)
    common.clear_caches()
    return run_id


def new_run_form() -> None:
    preset = st.selectbox("start from a preset", list(PRESETS), list(PRESETS).index("locfedmix_sl"),
                          format_func=lambda p: f"{PRESETS[p].title} ({PRESETS[p].techniques})")
    base = preset_defaults(preset)
    st.caption(f"{PRESETS[preset].description} · follows: {PRESETS[preset].source}")
    slots = {}
    with st.container(border=True, key=f"form_{preset}"):
        name = st.text_input("name", PRESETS[preset].title)
        choice = technique_controls(base)
        slots["techniques"] = st.empty()
        data = data_controls(base)
        slots["data"] = st.empty()
        scale = scale_controls(base)
        slots["scale"] = st.empty()
        knobs = technique_knobs(base, scale["num_clients"], choice)
        slots["knobs"] = st.empty()
    raw: dict[str, Any] = {}
    # the preset's settings beyond its techniques first: the form's controls, set from them, decide
    for part in (PRESETS[preset].extra, {"name": name}, choice, data, scale, knobs):
        raw = deep_merge(raw, part)
    problems = config_problems(raw)
    by_section: dict[str, list[str]] = {}
    for problem in problems:
        by_section.setdefault(section_of(problem.field), []).append(in_form_words(problem.text(FORM_LABELS)))
    for section, lines in by_section.items():
        slots[section].error("  \n".join(common.escape_markdown(line) for line in lines))
    if problems:
        st.error(f"Not queued: {len(problems)} value{'s' if len(problems) > 1 else ''} to fix above.")
    else:
        cfg = validate_config(raw)
        for warning in cfg.warnings():
            st.warning(warning)
        leakage = f" · leakage measured every {cfg.privacy.every} rounds" if cfg.privacy.every else ""
        schedule = "" if cfg.schedule == "parallel" else f" · {SCHEDULE_LABELS[cfg.schedule].split(':')[0]}" + (
            f", {cfg.local_steps} batches per client" if cfg.schedule in SPLITFED_SCHEDULES else "")
        st.caption(f"techniques {common.technique_codes(cfg.model_dump())}{schedule} · "
                   f"{cfg.num_clients} clients × {cfg.rounds} rounds × b={cfg.batch_size}{leakage}")
    if st.button("Queue run", type="primary", disabled=bool(problems), key="submit"):
        run_id = queue(validate_config(raw))
        st.switch_page("pages/live.py", query_params={"run": str(run_id)})


SWEEP_LABELS = {**FORM_LABELS, "rounds": "rounds", "num_clients": "clients n"}


def parse_client_counts(text: str) -> tuple[list[int], str | None]:
    """'5,10,20' -> [5, 10, 20]; or a message naming what is wrong (not a number, a repeat, none)."""
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        return [], "**clients n**: give at least one value, e.g. 10,20,40"
    bad = [v for v in values if not v.isdigit()]
    if bad:
        return [], f"**clients n**: {common.escape_markdown(bad[0])} is not a whole number; e.g. 10,20,40"
    ns = [int(v) for v in values]
    repeated = sorted({n for n in ns if ns.count(n) > 1})
    if repeated:
        return [], f"**clients n**: {', '.join(map(str, repeated))} appears more than once; give each n once"
    return sorted(ns), None


def sweep_form() -> None:
    """A grid of technique combinations x n, queued at once (how the paper's Table 3 is built)."""
    rows = st.multiselect("technique combinations (Table 3 rows)", list(TABLE3_ROWS), list(TABLE3_ROWS),
                          format_func=lambda r: f"row {r}: {TABLE3_ROWS[r].title} ({TABLE3_ROWS[r].techniques})")
    c1, c2, c3, c4 = st.columns(4)
    ns_text = c1.text_input("clients n (comma-separated)", "5,10,20")
    rounds = c2.number_input("rounds", value=200, step=1, key="sweep_rounds")
    dataset = c3.selectbox("data set", DATASETS, DATASETS.index("fashion-mnist"), key="sweep_dataset")
    seed = c4.number_input("seed", value=0, step=1, key="sweep_seed")
    ns, n_problem = parse_client_counts(ns_text)
    if n_problem:
        st.error(n_problem)
        st.button("Queue sweep", disabled=True, key="submit_sweep")
        return
    configs, problems = [], {}
    for row in rows:
        for n in ns:
            raw = deep_merge(deep_merge(PROFILES["demo"], techniques_to_config(TABLE3_ROWS[row].techniques)), {
                "name": f"T3 row {row} n={n}", "num_clients": n, "rounds": rounds, "seed": seed,
                "data": {"dataset": dataset}})
            for p in config_problems(raw):  # one line per problem, naming the rows it hits
                problems.setdefault(p.text(SWEEP_LABELS), []).append(row)
            configs.append(raw)
    for text, hit in problems.items():
        where = "every row" if len(set(hit)) == len(rows) else "rows " + ", ".join(map(str, sorted(set(hit))))
        st.error(f"{common.escape_markdown(text)} ({where})")
    st.caption(f"{len(configs)} runs: {len(rows)} combinations × {len(ns)} values of n")
    if st.button("Queue sweep", disabled=bool(problems) or not configs, key="submit_sweep"):
        ids = [queue(validate_config(c)) for c in configs]
        st.success(f"queued runs {ids[0]}–{ids[-1]}; they appear on the Compare page as they finish")


st.header("New run")
if common.readonly():
    st.info("This is a read-only deployment: runs cannot be submitted here.")
    st.stop()
single, sweep = st.tabs(["One run", "Sweep (techniques × n)"])
with single:
    new_run_form()
with sweep:
    sweep_form()
