"""Data sets and client partitions for SplitLab.

Data sets
    ``fashion-mnist`` and ``cifar10`` are read with torchvision from the first
    folder of :func:`data_dir_candidates` that holds them in torchvision's
    layout (``<folder>/FashionMNIST/raw/...``, ``<folder>/cifar-10-batches-py/...``).
    ``digits`` is scikit-learn's bundled 8x8 digits set, resized to 1x28x28
    (no download needed).  ``synthetic`` is generated from a seed.

    Every data set is returned as float32 NCHW tensors in [0, 1] with int64
    labels.  Loaded data sets are cached in-process and shared between
    callers: treat their tensors as read-only.

Partitions
    :func:`partition` assigns sample indices to clients ("paper", "iid" or
    "dirichlet" scheme).  Each client's index array is sorted ascending.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from engine.tv_compat import import_torchvision

DATASETS = ("fashion-mnist", "cifar10", "digits", "synthetic")
PARTITION_SCHEMES = ("paper", "iid", "dirichlet")

DATA_ENV_VAR = "SPLITLAB_DATA"
# <project root>/../shared/data, the project root being the folder holding engine/.
_SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Sub-folder torchvision expects under ``root`` for each downloadable data set.
_TORCHVISION_LAYOUT = {
    "fashion-mnist": "FashionMNIST/raw",
    "cifar10": "cifar-10-batches-py",
}
# Fixed split of the digits set, independent of any run seed.
_DIGITS_TEST_FRACTION = 0.2
_DIGITS_SPLIT_SEED = 0
_SYNTHETIC_CLASSES = 10
_SYNTHETIC_CONTRAST = 0.25  # prototypes span 0.5 +- this / 2: learnable, yet not trivially separable
_SYNTHETIC_NOISE = 0.35


@dataclass(frozen=True)
class Dataset:
    """A train/test data set: float32 images [N, C, H, W] in [0, 1], int64 labels [N]."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one image, (C, H, W)."""
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)


class DatasetNotFound(FileNotFoundError):
    """A data set's files were found in none of the searched folders.

    ``str(exc)`` is a readable paragraph; ``dataset`` and ``searched`` hold
    the data set's name and the folders searched, in order.
    """

    def __init__(self, message: str, dataset: str = "", searched: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.dataset = dataset
        self.searched = tuple(searched)

    def __reduce__(self):  # keep the attributes when sent between processes
        return type(self), (str(self), self.dataset, self.searched)


# --------------------------------------------------------------------------- folders


def data_dir_candidates(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for data sets, in order, as absolute paths without duplicates.

    Order: ``data_dir`` (if given), ``$SPLITLAB_DATA`` (if set), ``./data``,
    ``<project root>/../shared/data`` and ``./../shared/data``.
    """
    raw: list[str | os.PathLike] = []
    if data_dir is not None:
        raw.append(data_dir)
    if os.environ.get(DATA_ENV_VAR):
        raw.append(os.environ[DATA_ENV_VAR])
    cwd = Path.cwd()
    raw += [cwd / "data", _SHARED_DATA, cwd.parent / "shared" / "data"]
    folders = [Path(p).expanduser().resolve() for p in raw]
    return list(dict.fromkeys(folders))


# --------------------------------------------------------------------------- loading


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    *,
    synthetic_shape: tuple[int, int, int] = (3, 32, 32),
    synthetic_train: int = 2048,
    synthetic_test: int = 512,
    seed: int = 0,
) -> Dataset:
    """Load a data set by name (one of :data:`DATASETS`).

    ``data_dir`` and ``download`` only matter for the torchvision data sets;
    ``synthetic_*`` and ``seed`` only for ``synthetic``.

    Raises:
        ValueError: unknown name or bad synthetic parameters.
        DatasetNotFound: the files are in no candidate folder (and were not downloaded).
    """
    key = _canonical_name(name)
    if key == "digits":
        return _load_digits()
    if key == "synthetic":
        shape = tuple(int(s) for s in synthetic_shape)
        _check_synthetic_args(shape, synthetic_train, synthetic_test)
        return _make_synthetic(shape, int(synthetic_train), int(synthetic_test), int(seed))
    return _load_torchvision(key, data_dir, download)


def clear_cache() -> None:
    """Forget every data set loaded so far in this process."""
    for cached in (_load_torchvision_folder, _load_digits, _make_synthetic):
        cached.cache_clear()


def _canonical_name(name: str) -> str:
    key = str(name).strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known data sets: {', '.join(DATASETS)}")
    return key


def _load_torchvision(name: str, data_dir: str | os.PathLike | None, download: bool) -> Dataset:
    """Load ``name`` from the first candidate folder that has it, or download it."""
    candidates = data_dir_candidates(data_dir)
    for folder in candidates:
        if (folder / _TORCHVISION_LAYOUT[name]).is_dir():
            try:
                return _load_torchvision_folder(name, str(folder))
            except RuntimeError:  # incomplete or corrupted files: try the next folder
                continue
    if not download:
        raise _not_found(name, candidates)
    return _download(name, candidates)


def _download(name: str, candidates: list[Path]) -> Dataset:
    """Download ``name`` into the first candidate folder and load it."""
    target = candidates[0]
    try:
        target.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            _torchvision_class(name)(str(target), train=train, download=True)
    except Exception as exc:  # network, disk or integrity failure
        raise _not_found(name, candidates, f"Downloading it into {target} failed: {exc}.") from exc
    return _load_torchvision_folder(name, str(target))


@functools.lru_cache(maxsize=None)
def _load_torchvision_folder(name: str, root: str) -> Dataset:
    """Read a torchvision data set from ``root`` (no download); cached per (name, root)."""
    cls = _torchvision_class(name)
    train, test = cls(root, train=True, download=False), cls(root, train=False, download=False)
    train_x, train_y = _images_to_tensor(train.data), _labels_to_tensor(train.targets)
    test_x, test_y = _images_to_tensor(test.data), _labels_to_tensor(test.targets)
    return Dataset(name, train_x, train_y, test_x, test_y, tuple(str(c) for c in train.classes))


def _torchvision_class(name: str) -> Callable:
    datasets = import_torchvision().datasets
    return {"fashion-mnist": datasets.FashionMNIST, "cifar10": datasets.CIFAR10}[name]


def _images_to_tensor(data: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 images [N, H, W] or [N, H, W, C] -> float32 [N, C, H, W] in [0, 1]."""
    images = torch.as_tensor(np.asarray(data))
    images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)
    return images.to(torch.float32).div_(255.0).contiguous()


def _labels_to_tensor(targets) -> torch.Tensor:
    return torch.as_tensor(np.asarray(targets), dtype=torch.int64)


def _not_found(name: str, searched: list[Path], detail: str = "") -> DatasetNotFound:
    """Build the DatasetNotFound error for ``name``."""
    folders = ", ".join(str(p) for p in searched)
    message = (
        f"Data set {name!r} was not found. Searched these folders, in order: {folders}. "
        f"{detail + ' ' if detail else ''}"
        f"To use it, put torchvision's layout for it (<folder>/{_TORCHVISION_LAYOUT[name]}/...) "
        f"in one of those folders, point the {DATA_ENV_VAR} environment variable or --data-dir at a "
        f"folder that has it, or pass download=True (`--download` on the command line) to download "
        f"it into {searched[0]} where downloading is possible. "
        f"The embedded 'digits' data set needs no download."
    )
    return DatasetNotFound(message, name, tuple(str(p) for p in searched))


@functools.lru_cache(maxsize=1)
def _load_digits() -> Dataset:
    """scikit-learn's 8x8 digits, scaled to [0, 1], resized to 1x28x28, fixed 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)),
        test_size=_DIGITS_TEST_FRACTION,
        stratify=bunch.target,
        random_state=_DIGITS_SPLIT_SEED,
    )
    train_idx, test_idx = torch.as_tensor(train_idx), torch.as_tensor(test_idx)
    classes = tuple(str(c) for c in range(10))
    return Dataset("digits", images[train_idx], labels[train_idx], images[test_idx], labels[test_idx], classes)


def _check_synthetic_args(shape: tuple[int, ...], n_train: int, n_test: int) -> None:
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"synthetic_shape must be three positive ints (C, H, W), got {shape}")
    if n_train < 1 or n_test < 1:
        raise ValueError(f"synthetic_train and synthetic_test must be >= 1, got {n_train}, {n_test}")


@functools.lru_cache(maxsize=16)
def _make_synthetic(shape: tuple[int, int, int], n_train: int, n_test: int, seed: int) -> Dataset:
    """Ten classes, each a smooth low-contrast random prototype image; samples add Gaussian noise."""
    gen = torch.Generator().manual_seed(seed)
    c, h, w = shape
    coarse = torch.rand(_SYNTHETIC_CLASSES, c, max(1, h // 4), max(1, w // 4), generator=gen)
    smooth = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    prototypes = 0.5 + _SYNTHETIC_CONTRAST * (smooth - 0.5)
    train_x, train_y = _synthetic_split(prototypes, n_train, gen)
    test_x, test_y = _synthetic_split(prototypes, n_test, gen)
    classes = tuple(f"class{k}" for k in range(_SYNTHETIC_CLASSES))
    return Dataset("synthetic", train_x, train_y, test_x, test_y, classes)


def _synthetic_split(prototypes: torch.Tensor, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` noisy samples with (near-)balanced, shuffled labels."""
    labels = (torch.arange(n) % len(prototypes))[torch.randperm(n, generator=gen)]
    noise = torch.randn((n, *prototypes.shape[1:]), generator=gen) * _SYNTHETIC_NOISE
    return (prototypes[labels] + noise).clamp_(0.0, 1.0), labels.to(torch.int64)


# --------------------------------------------------------------------------- partitions


def partition(
    labels: np.ndarray,
    num_clients: int,
    scheme: str,
    rng: np.random.Generator,
    *,
    samples_per_client: int | None = None,
    beta: float = 0.5,
) -> list[np.ndarray]:
    """Split sample indices ``0..len(labels)-1`` among ``num_clients`` clients.

    Schemes:
        ``paper``: each client independently draws ``samples_per_client``
            distinct indices from all N (default N // num_clients); clients
            may overlap.
        ``iid``: a random permutation cut into ``num_clients`` disjoint shards
            whose sizes differ by at most one; with ``samples_per_client``
            each shard is truncated to that size.
        ``dirichlet``: label skew; each class's indices are split among the
            clients in proportions drawn from Dirichlet(``beta``).  Disjoint,
            and no client is left empty (an empty client takes one sample from
            the largest client).  ``samples_per_client``, if given, caps each
            client's size (a random subset is kept).

    All randomness comes from ``rng``.  Returns one sorted int64 array per client.

    Raises:
        ValueError: bad ``labels``, ``num_clients``, ``scheme``,
            ``samples_per_client`` or ``beta``.
    """
    labels = _check_labels(labels)
    _check_common(len(labels), num_clients, scheme, samples_per_client)
    if scheme == "paper":
        parts = _partition_paper(len(labels), num_clients, rng, samples_per_client)
    elif scheme == "iid":
        parts = _partition_iid(len(labels), num_clients, rng, samples_per_client)
    else:
        parts = _partition_dirichlet(labels, num_clients, rng, beta, samples_per_client)
    return [np.sort(p).astype(np.int64) for p in parts]


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
    return labels


def _check_common(n: int, num_clients: int, scheme: str, samples_per_client: int | None) -> None:
    if scheme not in PARTITION_SCHEMES:
        raise ValueError(f"unknown partition scheme {scheme!r}; known schemes: {', '.join(PARTITION_SCHEMES)}")
    if int(num_clients) != num_clients or num_clients < 1:
        raise ValueError(f"num_clients must be a positive int, got {num_clients!r}")
    if scheme != "paper" and num_clients > n:
        raise ValueError(f"cannot give {num_clients} clients disjoint non-empty shares of {n} samples")
    if samples_per_client is not None and samples_per_client < 1:
        raise ValueError(f"samples_per_client must be >= 1, got {samples_per_client}")


def _partition_paper(n: int, num_clients: int, rng: np.random.Generator, spc: int | None) -> list[np.ndarray]:
    spc = n // num_clients if spc is None else spc
    if not 1 <= spc <= n:
        raise ValueError(f"samples_per_client must be between 1 and the {n} samples, got {spc}")
    return [rng.choice(n, size=spc, replace=False) for _ in range(num_clients)]


def _partition_iid(n: int, num_clients: int, rng: np.random.Generator, spc: int | None) -> list[np.ndarray]:
    if spc is not None and spc > n // num_clients:
        raise ValueError(
            f"samples_per_client={spc} is larger than the smallest iid shard ({n} samples / {num_clients} clients)"
        )
    shards = np.array_split(rng.permutation(n), num_clients)
    return shards if spc is None else [s[:spc] for s in shards]


def _partition_dirichlet(
    labels: np.ndarray, num_clients: int, rng: np.random.Generator, beta: float, spc: int | None
) -> list[np.ndarray]:
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    shares: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        cuts = (np.cumsum(rng.dirichlet(np.full(num_clients, float(beta)))) * len(idx)).astype(int)[:-1]
        for client, piece in enumerate(np.split(idx, cuts)):
            shares[client].append(piece)
    parts = [np.concatenate(s) for s in shares]
    _fill_empty_clients(parts, rng)
    if spc is not None:
        parts = [p if len(p) <= spc else rng.choice(p, size=spc, replace=False) for p in parts]
    return parts


def _fill_empty_clients(parts: list[np.ndarray], rng: np.random.Generator) -> None:
    """Move one random sample from the largest client to each empty client, in place."""
    for client, part in enumerate(parts):
        if len(part) > 0:
            continue
        donor = int(np.argmax([len(p) for p in parts]))
        pick = int(rng.integers(len(parts[donor])))
        parts[client] = parts[donor][pick : pick + 1]
        parts[donor] = np.delete(parts[donor], pick)
