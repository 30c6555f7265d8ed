"""Small shared test data."""

import torch

from engine.data import Dataset


def tiny_dataset(seed: int = 0, n: int = 96) -> Dataset:
    """96 random 1x16x16 images in 4 classes: enough for a LeNet-5 round, fast to train on."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 16, 16, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    return Dataset("synthetic", x, y, x[:16], y[:16], ("a", "b", "c", "d"))
