"""A client's reconstruction snapshot as compact bytes, and back.

Images (the inputs, the InfoPro reconstruction and the server's attack reconstruction) lie in
[0, 1] and are only drawn, so they are kept as 8-bit; smashed-data channels as float16; the
per-image PSNR and SSIM scores as float32. The bytes are ``np.savez_compressed`` output, read back
without pickle. Blobs written before a key existed read back without it.
"""

from __future__ import annotations

import io

import numpy as np

_IMAGE_KEYS = ("inputs", "reconstruction", "attack")
# per shown image: the attacker's reconstruction quality, and the client's own InfoPro reconstruction's
SCORE_KEYS = ("attack_psnr", "attack_ssim", "psnr", "ssim")


def pack_client_snapshot(inputs: np.ndarray, labels: np.ndarray, client_entry: dict) -> bytes:
    """Bytes for one client of :func:`engine.evaluate.reconstruction_snapshot`: inputs, labels, smashed,
    and when present its reconstruction, the attack reconstruction (:func:`engine.privacy.attach_to_snapshot`)
    and the scores of both."""
    arrays = {"inputs": _to_uint8(inputs), "labels": np.asarray(labels, dtype=np.int64),
              "smashed": np.asarray(client_entry["smashed"], dtype=np.float16)}
    for key in ("reconstruction", "attack"):
        if client_entry.get(key) is not None:
            arrays[key] = _to_uint8(client_entry[key])
    for key in SCORE_KEYS:
        if client_entry.get(key) is not None:
            arrays[key] = np.asarray(client_entry[key], dtype=np.float32)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def unpack_client_snapshot(data: bytes) -> dict[str, np.ndarray]:
    """The arrays of :func:`pack_client_snapshot`: images as float32 in [0, 1], smashed and scores as
    float32, labels int64; keys that were not stored are absent."""
    with np.load(io.BytesIO(data), allow_pickle=False) as stored:
        arrays = {key: stored[key] for key in stored.files}
    for key in _IMAGE_KEYS:
        if key in arrays:
            arrays[key] = arrays[key].astype(np.float32) / 255.0
    arrays["smashed"] = arrays["smashed"].astype(np.float32)
    return arrays


def _to_uint8(images: np.ndarray) -> np.ndarray:
    return np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)
