"""The round walkthrough's steps and words, from a traced round (:mod:`engine.trace`). Pure (no Streamlit).

A *step* is one phase of one schedule step: a parallel round has one schedule step serving every
client, so its steps are the nine phases; Vanilla SL serves one client at a time and hands the
lower model on, so its steps repeat per client; SplitFed V1 and V2 serve the clients in turn, in
an order drawn each round, and repeat the steps for every batch (one batch per client here). A
phase whose technique is off is still a step, shown greyed, with one line on what the technique
would add. The diagram is drawn by :mod:`pages.walkthrough_diagram`, the tensors and numbers by
:mod:`pages.walkthrough_pictures`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine.config import SPLITFED_SCHEDULES, RunConfig, deep_merge, validate_config
from engine.presets import PRESETS, PROFILES, techniques_to_config
from engine.techniques import plugin_lines
from engine.trace import PHASE_TITLES, PHASES, RoundResult, TraceEvent
from pages.figures import defense_words, defenses

BATCH_SIZE = 8  # small, so every image of a client's batch fits on one row
MIN_CLIENTS, MAX_CLIENTS = 2, 8
DATASETS = ("fashion-mnist", "digits")
DATASET_NAMES = {"fashion-mnist": "Fashion-MNIST", "digits": "digits", "cifar10": "CIFAR-10",
                 "synthetic": "synthetic"}  # as the page says them (the engine's data sets)
END = math.inf  # the schedule position of end-of-round steps (averaging): after every client's step
ROUND_PHASES = tuple(p for p in PHASES if p != "averaging") + ("handoff",)
RANK = {p: i for i, p in enumerate((*ROUND_PHASES, "averaging"))}
TECHNIQUE_OF = {"mixup": "③", "grads_down": "②", "local": "④", "averaging": "⑤"}  # phases a technique switches on
WALK_LOCAL_STEPS = 1  # batches per client of a SplitFed round walked through (the presets train 20)


# The defenses the walkthrough offers ("kind:strength", as a link writes them), by what the list says.
DEFENSE_CHOICES = {"": "no defense", "noise:0.1": "Gaussian noise σ = 0.1", "noise:0.5": "Gaussian noise σ = 0.5",
                   "noise:2": "Gaussian noise σ = 2", "nopeek:1": "NoPeek α = 1", "bits:8": "8-bit quantisation",
                   "bits:4": "4-bit quantisation", "bits:2": "2-bit quantisation"}


# Clients that come and go, as the walkthrough offers them ("kind:value", as a link writes them).
ABSENCE_CHOICES = {"": "every client takes part", "fraction:0.5": "half the clients drawn (C = 0.5)",
                   "dropout:0.4": "dropouts (p = 0.4)", "deadline:1": "stragglers (σ = 1) and a deadline of 1·T_comp"}
ABSENT_SHORT = {"not drawn": "absent: not drawn", "missed the deadline": "absent: too slow",
                "dropped out": "absent: dropped out"}


def absent_short(why: str) -> str:
    """The few words a greyed client's box says ('absent: not drawn')."""
    return next((short for start, short in ABSENT_SHORT.items() if why.startswith(start)), "absent")


def absence_override(choice: str) -> dict:
    """An :data:`ABSENCE_CHOICES` key as config overrides ('' -> {})."""
    if not choice:
        return {}
    kind, _, value = choice.partition(":")
    if kind == "deadline":
        return {"participation": {"speed_spread": 1.0, "deadline": float(value)}}
    return {"participation": {kind: float(value)}}


def defense_override(choice: str) -> dict:
    """A :data:`DEFENSE_CHOICES` key as config overrides: 'noise:0.5' -> {'defense': {'noise': 0.5}}; '' -> {}."""
    if not choice:
        return {}
    kind, _, value = choice.partition(":")
    return {"defense": {kind: int(value) if kind == "bits" else float(value)}}


def walkthrough_config(algorithm: str, num_clients: int, dataset: str, seed: int = 0, defense: str = "",
                       absence: str = "") -> RunConfig:
    """The demo profile with ``algorithm`` (a preset name, or technique codes such as '1,2,3'), n clients,
    b = 8, ``dataset`` and ``defense`` (a :data:`DEFENSE_CHOICES` key), judged by the engine's own validation
    (a ConfigError says what is wrong). A SplitFed round is walked through with one batch per client
    (``WALK_LOCAL_STEPS``): the others repeat the same steps."""
    overrides = PRESETS[algorithm].overrides() if algorithm in PRESETS else techniques_to_config(algorithm)
    raw = deep_merge(deep_merge(PROFILES["demo"], overrides), {
        "name": "walkthrough", "num_clients": int(num_clients), "batch_size": BATCH_SIZE, "seed": int(seed),
        "data": {"dataset": dataset}, **defense_override(defense), **absence_override(absence)})
    if raw.get("schedule") in SPLITFED_SCHEDULES:
        raw["local_steps"] = WALK_LOCAL_STEPS
    return validate_config(raw)


def algorithm_name(cfg: RunConfig) -> str:
    """'LocFedMix-SL', or the technique codes of a combination no preset names (the schedule counts:
    SplitFed V1 and V2 share row 4's codes)."""
    codes = ",".join(cfg.techniques())
    same = [p for p in PRESETS.values() if p.techniques == codes and p.overrides()["schedule"] == cfg.schedule]
    return next((p.title for p in same if not p.title.startswith("Table 3")),
                next((p.title for p in same), f"techniques {codes}"))


# ---- steps ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """One phase of one schedule step; ``event`` is None when the phase did not run (shown greyed)."""

    group: int   # the schedule step: 0 for a parallel round; Vanilla SL: the client served; SplitFed: the batch
    phase: str
    event: TraceEvent | None

    @property
    def key(self) -> tuple[float, int]:
        """Where the step falls in a round; the same for two algorithms shown side by side."""
        return (END if self.phase == "averaging" else self.group, RANK[self.phase])


def walk(res: RoundResult) -> list[Step]:
    """The round's steps in order: every phase of every schedule step, the phases that did not run
    once (in the first schedule step), and averaging at the end of the round."""
    groups = sorted({e.step for e in res.trace.events})
    steps = []
    for g in groups:
        for phase in ROUND_PHASES:
            events = res.trace.get(phase, g)
            if events:
                steps.append(Step(g, phase, events[0]))
            elif g == groups[0] and phase != "handoff":
                steps.append(Step(g, phase, None))
    averaging = res.trace.get("averaging")
    steps.append(Step(groups[-1], "averaging", averaging[0] if averaging else None))
    return steps


def timeline(walks: list[list[Step]]) -> list[tuple[float, int]]:
    """The keys of every step of the walks, in round order: columns shown side by side step together."""
    return sorted({s.key for w in walks for s in w})


def step_at(steps: list[Step], key: tuple[float, int]) -> Step | None:
    return next((s for s in steps if s.key == key), None)


def sequential(res: RoundResult) -> bool:
    """Vanilla SL: one lower model, handed from client to client."""
    return res.config.schedule == "sequential"


def splitfed(res: RoundResult) -> bool:
    return res.config.schedule in SPLITFED_SCHEDULES


def one_at_a_time(res: RoundResult) -> bool:
    """A schedule step serves one client (Vanilla SL, SplitFed), not every client at once."""
    return res.config.schedule != "parallel"


def served(res: RoundResult, group: int) -> int:
    """The client a one-at-a-time schedule step serves."""
    return res.trace.get("batch", group)[0].values["clients"][0]


def served_before(res: RoundResult, group: int) -> set[int]:
    """The clients whose turn came before schedule step ``group`` in this round."""
    return {e.values["clients"][0] for e in res.trace.get("batch") if e.step < group}


def schedule_note(res: RoundResult) -> str | None:
    """What a SplitFed walkthrough leaves out, in one line (None for the other schedules)."""
    if not splitfed(res):
        return None
    cfg = res.config
    batches = "one batch" if cfg.local_steps == 1 else f"{cfg.local_steps} batches"
    return (f"{algorithm_name(cfg)} serves the clients in turn, in an order drawn afresh every round: here "
            f"{batches} per client (local_steps = {cfg.local_steps}; the presets train 20), one server step each.")


def short_title(title: str) -> str:
    """A title without its phase number ('3. Smashed data up' -> 'Smashed data up'), for the progress bar."""
    parts = [t.partition(". ") for t in title.split(" · ")]
    return " · ".join(tail if sep and head.isdigit() else head + sep + tail for head, sep, tail in parts)


def step_title(step: Step, res: RoundResult) -> str:
    """'3. Smashed data up to the server'; Vanilla SL: 'Client 1 · 3. Smashed data up to the server';
    SplitFed with more than one batch per client: 'Client 1, batch 2 · 3. ...'."""
    title = PHASE_TITLES[step.phase]
    if one_at_a_time(res) and step.phase != "averaging" and step.event is not None:
        for many, one in (("Each client", "The client"), ("The clients'", "The client's"), ("updates", "update")):
            title = title.replace(many, one)
        batch = f", batch {step.group % res.config.local_steps + 1}" if res.config.local_steps > 1 else ""
        return f"Client {served(res, step.group)}{batch} · {title}"
    return title


# ---- words ---------------------------------------------------------------------------------------

def fmt_bytes(n: int) -> str:
    """Exact, as the ledger counts: '113,088 B'."""
    return f"{int(n):,} B"


def fmt_shape(shape) -> str:
    return " × ".join(str(int(s)) for s in shape)


def off_line(phase: str, res: RoundResult) -> str:
    """One line on a phase that did not run in this round: what its technique would add."""
    cfg = res.config
    if phase == "mixup":
        if cfg.mixup.enabled:
            return "③ is on with n_s = 0 partners: there is nothing to mix."
        return ("③ smashed-data mixup is off. With it, the server would also train on mixes of two clients' "
                "smashed data and labels (λ ~ Beta(α, β)): one more loss, L~, and not one byte more.")
    if phase == "grads_down":
        return ("② global-gradient backward is off. With it, the server would send each client the gradient of its "
                "loss at the cut layer: about as many bytes down as came up.")
    if phase == "local":
        return ("④ local loss is off. With it, each client would also train its lower model through a small "
                "auxiliary network of its own (InfoPro: rebuild the input), with no message from the server.")
    if phase == "client_update":
        return "The clients have nothing to learn from: without ② or ④ their lower models stay as they are."
    if sequential(res):
        return "⑤ does not apply to Vanilla SL: its clients already share one lower model, handed on."
    if cfg.averaging.enabled:
        interval = cfg.averaging.interval
        after = (res.round // interval + 1) * interval
        return (f"⑤ is on, every T_c = {interval} rounds: round {res.round} is not one of them (the next "
                f"averaging is at the end of round {after}).")
    return ("⑤ lower-model averaging is off. With it, every T_c rounds each client would upload its lower model "
            "and get back their average (FedAvg), so the clients' models stop drifting apart.")


def absent_line(key: tuple[float, int], res: RoundResult) -> str:
    """For a side-by-side column with no step at ``key`` (the other algorithm is Vanilla SL, or parallel)."""
    if sequential(res):
        return "Vanilla SL has no such step here: it serves one client at a time."
    if key[1] == RANK["handoff"]:
        return "No hand-off: every client keeps a lower model of its own."
    if splitfed(res):
        return f"No step here: {algorithm_name(res.config)} serves one client at a time."
    return "No step here: a parallel round serves every client at once (above)."


def purpose(step: Step, res: RoundResult) -> str:
    """Two or three sentences on what the step is for, with this round's numbers."""
    v, cfg = step.event.values, res.config
    k = len(v.get("clients", [])) or 1
    text = {
        "batch": lambda: (
            f"Each client draws a batch of b = {v['y'].shape[1]} images and their labels from its own data. "
            "The images never leave the client: that is the point of split learning."
            + (f" Vanilla SL serves one client at a time: now client {step.group}." if sequential(res) else "")
            + (f" {algorithm_name(cfg)} serves the clients in turn, in an order drawn for this round: now client "
               f"{served(res, step.group)}." if splitfed(res) else "")
            + absent_words(res)),
        "forward": lambda: (
            f"Each client runs its lower model (LeNet-5 up to block {cfg.cut_layer}) on its images. What comes out "
            f"at the cut layer, the smashed data ({fmt_shape(v['shape'])} numbers per image, a few channels shown), "
            "is all the server will ever see of them."),
        "upload": lambda: (
            f"The smashed data and the labels go up to the server: {fmt_bytes(v['bytes_per_client'])} per client, "
            f"{fmt_bytes(v['bytes'])} in all (the ledger's count). This upload, every round, is the price of "
            "never sending the data." + _defense_words(v, cfg)),
        "mixup": lambda: (
            f"The server mixes each client's smashed data with {counted(cfg.mixup.num_partners, 'partner')}: "
            "s~ = λ·s_i + (1 − λ)·s_j, and the labels the same way. Training on these mixes (the loss L~) shows "
            "the upper model combinations no single client holds; nothing more is sent."),
        "server": lambda: _server_words(v, cfg, served(res, step.group) if one_at_a_time(res) else None),
        "grads_down": lambda: _grads_words(v, k),
        "local": lambda: (
            f"Each client also learns from a loss of its own ({_LOCAL_KIND[v['kind']]}), through a small auxiliary "
            "network it keeps. It needs no message from the server, so the lower model learns even where the "
            "server's gradient is late or missing."),
        "client_update": lambda: (
            f"Each client takes one optimiser step on its lower model, from {_client_signal(cfg)}. The bars show "
            "how far each lower model moved (the L2 distance of its parameters)."),
        "averaging": lambda: (
            f"Every {_every(cfg.averaging.interval)} the lower models are averaged (FedAvg, weighted by data "
            f"size){' with the auxiliary networks' if cfg.local_loss.average_aux else ''}: each client uploads its "
            f"model and downloads the average, {fmt_bytes(v['bytes'])} in all. The clients' distance to their "
            f"average falls from {v['spread_before']:.4f} to {v['spread_after']:.1e}."
            + (" The server likewise replaces its upper model by the average of the clients' copies (no bytes: "
               "they are all on the server)." if cfg.schedule == "splitfed_v1" else "")),
        "handoff": lambda: (
            "Vanilla SL keeps a single lower model: " + (
                f"client {v['from']} hands it on to client {v['to']} ({fmt_bytes(v['bytes'])}), which trains it next."
                if v["to"] is not None else
                f"the last client, {v['from']}, hands it back for the next round ({fmt_bytes(v['bytes'])})."))
    }
    return text[step.phase]() + plugin_words(step.phase, cfg)


def plugin_words(phase: str, cfg: RunConfig) -> str:
    """What the techniques that bring their own settings (docs/extending.md) do in this step, if any."""
    lines = plugin_lines(cfg, phase)
    return "".join(f" Also in this step, {line}." for line in lines)


def absent_words(res: RoundResult) -> str:
    """' Absent this round: client 1 (not drawn ...), ...' for a round some clients miss ('' when none does)."""
    if not res.absent:
        return ""
    return (" Absent this round, greyed: " + "; ".join(f"client {i}, {why}" for i, why in sorted(res.absent.items()))
            + ". An absent client neither sends nor receives, and its lower model waits.")


def defense_lines(v: dict, cfg: RunConfig) -> list[str]:
    """The defenses on the smashed data, one line each: the engine's own (the upload's ``defenses``), else
    the config's in words; empty when no defense is on."""
    lines = [str(line) for line in v.get("defenses") or []]
    if lines or not defenses(cfg.model_dump()):
        return lines
    return [part.strip() for part in defense_words(cfg.model_dump()).split(", ")]


def received_changes(v: dict, forward: dict | None) -> bool | None:
    """Whether what the server receives differs from the smashed data computed (None: the round did not record
    what the server receives)."""
    if v.get("received") is None or forward is None:
        return None
    raw, got = as_numpy(forward["smashed"]), as_numpy(v["received"])
    return raw.shape != got.shape or not np.array_equal(raw, got)


def received_snr_db(v: dict, forward: dict) -> float:
    """How far what the server receives is from the smashed data computed, as a signal-to-noise ratio:
    10·log10(mean s² / mean (r − s)²) in dB (infinite when they are equal)."""
    raw, got = as_numpy(forward["smashed"]).astype(np.float64), as_numpy(v["received"]).astype(np.float64).reshape(
        as_numpy(forward["smashed"]).shape)
    noise = float(np.mean((got - raw) ** 2))
    return math.inf if noise == 0 else 10 * math.log10(float(np.mean(raw ** 2)) / noise)


def _defense_words(v: dict, cfg: RunConfig) -> str:
    lines = defense_lines(v, cfg)
    if not lines:
        return ""
    return (" Before it leaves the client, the smashed data pass through its defense" + ("s" if len(lines) > 1 else "")
            + f": {'; '.join(lines)}. What the server receives, and trains its upper model on, is shown below.")


KIND_NAMES = {"infopro": "InfoPro", "classifier": "local classifier", "norm": "norm penalty"}
_LOCAL_KIND = {"infopro": "InfoPro: a decoder rebuilds the input from the smashed data",
               "classifier": "a small classifier on the smashed data", "norm": "a norm penalty"}


def _server_words(v: dict, cfg: RunConfig, client: int | None) -> str:
    mixup = " plus L~ on the mixes" if cfg.mixup.enabled else ""
    lr = (f"η_s = η·n^α = {v['server_lr']:.4g} (SplitLr: larger than the clients' η = {v['lr']:.4g}, since the "
          "server learns from n clients' data at once)" if v["server_lr"] != v["lr"] else f"η = {v['lr']:.4g}")
    data = "all the smashed data it received" if client is None else f"client {client}'s smashed data"
    model = "the upper model"
    if cfg.schedule == "splitfed_v1":
        model = (f"client {client}'s copy of the upper model (SplitFed V1: a copy per client, each starting the "
                 "round from the global upper model and averaged at its end)")
    elif cfg.schedule == "splitfed_v2":
        model = "the one upper model (SplitFed V2: every client's batches, one after another, train it)"
    fresh = " The authors' code re-creates the server's optimiser before every batch." \
        if cfg.reset_optimizers else ""
    return (f"The server runs its upper model on {data} and computes the loss L{mixup}. "
            f"It takes one step on {model} with learning rate {lr}.{fresh}")


def counted(count: int, word: str) -> str:
    """"1 message", "3 messages"."""
    return f"{count} {word}{'' if count == 1 else 's'}"


def _every(interval: int) -> str:
    """"round (T_c = 1)", "5 rounds (T_c = 5)"."""
    return f"{'round' if interval == 1 else f'{interval} rounds'} (T_c = {interval})"


def _grads_words(v: dict, k: int) -> str:
    text = (f"The gradient of each client's loss with respect to its smashed data goes back down: "
            f"{counted(v['messages'], 'message')}, {fmt_bytes(v['bytes'])}. Each client backpropagates it through its "
            "lower model.")
    if v.get("active"):
        text += (f" SplitAvg: {len(v['active'])} of the {k} clients get the average of their gradients, sent once "
                 "as a broadcast; the others get their own.")
    return text


def _client_signal(cfg: RunConfig) -> str:
    parts = (["the server's cut-layer gradient (②)"] if cfg.global_backward else []) + (
        ["its local loss (④)"] if cfg.local_loss.enabled else [])
    return " and ".join(parts)


def shapes(step: Step) -> list[str]:
    """The tensors of a step and their shapes, in words: 'x: 3 × 8 × 1 × 28 × 28 (clients × batch × ...)'."""
    v = step.event.values
    if step.phase == "batch":
        return [f"x: {fmt_shape(v['x'].shape)} (clients × batch × channels × height × width)",
                f"y: {fmt_shape(v['y'].shape)} (clients × batch: class labels)"]
    if step.phase == "forward":
        return [f"smashed data s: {fmt_shape(v['smashed'].shape)} (clients × batch × one image's smashed data)",
                f"one image's smashed data: {fmt_shape(v['shape'])} = {int(np.prod(v['shape'])):,} numbers"]
    if step.phase == "mixup":
        return [f"mixed smashed data: {fmt_shape(v['mixed'].shape)} (pairs × first samples × one sample's smashed data)",
                f"mixed labels: {fmt_shape(v['mixed_labels'].shape)} (pairs × first samples × classes)"]
    if step.phase == "local":
        recons = v["reconstructions"]
        return [f"inputs: {fmt_shape(v['inputs'].shape)} (clients × first samples × channels × height × width)"] + (
            [f"reconstructions: {fmt_shape(recons.shape)}"] if recons is not None else [])
    return []


def as_numpy(t) -> np.ndarray:
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)
