"""New run: choose a preset or any combination of the techniques, check it, queue it.

What is judged is what is on screen: every number is typed into a text field and read exactly
(:mod:`pages.form_fields`), and a text that is no number of the field's kind is refused, naming the
field and the text. Queue is enabled only when the engine's preflight
(:func:`engine.preflight.run_problems`, the check ``engine submit`` and ``engine run`` make too)
finds nothing wrong with the config on this host: ranges, the limits that depend on the data, and
the data set being here.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal, get_args, get_origin

import streamlit as st

from engine.config import (
    MAX_CLIENTS,
    MAX_ROUNDS,
    SCHEDULES,
    SPLITFED_SCHEDULES,
    ConfigProblem,
    ParticipationConfig,
    PrivacyConfig,
    RunConfig,
    deep_merge,
    field_help,
    validate_config,
)
from engine.preflight import run_problems
from engine.presets import PRESETS, PROFILES, TABLE3_ROWS, techniques_to_config
from engine.privacy import bfloat16_native, measure_seconds, measurements
from engine.techniques import plugins
from pages import common
from pages.common import plural
from pages.figures import beta_density, defense_label, defense_words, defenses
from pages.form_fields import (
    WHOLE,
    dataset_select,
    get_button,
    here,
    parse_real,
    parse_whole,
    real_field,
    shown,
    whole_field,
)
from storage import queries

common.run_through_app_py()  # first thing: a deep link on a fresh server reruns through app.py

HELP = field_help()
# Which section of the form a field's error is shown under.
SECTION_OF = {"data": "data", "num_clients": "scale", "rounds": "scale", "batch_size": "scale", "seed": "scale",
              "optim": "scale", "eval_every": "scale", "image_every": "scale", "privacy": "scale",
              "participation": "scale", "mixup": "knobs",
              "averaging": "knobs", "local_loss": "knobs", "cut_layer": "knobs", "defense": "defense"}


# The form's own label for each field, so a message names what the user sees ("clients n must be ...").
FORM_LABELS = {
    "name": "name", "num_clients": "clients n", "rounds": "rounds T", "batch_size": "batch size b", "seed": "seed",
    "optim.name": "optimiser", "optim.lr": "learning rate η", "eval_every": "evaluate every (rounds)",
    "image_every": "images every (rounds, 0: never)", "data.dataset": "data set", "data.partition": "partition",
    "data.dirichlet_beta": "Dirichlet β", "data.samples_per_client": "items per client (0: default)",
    "mixup.num_partners": "n_s, mixup partners per client", "mixup.alpha": "λ ~ Beta(α, β): α",
    "mixup.beta": "λ ~ Beta(α, β): β", "averaging.interval": "T_c, average every (rounds)",
    "split_lr.alpha": "SplitLr α", "split_avg.fraction": "SplitAvg φ", "cut_layer": "cut after LeNet-5 block",
    "privacy.every": "leakage every (rounds, 0: off)", "privacy.budget": "attacker's budget",
    "privacy.clients": "clients attacked (at most)", "privacy.averaging_at_server": "server holds models",
    "privacy.attack_steps": "decoder steps (at most)", "schedule": "① schedule",
    "participation.fraction": "clients per round C (fraction)", "participation.dropout": "dropout p",
    "participation.speed_spread": "straggler spread σ (0: none)", "participation.deadline": "deadline (T_comp, 0: none)",
    "local_steps": "batches per client per round", "reset_optimizers": "re-create the optimisers",
    "split_avg.enabled": "SGLR SplitAvg",
    "defense.noise": "noise σ (0: off)", "defense.nopeek": "NoPeek α (0: off)",
    "defense.bits": "quantise to k bits (0: off)",
}
# What each defense does, in the words of the form's help (the config's own lines are shorter).
DEFENSE_HELP = {
    "defense.noise": "Gaussian noise: each client adds noise of standard deviation σ to every number of its smashed "
                     "data before the upload, so the server (and the upper model it trains) sees s + N(0, σ²). "
                     "Larger σ hides more and costs accuracy (InfoPro and the Round walkthrough's upload step show "
                     "the signal-to-noise ratio it leaves). 0: off.",
    "defense.nopeek": "NoPeek (Vepakomma et al.): adds α × the distance correlation between a client's images and its "
                      "smashed data, over its batch, to the client's loss, so the lower model learns smashed data "
                      "that say less about the images. The data sent are unchanged; no byte more. 0: off.",
    "defense.bits": "k-bit quantisation: each number of the smashed data goes up as one of 2^k levels (1 to 16 bits; "
                    "the gradient passes straight through), so the upload of smashed data is 32/k times smaller "
                    "and coarser. 0: off (32-bit floats).",
}
MEASURING_COST = ("Each measurement trains the server's attacks (a decoder and, where the server holds the lower "
                  "models, a white-box inversion): tens of seconds or more on a CPU, which the result page reports "
                  "as the leakage measurement's time.")
BUDGET_LABELS = {"strong": "strong (the default)", "fast": "fast (weaker, about 3 dB below strong)"}
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


class NumberFields:
    """The number fields of one form: each read exactly as typed, or a problem naming it.

    A field whose step is switched off (disabled) and holds unreadable text is not used, so it is not
    held against the run: its default stands in for it and nothing is said.
    """

    def __init__(self, labels: dict[str, str]):
        self.labels = labels
        self.problems: list[ConfigProblem] = []

    def whole(self, container, path: str, default: int, *, disabled: bool = False, label: str | None = None,
              **kwargs) -> int | None:
        field = whole_field(container, label or self.labels[path], path, default, disabled=disabled, **kwargs)
        return self._read(field, default, disabled)

    def real(self, container, path: str, default: float, *, disabled: bool = False, label: str | None = None,
             **kwargs) -> float | None:
        field = real_field(container, label or self.labels[path], path, default, disabled=disabled, **kwargs)
        return self._read(field, default, disabled)

    def _read(self, field, default, disabled: bool):
        if field.problem is None:
            return field.value
        if disabled:
            return default
        self.problems.append(field.problem)
        return None


def technique_controls(base: RunConfig, fields: NumberFields) -> dict[str, Any]:
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
    local_steps = fields.whole(c2, "local_steps", base.local_steps, help=HELP["local_steps"], disabled=not splitfed)
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
        **plugin_controls(base, fields),
    }


def plugin_controls(base: RunConfig, fields: NumberFields) -> dict[str, Any]:
    """A checkbox and the settings of every technique that brings its own (docs/extending.md); only the
    sections of those switched on are queued (``plugins.<name>``)."""
    chosen: dict[str, dict[str, Any]] = {}
    for owner in plugins():
        current = base.plugin(owner.name)
        on = st.checkbox(f"{owner.label} ({owner.code})", current.enabled, key=f"plugin_{owner.name}",
                         help=HELP.get(f"plugins.{owner.name}.enabled"))
        values: dict[str, Any] = {"enabled": True}
        settings = [(k, f) for k, f in owner.Settings.model_fields.items() if k != "enabled"]
        columns = st.columns(max(len(settings), 1)) if settings else []
        for column, (key, info) in zip(columns, settings):
            path, default = f"plugins.{owner.name}.{key}", getattr(current, key)
            args = {"label": plugin_label(owner, key), "disabled": not on, "help": HELP.get(path),
                    "key": f"plugin_{owner.name}_{key}"}
            kind = info.annotation
            if kind is bool:
                values[key] = column.checkbox(args.pop("label"), default, **args)
            elif kind is int:
                values[key] = fields.whole(column, path, default, **args)
            elif kind is float:
                values[key] = fields.real(column, path, default, **args)
            elif get_origin(kind) is Literal:
                options = list(get_args(kind))
                values[key] = column.selectbox(args.pop("label"), options, options.index(default), **args)
            else:
                values[key] = column.text_input(args.pop("label"), str(default), **args)
        if on:
            chosen[owner.name] = values
    return {"plugins": chosen} if chosen else {}


def plugin_label(owner, key: str) -> str:
    """A plugin setting's label on the form: 'cut-layer gradient clipping: max norm'."""
    return f"{owner.label}: {key.replace('_', ' ')}"


def form_labels() -> dict[str, str]:
    """The form's labels, with those of the plugins' settings."""
    return {**FORM_LABELS, **{f"plugins.{owner.name}.{key}": plugin_label(owner, key)
                              for owner in plugins() for key in owner.Settings.model_fields}}


def data_controls(base: RunConfig, fields: NumberFields, present: dict[str, bool]) -> dict[str, Any]:
    """The data set (each saying whether it is here, a "Get ..." button for one that is not), its
    partition, Dirichlet β and the items per client."""
    st.markdown("**Data**")
    c1, c2, c3 = st.columns(3)
    dataset = dataset_select(c1, base.data.dataset, present, key="dataset", help=HELP["data.dataset"])
    partition = c2.selectbox("partition", ["paper", "iid", "dirichlet"], help=HELP["data.partition"])
    beta = fields.real(c3, "data.dirichlet_beta", float(base.data.dirichlet_beta), help=HELP["data.dirichlet_beta"],
                       disabled=partition != "dirichlet")
    per_client = fields.whole(c3, "data.samples_per_client", 0, allow_empty=True,
                              help=HELP["data.samples_per_client"] + "; 0 or empty: the partition's default")
    if not present.get(dataset):
        get_button(dataset, key=f"get_{dataset}")
    return {"data": {"dataset": dataset, "partition": partition, "dirichlet_beta": beta,
                     "samples_per_client": per_client or None}}


def scale_controls(base: RunConfig, fields: NumberFields) -> dict[str, Any]:
    st.markdown("**Scale and optimiser**")
    c1, c2, c3, c4 = st.columns(4)
    # Text fields read exactly, with no min/max: a browser's number field rounds, clamps or silently
    # keeps the old value, so the form would queue a number other than the one shown. The engine judges.
    n = fields.whole(c1, "num_clients", base.num_clients, help=HELP["num_clients"])
    rounds = fields.whole(c2, "rounds", base.rounds, help=HELP["rounds"])
    batch = fields.whole(c3, "batch_size", base.batch_size, help=HELP["batch_size"])
    seed = fields.whole(c4, "seed", base.seed, help=HELP["seed"])
    optimizer = c1.selectbox("optimiser", ["adam", "momentum", "sgd"], ["adam", "momentum", "sgd"].index(base.optim.name),
                             help=HELP["optim.name"])
    lr = fields.real(c2, "optim.lr", float(base.optim.lr), help=HELP["optim.lr"])
    eval_every = fields.whole(c3, "eval_every", base.eval_every, help=HELP["eval_every"])
    image_every = fields.whole(c4, "image_every", base.image_every, help=HELP["image_every"])
    privacy_every = fields.whole(c1, "privacy.every", base.privacy.every,
                                 help=HELP["privacy.every"] + f". {MEASURING_COST}")
    privacy = {"every": privacy_every, **attacker_controls((c2, c3, c4), base.privacy, fields, not privacy_every)}
    if 0 < (privacy_every or 0) <= MAX_ROUNDS and (rounds or 0) > 0:  # out of range: its message, no cost line
        st.caption(measuring_cost(rounds, privacy_every, privacy["budget"], privacy["clients"]))
    participation = participation_controls(base.participation, fields)
    return {"num_clients": n, "rounds": rounds, "batch_size": batch, "seed": seed,
            "optim": {"name": optimizer, "lr": lr}, "eval_every": eval_every, "image_every": image_every,
            "privacy": privacy, "participation": participation}


def participation_controls(base: ParticipationConfig, fields: NumberFields, key: str = "") -> dict[str, Any]:
    """Clients that come and go: C, the dropout p, the stragglers' spread σ and a round deadline (one row)."""
    columns = st.columns(4)
    return {name: fields.real(column, f"participation.{name}", float(getattr(base, name)),
                              help=HELP[f"participation.{name}"], key=f"{key}participation_{name}")
            for column, name in zip(columns, ("fraction", "dropout", "speed_spread", "deadline"))}


def attacker_controls(columns, base: PrivacyConfig, fields: NumberFields, off: bool, key: str = "") -> dict[str, Any]:
    """The attacker's budget, how many clients it attacks, and whether the server holds the lower
    models (greyed while leakage is off; queued as shown)."""
    c2, c3, c4 = columns
    budget = c2.selectbox(FORM_LABELS["privacy.budget"], list(BUDGET_LABELS),
                          list(BUDGET_LABELS).index(base.budget), format_func=BUDGET_LABELS.get,
                          help=HELP["privacy.budget"], disabled=off, key=f"{key}privacy_budget")
    attacked = fields.whole(c3, "privacy.clients", base.clients, help=HELP["privacy.clients"],
                            disabled=off, key=f"{key}privacy_clients")
    at_server = c4.checkbox(FORM_LABELS["privacy.averaging_at_server"], base.averaging_at_server,
                            help=HELP["privacy.averaging_at_server"], disabled=off, key=f"{key}privacy_at_server")
    return {"budget": budget, "clients": attacked, "averaging_at_server": at_server}


def measuring_cost(rounds: int, every: int, budget: str, clients: int | None) -> str:
    """What measuring leakage will add to the run, from the measured seconds of one measurement."""
    count = measurements(rounds, every)
    low, high = measure_seconds(budget)
    where = ("a CPU with native bfloat16, as the machine serving this page has" if bfloat16_native()
             else "in float32, as on the machine serving this page, which has no native bfloat16")
    most = max(clients or 1, 1)
    upto = f", up to {most}× that where the {most} attacked clients' lower models differ" if most > 1 else ""
    weaker = " The fast attacker is weaker: a stronger server beats its figures by about 3 dB." if budget == "fast" else ""
    when = (f"every {plural(every, 'round')}, the last at round {rounds:,}" if rounds % every == 0 else
            f"every {plural(every, 'round')} and at the end, round {rounds:,}") if count > 1 else f"at round {rounds:,}"
    return (f"Leakage will be measured {plural(count, 'time')} ({when}). "
            f"One measurement of one client took {low}–{high} s with the {budget} attacker on one CPU core of "
            f"SplitLab's development machine ({where}): about {duration(count * low)} to "
            f"{duration(count * high)} added to the run{upto}.{weaker} The result page reports the time it took.")


def duration(seconds: float) -> str:
    """65 -> "65 s", 390 -> "6.5 min", 7200 -> "2.0 h"."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"


def technique_knobs(base: RunConfig, n: int | None, choice: dict[str, Any], fields: NumberFields) -> dict[str, Any]:
    """n_s (bounded by n-1), the λ distribution with its density, mixup vs CutMix, T_c, the regulariser."""
    st.markdown("**Technique settings**")
    c1, c2, c3 = st.columns(3)
    n = base.num_clients if n is None else n  # n unreadable: its own message says so, and nothing is queued
    mixup_on = choice["mixup"]["enabled"]
    default_ns = min(base.mixup.num_partners or 0, max(n - 1, 0)) if base.mixup.num_partners is not None else n // 2
    top = min(max(n - 1, 1), MAX_CLIENTS - 1)  # n may be out of range here: its own message says so
    num_partners = c1.slider("n_s, mixup partners per client", 0, top, max(0, min(default_ns, top)),
                             help=HELP["mixup.num_partners"], disabled=not mixup_on or n < 2)
    variant = c1.radio("mixing", ["mixup", "cutmix"], horizontal=True, disabled=not mixup_on, help=HELP["mixup.variant"])
    reduction = c1.radio("over partners", ["mean", "sum"], ["mean", "sum"].index(base.mixup.reduction),
                         horizontal=True, disabled=not mixup_on, help=HELP["mixup.reduction"])
    alpha = fields.real(c2, "mixup.alpha", float(base.mixup.alpha), disabled=not mixup_on, help=HELP["mixup.alpha"])
    beta = fields.real(c2, "mixup.beta", float(base.mixup.beta), disabled=not mixup_on, help=HELP["mixup.beta"])
    if alpha is not None and beta is not None and 0 < alpha <= 100 and 0 < beta <= 100:
        c2.plotly_chart(beta_density(alpha, beta), key="beta_density", config={"displayModeBar": False})
    interval = fields.whole(c3, "averaging.interval", base.averaging.interval,
                            disabled=not choice["averaging"]["enabled"], help=HELP["averaging.interval"])
    kind = c3.selectbox("local loss", ["infopro", "classifier", "norm"],
                        ["infopro", "classifier", "norm"].index(base.local_loss.kind),
                        disabled=not choice["local_loss"]["enabled"], help=HELP["local_loss.kind"])
    cut = c3.selectbox("cut after LeNet-5 block", [1, 2, 3, 4], base.cut_layer - 1, help=HELP["cut_layer"])
    return {"mixup": {"num_partners": int(num_partners), "variant": variant, "reduction": reduction,
                      "alpha": alpha, "beta": beta},
            "averaging": {"interval": interval}, "local_loss": {"kind": kind}, "cut_layer": int(cut)}


def defense_controls(base: RunConfig, fields: NumberFields) -> dict[str, Any]:
    """The defenses (noise σ, NoPeek α, k-bit quantisation), each read exactly; 0 leaves it off."""
    st.markdown("**Defenses** (what a client does before the server sees its smashed data; 0: off)")
    c1, c2, c3 = st.columns(3)
    noise = fields.real(c1, "defense.noise", float(base.defense.noise), help=DEFENSE_HELP["defense.noise"])
    nopeek = fields.real(c2, "defense.nopeek", float(base.defense.nopeek), help=DEFENSE_HELP["defense.nopeek"])
    bits = fields.whole(c3, "defense.bits", base.defense.bits, help=DEFENSE_HELP["defense.bits"])
    return {"defense": {"noise": noise, "nopeek": nopeek, "bits": bits}}


def queue(config: RunConfig) -> int:
    with common.db().write() as s:
        run_id = queries.create_run(s, config)
    common.clear_caches()
    return run_id


def show_problems(problems: list[ConfigProblem], slots: dict[str, Any]) -> None:
    """Each problem under its section, in the form's words; then how many values block Queue."""
    by_section: dict[str, list[str]] = {}
    for problem in problems:
        by_section.setdefault(section_of(problem.field), []).append(in_form_words(problem.text(form_labels())))
    for section, lines in by_section.items():
        slots[section].error("  \n".join(common.escape_markdown(line) for line in lines))
    st.error(f"Not queued: {plural(len(problems), 'value')} to fix above.")


def summary(cfg: RunConfig) -> str:
    """The line under the form: what Queue would queue."""
    leakage = (f" · leakage measured every {plural(cfg.privacy.every, 'round')} by the {cfg.privacy.budget} attacker"
               if cfg.privacy.every else "")
    schedule = "" if cfg.schedule == "parallel" else f" · {SCHEDULE_LABELS[cfg.schedule].split(':')[0]}" + (
        f", {plural(cfg.local_steps, 'batch', 'batches')} per client" if cfg.schedule in SPLITFED_SCHEDULES else "")
    config = cfg.model_dump()
    defended = f" · defenses: {defense_words(config)}" if defenses(config) else ""
    part = cfg.participation
    coming = "".join(((f" · C = {part.fraction:g}: {plural(part.clients(cfg.num_clients), 'client')} "
                       "a round") if part.fraction < 1 else "",
                      f" · dropout p = {part.dropout:g}" if part.dropout > 0 else "",
                      f" · stragglers σ = {part.speed_spread:g}" if part.speed_spread > 0 else "",
                      f" · deadline {part.deadline:g}·T_comp" if part.deadline > 0 else ""))
    return (f"techniques {common.technique_codes(config)}{schedule} · {cfg.data.dataset} · "
            f"{plural(cfg.num_clients, 'client')} × {plural(cfg.rounds, 'round')} × b={cfg.batch_size}{coming}"
            f"{leakage}{defended}")


def new_run_form() -> None:
    preset = st.selectbox("start from a preset", list(PRESETS), list(PRESETS).index("locfedmix_sl"),
                          format_func=lambda p: f"{PRESETS[p].title} ({PRESETS[p].techniques})")
    base = preset_defaults(preset)
    st.caption(f"{PRESETS[preset].description} · follows: {PRESETS[preset].source}")
    present = here()
    fields = NumberFields(form_labels())
    slots = {}
    with st.container(border=True, key=f"form_{preset}"):
        name = st.text_input("name", PRESETS[preset].title)
        choice = technique_controls(base, fields)
        slots["techniques"] = st.empty()
        data = data_controls(base, fields, present)
        slots["data"] = st.empty()
        scale = scale_controls(base, fields)
        slots["scale"] = st.empty()
        knobs = technique_knobs(base, scale["num_clients"], choice, fields)
        slots["knobs"] = st.empty()
        defense = defense_controls(base, fields)
        slots["defense"] = st.empty()
    raw: dict[str, Any] = {}
    # the preset's settings beyond its techniques first: the form's controls, set from them, decide
    for part in (PRESETS[preset].extra, {"name": name}, choice, data, scale, knobs, defense):
        raw = deep_merge(raw, part)
    # a text that is no number is refused as typed; the engine judges the rest only once all are read
    problems = fields.problems or run_problems(raw)
    if problems:
        show_problems(problems, slots)
    else:
        cfg = validate_config(raw)
        for warning in cfg.warnings():
            st.warning(warning)
        st.caption(summary(cfg))
    if st.button("Queue run", type="primary", disabled=bool(problems), key="submit") and not problems:
        run_id = queue(validate_config(raw))
        st.switch_page("pages/live.py", query_params={"run": str(run_id)})


SWEEP_LABELS = {**FORM_LABELS, "rounds": "rounds", "num_clients": "clients n", "eval_every": "evaluate every",
                "defense.noise": "noise σ", "defense.nopeek": "NoPeek α", "defense.bits": "quantise to k bits"}
SWEEP_EXAMPLE = "e.g. 10,20,40"
NO_SWEPT_DEFENSE = "none"
# The defense the Sweep tab sweeps: its label, and the strengths it starts with (0: the undefended twin).
SWEPT_DEFENSES = {"noise": ("noise σ", "0,0.1,0.5,1"), "nopeek": ("NoPeek α", "0,0.5,1,2"),
                  "bits": ("quantise to k bits", "0,8,4,2")}
SWEPT_DEFENSE_NAMES = {"noise": "Gaussian noise σ", "nopeek": "NoPeek α", "bits": "k-bit quantisation"}


def parse_client_counts(text: str) -> tuple[list[int], str | None]:
    """'5,10,20' -> [5, 10, 20]; or a message naming what is wrong (not a whole number, a repeat,
    none). Whole numbers out of range (0, -2) are read here and judged by the engine."""
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        return [], f"clients n: give at least one value, {SWEEP_EXAMPLE}"
    bad = [v for v in values if parse_whole(v) is None]
    if bad and WHOLE.fullmatch(bad[0]):
        return [], f"clients n: {shown(bad[0])} has {len(bad[0]):,} digits: give each n as a number up to {MAX_CLIENTS}"
    if bad:
        return [], f"clients n: {shown(bad[0])} is not a whole number; give whole numbers separated by commas, " \
                   f"{SWEEP_EXAMPLE}"
    ns = [int(v) for v in values]
    repeated = sorted({n for n in ns if ns.count(n) > 1})
    if repeated:
        return [], f"clients n: {', '.join(map(str, repeated))} appears more than once; give each n once"
    return sorted(ns), None


def parse_strengths(text: str, defense: str) -> tuple[list[float | int], str | None]:
    """'0,0.1,0.5' -> [0.0, 0.1, 0.5] for a defense's strengths (whole numbers for ``bits``); or a message
    naming the field and what is wrong (not a number, a repeat, none). Values out of range (-1, 40 bits) are
    read here and judged by the engine."""
    label, example = SWEPT_DEFENSES[defense]
    whole = defense == "bits"
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        return [], f"{label}: give at least one value, e.g. {example}"
    read = [parse_whole(v) if whole else parse_real(v) for v in values]
    bad = [v for v, x in zip(values, read) if x is None]
    if bad:
        kind = "a whole number" if whole else "a finite number"
        return [], (f"{label}: {shown(bad[0])} is not {kind}; give {kind.split(' ', 1)[1]}s separated by commas, "
                    f"e.g. {example}")
    repeated = sorted({x for x in read if read.count(x) > 1})
    if repeated:
        return [], f"{label}: {', '.join(f'{x:g}' for x in repeated)} appears more than once; give each value once"
    return read, None


def sweep_configs(rows: list[int], ns: list[int], settings: dict[str, Any], defense: str = NO_SWEPT_DEFENSE,
                  strengths: list[float | int] | None = None) -> list[tuple[int, dict[str, Any]]]:
    """(Table 3 row, config) for each row, n and strength of the swept defense: the demo profile, the row's
    techniques, the sweep's settings (strength 0 is the undefended run, each defended run's twin)."""
    swept = [{}] if defense == NO_SWEPT_DEFENSE else [{"defense": {defense: x}} for x in strengths or []]

    def config(row: int, n: int, part: dict[str, Any]) -> dict[str, Any]:
        tag = f" {defense_label(part)}" if defenses(part) else ""  # "T3 row 8 n=10 noise σ=0.5"
        base = deep_merge(PROFILES["demo"], techniques_to_config(TABLE3_ROWS[row].techniques))
        return deep_merge(base, deep_merge({"name": f"T3 row {row} n={n}{tag}", "num_clients": n, **settings}, part))

    return [(row, config(row, n, part)) for row in rows for n in ns for part in swept]


def sweep_problems(grid: list[tuple[int, dict[str, Any]]]) -> list[str]:
    """The preflight's problems over the grid, each said once, with the rows it hits."""
    hits: dict[str, set[int]] = {}
    for row, raw in grid:
        for problem in run_problems(raw):
            hits.setdefault(in_form_words(problem.text(SWEEP_LABELS), SWEEP_LABELS), set()).add(row)
    rows = {row for row, _ in grid}
    return [f"{text} ({'every row' if hit == rows else rows_named(sorted(hit))})" for text, hit in hits.items()]


def rows_named(rows: list[int]) -> str:
    """"row 4", "rows 4, 8"."""
    return ("row " if len(rows) == 1 else "rows ") + ", ".join(map(str, rows))


def queue_sweep(signature: str, configs: list[dict[str, Any]]) -> None:
    """Queue the grid (on_click: before the page is drawn again, so Queue sweep is drawn disabled).
    A grid already queued from this page is not queued again (a double click)."""
    queued = st.session_state.setdefault("sweep_queued", {})
    if signature in queued or not configs:
        return
    queued[signature] = []
    with common.db().write() as s:
        queued[signature] = [queries.create_run(s, validate_config(c)) for c in configs]
    common.clear_caches()


def id_list(ids: list[int]) -> str:
    """'#3–#8' for consecutive ids, else '#3, #5, #9'."""
    if len(ids) > 2 and ids == list(range(ids[0], ids[-1] + 1)):
        return f"#{ids[0]}–#{ids[-1]}"
    return ", ".join(f"#{i}" for i in ids)


def swept_defense() -> tuple[str, list[float | int], str | None]:
    """The defense the sweep varies (or none), its strengths as typed, and what is wrong with them."""
    c1, c2 = st.columns([1, 3])
    defense = c1.selectbox("defense to sweep", [NO_SWEPT_DEFENSE, *SWEPT_DEFENSES], key="sweep_defense",
                           format_func=lambda d: SWEPT_DEFENSE_NAMES.get(d, "none"),
                           help="Sweep one defense's strength for a trade-off grid on Compare (accuracy against "
                                "leakage): every combination and n runs once per strength. Strength 0 is the "
                                "undefended run, which InfoPro shows beside each defended one.")
    if defense == NO_SWEPT_DEFENSE:
        return defense, [], None
    label, example = SWEPT_DEFENSES[defense]
    text = c2.text_input(f"{label} (comma-separated)", example, key=f"sweep_strengths_{defense}",
                         help=DEFENSE_HELP[f"defense.{defense}"] + " Give the strengths to sweep, separated by commas.")
    strengths, problem = parse_strengths(text, defense)
    return defense, strengths, problem


def sweep_form() -> None:
    """A grid of technique combinations x n (x the strengths of one defense), queued at once (how the paper's
    Table 3 is built; with a defense, the trade-off Compare plots)."""
    rows = st.multiselect("technique combinations (Table 3 rows)", list(TABLE3_ROWS), list(TABLE3_ROWS),
                          format_func=lambda r: f"row {r}: {TABLE3_ROWS[r].title} ({TABLE3_ROWS[r].techniques})")
    present = here()
    fields = NumberFields(SWEEP_LABELS)
    c1, c2, c3, c4 = st.columns(4)
    ns_text = c1.text_input("clients n (comma-separated)", "5,10,20")
    rounds = fields.whole(c2, "rounds", 200, key="sweep_rounds", help=HELP["rounds"])
    dataset = dataset_select(c3, "fashion-mnist", present, key="sweep_dataset", help=HELP["data.dataset"])
    seed = fields.whole(c4, "seed", 0, key="sweep_seed", help=HELP["seed"])
    eval_every = fields.whole(c2, "eval_every", PROFILES["demo"]["eval_every"], key="sweep_eval_every",
                              help=HELP["eval_every"])
    privacy_every = fields.whole(c4, "privacy.every", 0, key="sweep_privacy_every",
                                 help=HELP["privacy.every"] + ". Gives the Compare page its accuracy against "
                                 f"leakage. {MEASURING_COST}")
    privacy = {"every": privacy_every, **attacker_controls(st.columns(3), PrivacyConfig(), fields, not privacy_every,
                                                             key="sweep_")}
    participation = participation_controls(ParticipationConfig(), fields, key="sweep_")
    if not present.get(dataset):
        get_button(dataset, key=f"sweep_get_{dataset}")
    defense, strengths, strength_problem = swept_defense()
    ns, n_problem = parse_client_counts(ns_text)
    texts = [t for t in (n_problem, strength_problem) if t]
    texts += [p.text(SWEEP_LABELS) for p in fields.problems]
    grid: list[tuple[int, dict[str, Any]]] = []
    if not texts:
        grid = sweep_configs(rows, ns, {"rounds": rounds, "seed": seed, "eval_every": eval_every,
                                        "data": {"dataset": dataset}, "privacy": privacy, "participation": participation},
                             defense, strengths)
        texts = sweep_problems(grid)
    configs = [raw for _, raw in grid]
    for text in texts:
        st.error(common.escape_markdown(text))
    if not rows:
        st.info("Choose at least one technique combination.")
    if configs and not texts:
        for warning in dict.fromkeys(w for c in configs for w in validate_config(c).warnings()):
            st.warning(warning)
        swept = "" if defense == NO_SWEPT_DEFENSE else (
            f" × {plural(len(strengths), 'value')} of {SWEPT_DEFENSES[defense][0]} "
            f"({', '.join(f'{x:g}' for x in strengths)}{'; 0: no defense' if 0 in strengths else ''})")
        st.caption(f"{plural(len(configs), 'run')}: {plural(len(rows), 'combination')} × "
                   f"{plural(len(ns), 'value')} of n ({', '.join(map(str, ns))}){swept} · {dataset} · "
                   f"{plural(rounds, 'round')} each")
    signature = json.dumps(configs, sort_keys=True)
    ids = st.session_state.get("sweep_queued", {}).get(signature)
    off = bool(texts) or not configs or ids is not None
    st.button("Queue sweep", disabled=off, key="submit_sweep", on_click=queue_sweep,
              args=(signature, [] if off else configs))
    if ids:
        st.success(f"Queued {plural(len(ids), 'run')}: {id_list(ids)}. They appear on the Compare page as they "
                   "finish; change a field to queue another grid.")


st.header("New run")
if common.readonly():
    st.info("This is a read-only deployment: runs cannot be submitted here.")
    st.stop()
single, sweep = st.tabs(["One run", "Sweep (techniques × n × defense)"])
with single:
    new_run_form()
with sweep:
    sweep_form()
