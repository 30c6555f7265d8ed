"""InfoPro snapshots as pictures: numpy arrays to one PNG-ready grid. Pure (no Streamlit)."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SCALE = 4  # the least nearest-neighbour upscaling
MIN_TILE_PX = 112  # a tile is upscaled to at least this many pixels (28x28 -> 112, digits' 8x8 -> 112)
GAP_PX = 8
HEADER_PX = 28
ROW_LABEL_PX = 96
FONT_PX = 15


def tile_scale(height: int) -> int:
    """The upscaling that makes an image ``height`` pixels tall at least MIN_TILE_PX on screen."""
    return max(SCALE, math.ceil(MIN_TILE_PX / max(height, 1)))


def to_rgb(image: np.ndarray) -> np.ndarray:
    """[C, H, W] in [0, 1] (C = 1 or 3) -> uint8 [H, W, 3]."""
    img = np.clip(image, 0, 1)
    img = np.repeat(img, 3, axis=0) if img.shape[0] == 1 else img[:3]
    return (img.transpose(1, 2, 0) * 255).round().astype(np.uint8)


def channel_to_rgb(channel: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One smashed-data channel [h, w], min-max normalised and resized to ``size`` -> uint8 [H, W, 3]."""
    lo, hi = float(channel.min()), float(channel.max())
    norm = (channel - lo) / (hi - lo) if hi > lo else np.zeros_like(channel)
    img = Image.fromarray((norm * 255).astype(np.uint8)).resize(size[::-1], Image.NEAREST)
    return np.repeat(np.asarray(img)[..., None], 3, axis=2)


def _tiles(inputs: np.ndarray, smashed: np.ndarray, reconstruction: np.ndarray | None, j: int) -> list[np.ndarray]:
    h, w = inputs.shape[2:]
    tiles = [to_rgb(inputs[j])]
    if smashed.ndim == 4:
        tiles += [channel_to_rgb(c, (h, w)) for c in smashed[j]]
    if reconstruction is not None:
        tiles.append(to_rgb(reconstruction[j]))
    return tiles


def column_titles(smashed: np.ndarray, reconstruction: np.ndarray | None) -> list[str]:
    """'input', 'channel 1' .. 'channel k', 'reconstruction': the columns of a snapshot grid."""
    channels = smashed.shape[1] if smashed.ndim == 4 else 0
    last = ["reconstruction"] if reconstruction is not None else []
    return ["input"] + [f"channel {c + 1}" for c in range(channels)] + last


def snapshot_grid(inputs: np.ndarray, smashed: np.ndarray, reconstruction: np.ndarray | None) -> np.ndarray:
    """One row per test image: input | smashed channels | reconstruction, separated by white lines."""
    k, _, h, _ = inputs.shape
    scale = tile_scale(h)
    rows = []
    for j in range(k):
        tiles = [t.repeat(scale, axis=0).repeat(scale, axis=1) for t in _tiles(inputs, smashed, reconstruction, j)]
        gap = np.full((h * scale, GAP_PX, 3), 255, np.uint8)
        rows.append(np.concatenate([x for t in tiles for x in (t, gap)][:-1], axis=1))
        rows.append(np.full((GAP_PX, rows[-1].shape[1], 3), 255, np.uint8))
    return np.concatenate(rows[:-1], axis=0)


def _font(size: int = FONT_PX) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # an old Pillow or one without FreeType: the small bitmap font
        return ImageFont.load_default()


def row_label(j: int, labels: np.ndarray | None, classes: tuple[str, ...] | None) -> str:
    """'image 1' and, below, its class by the data set's name for it ('Trouser'), as the walkthrough
    writes it; by number only when the names are unknown (the data set is not on this machine)."""
    if labels is None or j >= len(labels):
        return f"image {j + 1}"
    y = int(labels[j])
    return f"image {j + 1}\n" + (classes[y] if classes and 0 <= y < len(classes) else f"class {y}")


def labelled_snapshot_grid(inputs: np.ndarray, smashed: np.ndarray, reconstruction: np.ndarray | None,
                           labels: np.ndarray | None = None, classes: tuple[str, ...] | None = None) -> np.ndarray:
    """:func:`snapshot_grid` with column headers (input | channel 1..k | reconstruction) above and a
    row label ('image 1', its class) on the left, drawn into the picture so it reads the same anywhere."""
    grid = snapshot_grid(inputs, smashed, reconstruction)
    k, _, h, _ = inputs.shape
    tile = h * tile_scale(h)
    canvas = Image.new("RGB", (ROW_LABEL_PX + grid.shape[1], HEADER_PX + grid.shape[0]), "white")
    canvas.paste(Image.fromarray(grid), (ROW_LABEL_PX, HEADER_PX))
    draw, font = ImageDraw.Draw(canvas), _font()
    for c, text in enumerate(column_titles(smashed, reconstruction)):
        centre = ROW_LABEL_PX + c * (tile + GAP_PX) + tile // 2
        draw.text((centre, HEADER_PX // 2), text, fill="black", font=font, anchor="mm")
    for j in range(k):
        top = HEADER_PX + j * (tile + GAP_PX) + tile // 2
        draw.multiline_text((ROW_LABEL_PX // 2, top), row_label(j, labels, classes), fill="black", font=font,
                            anchor="mm", align="center")
    return np.asarray(canvas)


LEAK_COLUMN_PX = 150  # a column of the leakage grid: wide enough for its header and caption
LEAK_HEADER_PX = 44  # two lines
CAPTION_PX = 40  # two lines under each reconstruction


def quality_caption(psnr: np.ndarray | None, ssim: np.ndarray | None, j: int) -> str:
    """'PSNR 14.2 dB' and 'SSIM 0.41' on two lines, for image ``j``; a score that is missing is left out
    (the picture's font has no dash)."""
    lines = []
    if psnr is not None and j < len(psnr) and np.isfinite(psnr[j]):
        lines.append(f"PSNR {float(psnr[j]):.1f} dB")
    if ssim is not None and j < len(ssim) and np.isfinite(ssim[j]):
        lines.append(f"SSIM {float(ssim[j]):.2f}")
    return "\n".join(lines)


def leakage_grid(inputs: np.ndarray, attack: np.ndarray, attack_psnr: np.ndarray | None,
                 attack_ssim: np.ndarray | None, reconstruction: np.ndarray | None = None,
                 psnr: np.ndarray | None = None, ssim: np.ndarray | None = None,
                 labels: np.ndarray | None = None, classes: tuple[str, ...] | None = None,
                 attack_header: tuple[str, str] = ("server's attack", "(inverse network)")) -> np.ndarray:
    """What the server can see, one row per test image: the input | the client's own InfoPro
    reconstruction (when it has one) | the server's attack reconstruction (its column headed
    ``attack_header``, two lines), each reconstruction captioned with its PSNR and SSIM against the
    input. Headers and captions are drawn in."""
    columns = [(("test image", "(the input)"), inputs, None)]
    if reconstruction is not None:
        columns.append((("client's own", "InfoPro decoder"), reconstruction, (psnr, ssim)))
    columns.append((attack_header, attack, (attack_psnr, attack_ssim)))
    k, _, h, _ = inputs.shape
    tile = h * tile_scale(h)
    width, row_h = max(tile, LEAK_COLUMN_PX), tile + CAPTION_PX + GAP_PX
    canvas = Image.new("RGB", (ROW_LABEL_PX + len(columns) * width, LEAK_HEADER_PX + k * row_h), "white")
    draw, font = ImageDraw.Draw(canvas), _font()
    for c, (header, images, scores) in enumerate(columns):
        left = ROW_LABEL_PX + c * width
        draw.multiline_text((left + width // 2, LEAK_HEADER_PX // 2), "\n".join(header), fill="black", font=font,
                            anchor="mm", align="center")
        for j in range(k):
            top = LEAK_HEADER_PX + j * row_h
            picture = to_rgb(images[j]).repeat(tile // h, axis=0).repeat(tile // h, axis=1)
            canvas.paste(Image.fromarray(picture), (left + (width - tile) // 2, top))
            if scores is not None:
                draw.multiline_text((left + width // 2, top + tile + CAPTION_PX // 2), quality_caption(*scores, j),
                                    fill="black", font=font, anchor="mm", align="center")
    for j in range(k):
        draw.multiline_text((ROW_LABEL_PX // 2, LEAK_HEADER_PX + j * row_h + tile // 2), row_label(j, labels, classes),
                            fill="black", font=font, anchor="mm", align="center")
    return np.asarray(canvas)


def attacked_record(records: list) -> object | None:
    """The one of a round's ImageRecords that carries the server's attack (the attacked client); None if none."""
    return next((r for r in records if getattr(r, "attack", None) is not None), None)


def attack_grid(record, classes: tuple[str, ...] | None = None,
                attack_header: tuple[str, str] = ("server's attack", "(inverse network)")) -> np.ndarray:
    """:func:`leakage_grid` of an ImageRecord that carries the attack (``classes``: the data set's class names;
    ``attack_header``: the attack column's two header lines)."""
    return leakage_grid(record.inputs, record.attack, record.attack_psnr, record.attack_ssim, record.reconstruction,
                        record.psnr, record.ssim, record.labels, classes, attack_header)


def identical_clients_note(config: dict, round_: int) -> str | None:
    """Why every client's pictures can be the same at ``round_``: Vanilla SL trains one lower model, or
    averaging ⑤ ran at the end of the round, so the lower models (and with ④' the decoders) are one.
    None when neither holds."""
    if config.get("schedule") == "sequential":
        return ("Why the clients look alike: Vanilla SL trains one lower model, handed from client to client "
                "(through the server), so every client's smashed data is the same for the same test images.")
    averaging = config.get("averaging") or {}
    interval = int(averaging.get("interval") or 1)
    if not averaging.get("enabled") or round_ % interval != 0:
        return None
    local = config.get("local_loss") or {}
    decoders_too = bool(local.get("enabled") and local.get("average_aux"))
    same = ("every client's lower model and, with ④', its InfoPro decoder are the same, and so are their smashed "
            "data and reconstructions" if decoders_too else
            "every client's lower model is the same, and so is their smashed data")
    every = "round (T_c = 1)" if interval == 1 else f"T_c = {interval} rounds"
    return (f"Why the clients look alike: averaging ⑤ runs every {every}, and round {round_} "
            f"ended with one, so the lower models had just been averaged: {same} for the same test images.")


def png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()
