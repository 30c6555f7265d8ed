"""Process-level settings that make rounds fast on a CPU."""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
_tuned = False


def flush_denormals() -> bool:
    """Treat subnormal floats as zero on the CPU.

    Adam's second-moment estimates of near-zero gradients decay into subnormal numbers, which
    x86 CPUs handle in microcode: measured here, a 3-client LocFedMix-SL round on synthetic data
    went from 1.7 s to 0.05 s. The values involved are below 1e-38, far under float32 precision
    for anything the model computes, so results are unaffected in practice.
    """
    import torch

    return torch.set_flush_denormal(True)


def tune_allocator(trim_threshold: int = 1 << 30) -> bool:
    """Keep freed memory in glibc's heap instead of returning it to the kernel.

    A round allocates and frees the same large activations again and again; with glibc's
    defaults each big block is a fresh mmap whose pages the kernel must zero, which measured
    here as about half of a 100-client round. ``MALLOC_MMAP_MAX_=0`` with a large
    ``MALLOC_TRIM_THRESHOLD_`` does the same from the environment. Returns whether it applied.
    """
    global _tuned
    if _tuned:
        return True
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    _tuned = ok
    return ok
