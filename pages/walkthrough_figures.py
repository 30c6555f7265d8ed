"""The round walkthrough's steps, words and pictures, built from a traced round (:mod:`engine.trace`).
Pure (no Streamlit): the diagram of clients and server is an SVG string, the tensors are RGB arrays
(the InfoPro page's helpers), the numbers per client are plotly bar charts.

A *step* is one phase of one schedule step: a parallel round has one schedule step serving every
client, so its steps are the nine phases; Vanilla SL serves one client at a time and hands the
lower model on, so its steps repeat per client; SplitFed V1 and V2 serve the clients in turn, in
an order drawn each round, and repeat the steps for every batch (one batch per client here). A
phase whose technique is off is still a step, shown greyed, with one line on what the technique
would add.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

import numpy as np
import plotly.graph_objects as go
from PIL import Image, ImageDraw

from engine.config import SPLITFED_SCHEDULES, RunConfig, deep_merge, validate_config
from engine.presets import PRESETS, PROFILES, techniques_to_config
from engine.techniques import plugin_lines
from engine.trace import PHASE_TITLES, PHASES, RoundResult, TraceEvent
from pages.figures import BYTE_COLORS, PALETTE, TEMPLATE, defense_label, defense_strength, defense_words, defenses
from pages.images import FONT_PX, GAP_PX, _font, channel_to_rgb, to_rgb

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


def defense_override(choice: str) -> dict:
    """A :data:`DEFENSE_CHOICES` key as config overrides: 'noise:0.5' -> {'defense': {'noise': 0.5}}; '' -> {}."""
    if not choice:
        return {}
    kind, _, value = choice.partition(":")
    return {"defense": {kind: int(value) if kind == "bits" else float(value)}}


def walkthrough_config(algorithm: str, num_clients: int, dataset: str, seed: int = 0, defense: str = "") -> RunConfig:
    """The demo profile with ``algorithm`` (a preset name, or technique codes such as '1,2,3'), n clients,
    b = 8, ``dataset`` and ``defense`` (a :data:`DEFENSE_CHOICES` key), judged by the engine's own validation
    (a ConfigError says what is wrong). A SplitFed round is walked through with one batch per client
    (``WALK_LOCAL_STEPS``): the others repeat the same steps."""
    overrides = PRESETS[algorithm].overrides() if algorithm in PRESETS else techniques_to_config(algorithm)
    raw = deep_merge(deep_merge(PROFILES["demo"], overrides), {
        "name": "walkthrough", "num_clients": int(num_clients), "batch_size": BATCH_SIZE, "seed": int(seed),
        "data": {"dataset": dataset}, **defense_override(defense)})
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
               f"{served(res, step.group)}." if splitfed(res) else "")),
        "forward": lambda: (
            f"Each client runs its lower model (LeNet-5 up to block {cfg.cut_layer}) on its images. What comes out "
            f"at the cut layer, the smashed data ({fmt_shape(v['shape'])} numbers per image, a few channels shown), "
            "is all the server will ever see of them."),
        "upload": lambda: (
            f"The smashed data and the labels go up to the server: {fmt_bytes(v['bytes_per_client'])} per client, "
            f"{fmt_bytes(v['bytes'])} in all (the ledger's count). This upload, every round, is the price of "
            "never sending the data." + _defense_words(v, cfg)),
        "mixup": lambda: (
            f"The server mixes each client's smashed data with {_count(cfg.mixup.num_partners, 'partner')}: "
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
    raw, got = _np(forward["smashed"]), _np(v["received"])
    return raw.shape != got.shape or not np.array_equal(raw, got)


def received_snr_db(v: dict, forward: dict) -> float:
    """How far what the server receives is from the smashed data computed, as a signal-to-noise ratio:
    10·log10(mean s² / mean (r − s)²) in dB (infinite when they are equal)."""
    raw, got = _np(forward["smashed"]).astype(np.float64), _np(v["received"]).astype(np.float64).reshape(
        _np(forward["smashed"]).shape)
    noise = float(np.mean((got - raw) ** 2))
    return math.inf if noise == 0 else 10 * math.log10(float(np.mean(raw ** 2)) / noise)


def _defense_words(v: dict, cfg: RunConfig) -> str:
    lines = defense_lines(v, cfg)
    if not lines:
        return ""
    return (" Before it leaves the client, the smashed data pass through its defense" + ("s" if len(lines) > 1 else "")
            + f": {'; '.join(lines)}. What the server receives, and trains its upper model on, is shown below.")


_KIND_NAMES = {"infopro": "InfoPro", "classifier": "local classifier", "norm": "norm penalty"}
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


def _count(count: int, word: str) -> str:
    """"1 message", "3 messages"."""
    return f"{count} {word}{'' if count == 1 else 's'}"


def _every(interval: int) -> str:
    """"round (T_c = 1)", "5 rounds (T_c = 5)"."""
    return f"{'round' if interval == 1 else f'{interval} rounds'} (T_c = {interval})"


def _grads_words(v: dict, k: int) -> str:
    text = (f"The gradient of each client's loss with respect to its smashed data goes back down: "
            f"{_count(v['messages'], 'message')}, {fmt_bytes(v['bytes'])}. Each client backpropagates it through its "
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


# ---- the diagram ---------------------------------------------------------------------------------

GREY, FAINT, DIM_TEXT, TEXT = "#BDBDBD", "#E3E3E3", "#9E9E9E", "#222222"
PHASE_COLORS = {"batch": PALETTE[5], "forward": PALETTE[0], "upload": BYTE_COLORS["bytes_smashed_up"],
                "mixup": PALETTE[3], "server": PALETTE[3], "grads_down": BYTE_COLORS["bytes_grads_down"],
                "local": PALETTE[2], "client_update": PALETTE[4], "averaging": BYTE_COLORS["bytes_model_up"],
                "handoff": BYTE_COLORS["bytes_model_up"]}


@dataclass(frozen=True)
class Layout:
    """Where the boxes go, and how large the text is (in the SVG's own units). WIDE for one algorithm;
    NARROW (no data boxes) for a column of a side-by-side view, so that its text stays as large on screen.
    The PROJECTOR layouts have larger text (at least ``min_font``), taller client boxes and a smaller
    headline band, so that eight clients side by side fit a 1280 x 720 screen with no text under 14 px."""

    width: int
    data_w: int      # 0: no data boxes
    client_x: int
    client_w: int
    server_x: int
    server_w: int
    top: int = 40    # room for the headline
    pitch: int = 50  # one client row
    box_h: int = 36  # a client's box
    font: float = 1.0  # text sizes are the normal ones times this ...
    min_font: int = 0  # ... and at least this

    @property
    def link_x(self) -> tuple[int, int]:
        return self.client_x + self.client_w, self.server_x

    def px(self, size: float) -> int:
        """A text size of the normal layouts, in this layout."""
        return round(max(size * self.font, self.min_font))

    def row_y(self, i: int) -> float:
        return self.top + i * self.pitch + self.pitch / 2

    def height(self, n: int) -> int:
        return max(self.top + n * self.pitch + 12, 180)


WIDE = Layout(width=760, data_w=52, client_x=78, client_w=180, server_x=540, server_w=210)
NARROW = Layout(width=540, data_w=0, client_x=6, client_w=156, server_x=350, server_w=184)
PROJECTOR_WIDE = Layout(width=680, data_w=52, client_x=76, client_w=200, server_x=456, server_w=214,
                        top=36, pitch=50, box_h=44, font=1.15, min_font=14)
PROJECTOR_NARROW = Layout(width=580, data_w=0, client_x=4, client_w=196, server_x=362, server_w=214,
                          top=36, pitch=50, box_h=44, font=1.15, min_font=14)
CHAR_EM = 0.6  # a generous width of one character of sans-serif text, in ems (bold included)


def _text(x: float, y: float, text: str, size: int = 13, color: str = TEXT, anchor: str = "middle",
          weight: str = "normal") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{color}" text-anchor="{anchor}" '
            f'font-weight="{weight}" dominant-baseline="middle">{escape(text)}</text>')


def _fitting(text: str, size: int, room: float, smallest: int) -> int:
    """``size``, or smaller (down to ``smallest``) when ``text`` would run wider than ``room``."""
    return max(min(size, math.floor(room / (CHAR_EM * max(len(text), 1)))), smallest)


def _box(x: float, y: float, w: float, h: float, stroke: str, fill: str, dashed: bool = False, width: float = 1.5) -> str:
    dash = ' stroke-dasharray="5 4"' if dashed else ""
    return (f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="7" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="{width}"{dash}/>')


def _head(x: float, y: float, dx: float, dy: float, color: str, size: float) -> str:
    """An arrowhead at (x, y) pointing along (dx, dy)."""
    norm = math.hypot(dx, dy) or 1.0
    ux, uy = dx / norm, dy / norm
    bx, by = x - ux * size, y - uy * size
    pts = [(x, y), (bx - uy * size * 0.5, by + ux * size * 0.5), (bx + uy * size * 0.5, by - ux * size * 0.5)]
    return f'<polygon points="{" ".join(f"{px:.1f},{py:.1f}" for px, py in pts)}" fill="{color}"/>'


def _arrow(x1: float, y1: float, x2: float, y2: float, color: str, width: float = 1.5, dashed: bool = False,
           both: bool = False) -> str:
    size = 6 + 2 * width
    dash = ' stroke-dasharray="7 5"' if dashed else ""
    norm = math.hypot(x2 - x1, y2 - y1) or 1.0
    ux, uy = (x2 - x1) / norm, (y2 - y1) / norm
    sx, sy = (x1 + ux * size, y1 + uy * size) if both else (x1, y1)
    line = (f'<line x1="{sx:.1f}" y1="{sy:.1f}" x2="{x2 - ux * size:.1f}" y2="{y2 - uy * size:.1f}" '
            f'stroke="{color}" stroke-width="{width}"{dash}/>')
    heads = _head(x2, y2, x2 - x1, y2 - y1, color, size) + (_head(x1, y1, x1 - x2, y1 - y2, color, size) if both else "")
    return line + heads


def _label(x: float, y: float, text: str, color: str, layout: Layout) -> str:
    """A label on a white pill, so it reads over the lines beneath."""
    size = layout.px(12)
    w, h = CHAR_EM * size * len(text) + 12, size + 8
    return (f'<rect x="{x - w / 2:.1f}" y="{y - h / 2:.1f}" width="{w:.1f}" height="{h}" rx="{h / 2}" fill="white" '
            f'stroke="{color}" stroke-width="1"/>' + _text(x, y + 0.5, text, size, color, weight="bold"))


@dataclass
class _Look:
    """What a step highlights: the arrows by kind (client position -> label), the boxes and their second lines."""

    color: str
    headline: str
    up: dict[int, str]
    down: dict[int, str]
    models: dict[int, str]
    data: set[int]
    clients: dict[int, str]   # highlighted clients -> their second line
    server: list[str]         # the server's extra lines; non-empty highlights it
    handoff: tuple[int, int, str] | None = None


def diagram_svg(step: Step | None, res: RoundResult, layout: Layout = WIDE) -> str:
    """Clients (with their data) on the left, the server on the right, arrows for what moves. The arrows
    and boxes of this step are drawn in its colour with their byte counts; the rest stays faint. A step
    that did not run (or ``None``: no such step) is drawn all grey."""
    n = res.config.num_clients
    height = layout.height(n)
    look = _look(step, res) if step is not None and step.event is not None else None
    headline = look.headline if look else _off_headline(step)
    size = _fitting(headline, layout.px(15), layout.width - 8, layout.px(12))
    parts = [_text(layout.width / 2, layout.top / 2, headline, size, look.color if look else DIM_TEXT, weight="bold")]
    parts += _server(n, look, layout)
    for i in range(n):
        parts += _client_row(i, step, res, look, layout)
    if look and look.handoff:
        parts += _handoff_arrow(*look.handoff, look.color, layout)
    label = escape(f"{step_title(step, res) if step else 'No step here'}: "
                   f"{look.headline if look else _off_headline(step)}")
    state = 'class="wt-off" opacity="0.75"' if look is None else 'class="wt-on"'
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {layout.width} {height}" width="100%" '
            f'style="max-width:{round(layout.width * 1.35)}px;font-family:sans-serif" role="img" '
            f'aria-label="{label}" {state}>' + "".join(parts) + "</svg>")


def _off_headline(step: Step | None) -> str:
    if step is None:
        return "no such step in this algorithm"
    code = TECHNIQUE_OF.get(step.phase)
    return f"{code} is not part of this round" if code else "nothing happens in this step"


def _server(n: int, look: _Look | None, layout: Layout) -> list[str]:
    y0, h = layout.top + 4, n * layout.pitch - 8
    on = look is not None and bool(look.server)
    stroke, fill = (look.color, "#FFF5F5") if on else (GREY, "#FAFAFA")
    lines = ["server", "upper model", *(look.server if on else [])]
    line_h = layout.px(12) * 1.5
    top = y0 + h / 2 - (len(lines) - 1) * line_h / 2
    x = layout.server_x + layout.server_w / 2
    return [_box(layout.server_x, y0, layout.server_w, h, stroke, fill, width=3 if on else 1.5)] + [
        _text(x, top + j * line_h, line, layout.px(14 if j == 0 else 12),
              TEXT if (on or j < 2) and look is not None else DIM_TEXT, weight="bold" if j == 0 else "normal")
        for j, line in enumerate(lines)]


def _client_row(i: int, step: Step | None, res: RoundResult, look: _Look | None, layout: Layout) -> list[str]:
    y = layout.row_y(i)
    served_now = look is not None and (not one_at_a_time(res) or served(res, step.group) == i
                                       or step.phase == "averaging")
    on = look is not None and (i in look.clients or i in look.data)
    color = look.color if on else GREY
    second = look.clients.get(i, "") if on else ("" if served_now or look is None else _waiting(i, step, res))
    x, first, small = layout.client_x, layout.px(13), layout.px(11)
    parts = _data_box(i, y, look, layout) + [
        _box(x, y - layout.box_h / 2, layout.client_w, layout.box_h, color, "#F4F8FF" if on else "white",
             dashed=look is not None and not served_now, width=3 if on else 1.5),
        _text(x + 10, y - (small * 0.65 if second else 0), f"client {i}", first,
              TEXT if served_now or on else DIM_TEXT, "start", "bold"),
        _text(x + 10, y + first * 0.7, second, small, TEXT if on else DIM_TEXT, "start") if second else ""]
    return parts + _links(i, y, look, layout)


def _data_box(i: int, y: float, look: _Look | None, layout: Layout) -> list[str]:
    """The client's own data, left of it (WIDE only): lit when the client draws its batch."""
    if not layout.data_w:
        return []
    lit = look is not None and i in look.data
    left = layout.client_x - layout.data_w - 18
    return [_box(left, y - layout.box_h / 2 + 4, layout.data_w, layout.box_h - 8, look.color if lit else GREY,
                 "white", width=2.5 if lit else 1),
            _text(left + layout.data_w / 2, y, "data", layout.px(11), TEXT if lit else DIM_TEXT),
            _arrow(left + layout.data_w, y, layout.client_x, y, look.color if lit else FAINT, 2.5 if lit else 1.2)]


def _waiting(i: int, step: Step, res: RoundResult) -> str:
    if splitfed(res):
        return "done this round" if i in served_before(res, step.group) else "waits its turn"
    return "done, model handed on" if i < step.group else "waits for the model"


def _links(i: int, y: float, look: _Look | None, layout: Layout) -> list[str]:
    """The client's links to the server: smashed data up (above), gradients down (below), models (middle)."""
    (x1, x2), parts, d = layout.link_x, [], layout.pitch * 0.18
    up, down, model = (look.up.get(i), look.down.get(i), look.models.get(i)) if look else (None, None, None)
    parts.append(_arrow(x1, y - d, x2, y - d, look.color if up else FAINT, 3 if up else 1.2))
    parts.append(_arrow(x2, y + d, x1, y + d, look.color if down else FAINT, 3 if down else 1.2))
    if model:
        parts.append(_arrow(x1, y, x2, y, look.color, 3, dashed=True, both=True))
    for text, dy in ((up, -d), (down, d), (model, 0)):
        if text:
            parts.append(_label((x1 + x2) / 2, y + dy, text, look.color, layout))
    return parts


def _handoff_arrow(src: int, dst: int, text: str, color: str, layout: Layout) -> list[str]:
    x = layout.client_x + layout.client_w
    y1, y2 = layout.row_y(src) + 6, layout.row_y(dst) - 6 if dst > src else layout.row_y(dst) + 6
    bend = x + 50 + 8 * abs(dst - src)
    path = (f'<path d="M {x:.1f} {y1:.1f} C {bend:.1f} {y1:.1f}, {bend:.1f} {y2:.1f}, {x + 10:.1f} {y2:.1f}" '
            f'fill="none" stroke="{color}" stroke-width="3"/>')
    return [path, _head(x, y2, -1, 0, color, 12), _label(bend + 50, (y1 + y2) / 2, text, color, layout)]


def _look(step: Step, res: RoundResult) -> _Look:
    v, n = step.event.values, res.config.num_clients
    one = one_at_a_time(res) and step.phase != "averaging"  # a step of one client: the server's too
    clients = v.get("clients", [served(res, step.group)] if one else list(range(n)))
    color = PHASE_COLORS[step.phase]
    def each(text: str) -> dict[int, str]:
        return dict.fromkeys(clients, text)

    look = _Look(color, PHASE_TITLES[step.phase].split(". ", 1)[-1], {}, {}, {}, set(), {}, [])
    builder = _LOOKS.get(step.phase)
    if builder is not None:
        builder(look, v, clients, each, res)
    return look


def _look_batch(look, v, clients, each, res):
    look.headline = f"each client draws b = {v['y'].shape[1]} images with their labels"
    look.data = set(clients)
    look.clients = each(f"x: {fmt_shape(v['x'].shape[2:])} ({v['x'].shape[1]} images)")


def _look_forward(look, v, clients, each, res):
    look.headline = f"lower model → smashed data s: {fmt_shape(v['shape'])} per image"
    look.clients = each(f"s: {fmt_shape(v['smashed'].shape[1:])}")


def _look_upload(look, v, clients, each, res):
    look.headline = f"smashed data up: {len(clients)} × {fmt_bytes(v['bytes_per_client'])} = {fmt_bytes(v['bytes'])}"
    look.up = each(fmt_bytes(v["bytes_per_client"]))
    look.server = [f"receives {fmt_bytes(v['bytes'])}"]
    shown = defense_label(res.config.model_dump())
    if shown != "none":  # the defense the clients applied before the upload
        look.server.append(f"after {shown}")
        look.clients = each(f"defense: {defense_strength(res.config.model_dump())}")


def _look_mixup(look, v, clients, each, res):
    lam = np.asarray(v["lam"]).reshape(len(v["first"]), -1)[:, 0]
    pairs = [f"{clients[a]}+{clients[b]}: λ={x:.2f}" for a, b, x in zip(v["first"], v["second"], lam)]
    shown = pairs[:4] + ([f"… {len(pairs) - 4} more pairs"] if len(pairs) > 4 else [])
    look.headline = f"the server mixes {len(pairs)} pairs of smashed data (no bytes sent)"
    look.server = ["mixes pairs (clients a+b):", *shown]


def _look_server(look, v, clients, each, res):
    look.headline = "the server's loss and one step on the upper model"
    lr = f"η_s = {v['server_lr']:.4g}" + (" (SplitLr)" if v["server_lr"] != v["lr"] else "")
    look.server = [f"L = {v['loss']:.4f}"] + ([f"L~ = {v['mixup']:.4f}"] if res.config.mixup.enabled else []) + [lr]
    if res.config.schedule == "splitfed_v1":
        look.headline = f"the server's loss and one step on client {clients[0]}'s copy of the upper model"
        look.server.insert(0, f"copy for client {clients[0]}")


def _look_grads(look, v, clients, each, res):
    per = v["bytes"] // max(v["messages"], 1)
    active = set(v.get("active") or [])
    look.headline = f"cut-layer gradients down: {_count(v['messages'], 'message')}, {fmt_bytes(v['bytes'])}"
    look.down = {c: ("averaged, broadcast" if j in active else fmt_bytes(per)) for j, c in enumerate(clients)}
    look.server = ["sends dL/ds to each client"]
    look.clients = {c: f"|g| = {norm:.2e}" for c, norm in zip(clients, v["norms"])}


def _look_local(look, v, clients, each, res):
    look.headline = f"each client's own loss ({_KIND_NAMES.get(v['kind'], v['kind'])}), no message sent"
    look.clients = {c: f"local loss {loss:.4f}" for c, loss in zip(clients, v["losses"])}


def _look_update(look, v, clients, each, res):
    look.headline = "each client steps its lower model"
    look.clients = {c: f"moved {d:.2e}" for c, d in zip(clients, v["moved"])}


def _look_averaging(look, v, clients, each, res):
    n = res.config.num_clients
    look.headline = f"lower models averaged: {fmt_bytes(v['bytes'])} up and down"
    look.models = {c: fmt_bytes(v["bytes"] // (2 * n)) + " each way" for c in range(n)}
    look.server = ["averages the lower models", f"spread {v['spread_before']:.2e} → {v['spread_after']:.1e}"]
    if res.config.schedule == "splitfed_v1":
        look.server.append("and its upper-model copies")
    look.clients = {c: f"to average: {d:.2e}" for c, d in enumerate(v["distances_before"])}


def _look_handoff(look, v, clients, each, res):
    dst = v["to"] if v["to"] is not None else 0
    look.headline = (f"client {v['from']} hands the lower model to client {dst}" if v["to"] is not None else
                     f"client {v['from']} hands the lower model back for the next round")
    look.handoff = (v["from"], dst, f"w_c: {fmt_bytes(v['bytes'])}")
    look.clients = {v["from"]: "hands the model on", dst: "gets the model"}


_LOOKS = {"batch": _look_batch, "forward": _look_forward, "upload": _look_upload, "mixup": _look_mixup,
          "server": _look_server, "grads_down": _look_grads, "local": _look_local, "client_update": _look_update,
          "averaging": _look_averaging, "handoff": _look_handoff}


# ---- tensors as pictures -------------------------------------------------------------------------

TILE_PX = 84          # 28 x 28 images shown 3x (digits' are 28 x 28 too, resized by the loader)
ROW_LABEL_PX = 92
HEADER_PX = 26
CAPTION_PX = 34       # two lines under a tile
MIN_COLUMN_PX = 96    # wide enough for 'T-shirt/top' under a tile


@dataclass
class PictureRow:
    label: str                      # on the left, one or two lines (ASCII: the picture's font has no Greek)
    tiles: list[np.ndarray]         # uint8 [H, W, 3], any size: each is scaled to the tile
    captions: list[str] | None = None


def picture_grid(rows: list[PictureRow], columns: list[str], tile_px: int = TILE_PX) -> np.ndarray:
    """Rows of tiles under column titles, a label left of each row, an optional caption under each tile."""
    captions = any(r.captions for r in rows)
    col_w = max(tile_px, MIN_COLUMN_PX) if captions else tile_px
    row_h = tile_px + (CAPTION_PX if captions else 0) + GAP_PX
    ncols = max(len(columns), *(len(r.tiles) for r in rows))
    canvas = Image.new("RGB", (ROW_LABEL_PX + ncols * (col_w + GAP_PX), HEADER_PX + len(rows) * row_h), "white")
    draw, font = ImageDraw.Draw(canvas), _font(FONT_PX - 2)
    for c, title in enumerate(columns):
        draw.text((ROW_LABEL_PX + c * (col_w + GAP_PX) + col_w // 2, HEADER_PX // 2), title, fill="black",
                  font=font, anchor="mm")
    for r, row in enumerate(rows):
        top = HEADER_PX + r * row_h
        draw.multiline_text((ROW_LABEL_PX // 2, top + tile_px // 2), row.label, fill="black", font=font,
                            anchor="mm", align="center")
        for c, tile in enumerate(row.tiles):
            left = ROW_LABEL_PX + c * (col_w + GAP_PX)
            canvas.paste(Image.fromarray(tile).resize((tile_px, tile_px), Image.NEAREST),
                         (left + (col_w - tile_px) // 2, top))
            if row.captions and c < len(row.captions) and row.captions[c]:
                draw.multiline_text((left + col_w // 2, top + tile_px + CAPTION_PX // 2), row.captions[c],
                                    fill="black", font=font, anchor="mm", align="center")
    return np.asarray(canvas)


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)


def class_name(classes: tuple[str, ...] | None, y: int) -> str:
    return classes[y] if classes and 0 <= y < len(classes) else str(y)


def batch_picture(v: dict, classes: tuple[str, ...] | None, samples: int = BATCH_SIZE) -> np.ndarray:
    """Each client's batch: one row per client, its images with their class under each."""
    x, y = _np(v["x"]), _np(v["y"])
    m = min(samples, x.shape[1])
    rows = [PictureRow(f"client {c}", [to_rgb(x[j, s]) for s in range(m)],
                       [class_name(classes, int(y[j, s])) for s in range(m)]) for j, c in enumerate(v["clients"])]
    return picture_grid(rows, [f"image {s + 1}" for s in range(m)])


def busiest_channels(smashed: np.ndarray, count: int) -> list[int]:
    """The ``count`` channels of smashed data [..., C, h, w] that vary most over the images shown, in
    channel order: with fresh models many channels are all zero after the ReLU, and show nothing."""
    spread = smashed.reshape(-1, *smashed.shape[-3:]).std(axis=(-2, -1)).mean(0)
    return sorted(np.argsort(-spread, kind="stable")[:count].tolist())


def smashed_picture(batch: dict, forward: dict, channels: int = 4) -> np.ndarray:
    """Each client's first image and the busiest channels of its smashed data (each scaled to its own range)."""
    x, s = _np(batch["x"]), _np(forward["smashed"])
    size = x.shape[-2:]
    shown = busiest_channels(s[:, 0], channels) if s.ndim == 5 else []
    rows = [PictureRow(f"client {c}\nimage 1", [to_rgb(x[j, 0])] + [channel_to_rgb(s[j, 0, ch], size)
                                                                    for ch in shown])
            for j, c in enumerate(forward["clients"])]
    return picture_grid(rows, ["input"] + [f"channel {ch + 1}" for ch in shown])


def shared_range_rgb(channel: np.ndarray, lo: float, hi: float, size: tuple[int, int]) -> np.ndarray:
    """One channel [h, w] scaled by the range [lo, hi] (values outside are clipped), resized -> uint8 [H, W, 3]:
    the raw and the received channel on one scale, so that noise shows as noise and levels as steps."""
    norm = np.clip((channel - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(channel)
    img = Image.fromarray((norm * 255).astype(np.uint8)).resize(size[::-1], Image.NEAREST)
    return np.repeat(np.asarray(img)[..., None], 3, axis=2)


def received_picture(batch: dict, forward: dict, upload: dict, channels: int = 2) -> np.ndarray:
    """What the server receives beside what the client computed: each client's first image, then for its
    busiest channels the smashed data as computed and as received, both on the computed channel's range."""
    x, s = _np(batch["x"]), _np(forward["smashed"])
    r = _np(upload["received"]).reshape(s.shape)
    size = x.shape[-2:]
    flat = s.ndim != 5  # a cut after a fully connected block: the vector drawn as one row
    shown = [0] if flat else busiest_channels(s[:, 0], channels)

    def pick(a: np.ndarray, ch: int) -> np.ndarray:
        return a.reshape(1, -1) if flat else a[ch]

    names = ["all values" if flat else f"channel {ch + 1}" for ch in shown]
    rows = []
    for j, c in enumerate(forward["clients"]):
        tiles = [to_rgb(x[j, 0])]
        for ch in shown:
            raw = pick(s[j, 0], ch)
            lo, hi = float(raw.min()), float(raw.max())
            tiles += [shared_range_rgb(raw, lo, hi, size), shared_range_rgb(pick(r[j, 0], ch), lo, hi, size)]
        rows.append(PictureRow(f"client {c}\nimage 1", tiles, [""] + [n for n in names for _ in range(2)]))
    return picture_grid(rows, ["input"] + ["computed", "received"] * len(shown))


def label_bars(probs: np.ndarray, size: int = 56) -> np.ndarray:
    """A soft label as a tiny bar chart (one bar per class) on white."""
    k = len(probs)
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    bar = size / k
    for c, p in enumerate(probs):
        if p > 1e-3:
            draw.rectangle((c * bar + 0.5, size - 3 - p * (size - 6), (c + 1) * bar - 0.5, size - 3), fill=PALETTE[3])
    draw.line((0, size - 2, size, size - 2), fill="black")
    return np.asarray(img)


def _top_two(probs: np.ndarray, classes) -> str:
    order = np.argsort(-probs)[:2]
    return "\n".join(f"{probs[c]:.2f} {class_name(classes, int(c))}" for c in order if probs[c] > 1e-3)


def mixup_picture(batch: dict, forward: dict, mix: dict, classes, max_pairs: int = 6,
                  compact: bool = False) -> np.ndarray:
    """One row per mixed pair (sample 1): both clients' images (and, unless ``compact``, their busiest
    channel), the mix in that channel, and its soft label."""
    x, y, s = _np(batch["x"]), _np(batch["y"]), _np(forward["smashed"])
    mixed, labels = _np(mix["mixed"]), _np(mix["mixed_labels"])
    lam = np.asarray(mix["lam"]).reshape(len(mix["first"]), -1)[:, 0]
    size = x.shape[-2:]
    ch = busiest_channels(s[:, 0], 1)[0] if s.ndim == 5 else 0
    channel = (lambda a: channel_to_rgb(a[ch], size)) if s.ndim == 5 else (lambda a: channel_to_rgb(a.reshape(1, -1), size))
    rows = []
    for p, (a, b) in enumerate(zip(mix["first"][:max_pairs], mix["second"][:max_pairs])):
        ca, cb = forward["clients"][a], forward["clients"][b]
        sides = [(to_rgb(x[j, 0]), class_name(classes, int(y[j, 0])), channel(s[j, 0])) for j in (a, b)]
        tiles = [t for image, _, chan in sides for t in ([image] if compact else [image, chan])]
        caps = [c for _, name, _ in sides for c in ([name] if compact else [name, ""])]
        rows.append(PictureRow(f"clients\n{ca} + {cb}", tiles + [channel(mixed[p, 0]), label_bars(labels[p, 0])],
                               caps + [f"lam {lam[p]:.2f}", _top_two(labels[p, 0], classes)]))
    sides = ["a: image", "b: image"] if compact else ["a: image", f"a: channel {ch + 1}", "b: image",
                                                      f"b: channel {ch + 1}"]
    return picture_grid(rows, sides + [f"mix: ch. {ch + 1}", "mixed label"])


def local_picture(v: dict, samples: int = 3) -> np.ndarray | None:
    """InfoPro: each client's inputs beside its decoder's reconstructions (None for other local losses)."""
    if v["reconstructions"] is None:
        return None
    x, r = _np(v["inputs"]), _np(v["reconstructions"])
    m = min(samples, x.shape[1])
    rows = [PictureRow(f"client {c}\nloss {loss:.3f}", [t for s in range(m) for t in (to_rgb(x[j, s]), to_rgb(r[j, s]))])
            for j, (c, loss) in enumerate(zip(v["clients"], v["losses"]))]
    return picture_grid(rows, [t for s in range(m) for t in (f"input {s + 1}", f"rebuilt {s + 1}")])


# ---- numbers per client as bars ------------------------------------------------------------------

CHART_FONT_PX = 12      # the bar charts' tick labels; their titles are 2 px larger
PROJECTOR_CHART_FONT_PX = 15


def client_bars(clients: list[int], series: dict[str, list[float]], title: str, yaxis: str,
                colors: tuple[str, ...] = PALETTE, height: int = 260, font_px: int = CHART_FONT_PX) -> go.Figure:
    """Grouped bars, one group per client (a small chart: norms, distances, how far a model moved)."""
    fig = go.Figure()
    for j, (name, values) in enumerate(series.items()):
        fig.add_trace(go.Bar(x=[f"client {c}" for c in clients], y=list(values), name=name,
                             marker={"color": colors[j % len(colors)]}, hovertemplate="%{y:.3e}<extra>%{x}</extra>"))
    big = font_px > CHART_FONT_PX
    fig.update_layout(template=TEMPLATE, height=height + (60 if big else 0), barmode="group",
                      font={"size": font_px}, title={"text": title, "x": 0.01, "font": {"size": font_px + 2}},
                      margin={"t": 40 + 2 * (font_px - CHART_FONT_PX), "b": 10, "l": 60 + 3 * (font_px - CHART_FONT_PX),
                              "r": 10},
                      xaxis={"tickfont": {"size": font_px}},
                      yaxis={"title": {"text": yaxis, "font": {"size": font_px}}, "exponentformat": "e",
                             "tickfont": {"size": font_px}},
                      legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 1, "xanchor": "right",
                              "font": {"size": font_px}},
                      showlegend=len(series) > 1)
    return fig


def grads_figure(v: dict, font_px: int = CHART_FONT_PX) -> go.Figure:
    series = {"own gradient": v["own_norms"]}
    if v.get("active"):
        series["sent (SplitAvg)"] = v["norms"]
    return client_bars(v["clients"], series, "Cut-layer gradient norm per client", "‖dL/ds‖",
                       (BYTE_COLORS["bytes_grads_down"], PALETTE[4]), font_px=font_px)


def moved_figure(v: dict, font_px: int = CHART_FONT_PX) -> go.Figure:
    return client_bars(v["clients"], {"moved": v["moved"]}, "How far each lower model moved", "L2 distance",
                       (PALETTE[4],), font_px=font_px)


def averaging_figure(v: dict, font_px: int = CHART_FONT_PX) -> go.Figure:
    n = len(v["distances_before"])
    return client_bars(list(range(n)), {"before": v["distances_before"], "after (mean)": [v["spread_after"]] * n},
                       "Distance of each lower model to their average", "L2 distance",
                       (BYTE_COLORS["bytes_model_up"], PALETTE[7]), font_px=font_px)
