"""The round walkthrough's diagram of clients and server at one step, as an SVG string. Pure (no Streamlit)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

import numpy as np

from engine.trace import PHASE_TITLES, RoundResult
from pages.figures import BYTE_COLORS, PALETTE, defense_label, defense_strength
from pages.walkthrough_steps import (
    KIND_NAMES,
    TECHNIQUE_OF,
    Step,
    absent_short,
    counted,
    fmt_bytes,
    fmt_shape,
    one_at_a_time,
    served,
    served_before,
    splitfed,
    step_title,
)

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
    absent = res.absent.get(i)
    on = look is not None and (i in look.clients or i in look.data) and absent is None
    color = look.color if on else GREY
    second = look.clients.get(i, "") if on else ("" if served_now or look is None else _waiting(i, step, res))
    if absent is not None:  # clients that come and go: greyed all round, with why
        served_now, second = False, absent_short(absent)
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
    look.headline = f"cut-layer gradients down: {counted(v['messages'], 'message')}, {fmt_bytes(v['bytes'])}"
    look.down = {c: ("averaged, broadcast" if j in active else fmt_bytes(per)) for j, c in enumerate(clients)}
    look.server = ["sends dL/ds to each client"]
    look.clients = {c: f"|g| = {norm:.2e}" for c, norm in zip(clients, v["norms"])}


def _look_local(look, v, clients, each, res):
    look.headline = f"each client's own loss ({KIND_NAMES.get(v['kind'], v['kind'])}), no message sent"
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
