"""The round walkthrough's pictures: a step's tensors as RGB arrays (the InfoPro page's helpers) and its
numbers per client as plotly bar charts. Pure (no Streamlit)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from PIL import Image, ImageDraw

from pages.figures import BYTE_COLORS, PALETTE, TEMPLATE
from pages.images import FONT_PX, GAP_PX, _font, channel_to_rgb, to_rgb
from pages.walkthrough_steps import BATCH_SIZE, as_numpy

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


def class_name(classes: tuple[str, ...] | None, y: int) -> str:
    return classes[y] if classes and 0 <= y < len(classes) else str(y)


def batch_picture(v: dict, classes: tuple[str, ...] | None, samples: int = BATCH_SIZE) -> np.ndarray:
    """Each client's batch: one row per client, its images with their class under each."""
    x, y = as_numpy(v["x"]), as_numpy(v["y"])
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
    x, s = as_numpy(batch["x"]), as_numpy(forward["smashed"])
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
    x, s = as_numpy(batch["x"]), as_numpy(forward["smashed"])
    r = as_numpy(upload["received"]).reshape(s.shape)
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
    x, y, s = as_numpy(batch["x"]), as_numpy(batch["y"]), as_numpy(forward["smashed"])
    mixed, labels = as_numpy(mix["mixed"]), as_numpy(mix["mixed_labels"])
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
    x, r = as_numpy(v["inputs"]), as_numpy(v["reconstructions"])
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
