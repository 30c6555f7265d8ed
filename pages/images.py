"""InfoPro snapshots as pictures: numpy arrays to one PNG-ready grid. Pure (no Streamlit)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

SCALE = 4  # nearest-neighbour upscaling so 28x28 images are visible


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


def snapshot_grid(inputs: np.ndarray, smashed: np.ndarray, reconstruction: np.ndarray | None) -> np.ndarray:
    """One row per test image: input | smashed channels | reconstruction, separated by white lines."""
    k, _, h, w = inputs.shape
    rows = []
    for j in range(k):
        tiles = [to_rgb(inputs[j])]
        if smashed.ndim == 4:
            tiles += [channel_to_rgb(c, (h, w)) for c in smashed[j]]
        if reconstruction is not None:
            tiles.append(to_rgb(reconstruction[j]))
        gap = np.full((h, 2, 3), 255, np.uint8)
        rows.append(np.concatenate([x for t in tiles for x in (t, gap)][:-1], axis=1))
        rows.append(np.full((2, rows[-1].shape[1], 3), 255, np.uint8))
    grid = np.concatenate(rows[:-1], axis=0)
    return grid.repeat(SCALE, axis=0).repeat(SCALE, axis=1)


def png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()
