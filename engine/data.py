"""Data sets and client partitions for SplitLab.

Data sets
    ``fashion-mnist`` and ``cifar10`` are read with torchvision from the first
    folder of :func:`data_dir_candidates` that holds them in torchvision's
    layout (``<folder>/FashionMNIST/raw/...``, ``<folder>/cifar-10-batches-py/...``;
    the distribution's archives there are unpacked when first needed).
    :func:`get_dataset` downloads them (torchvision's mirrors and checksums),
    :func:`available` says whether this host has one, :data:`DATASET_INFO`
    holds what is known without loading (sizes, whether it can be downloaded).
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
import gzip
import importlib.util
import json
import os
import tempfile
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
MIRROR_ENV_VAR = "SPLITLAB_DATA_MIRROR"  # a base URL that replaces torchvision's mirrors (tests, local caches)
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
SYNTHETIC_TRAIN, SYNTHETIC_TEST = 2048, 512  # the synthetic set's sizes unless a caller asks for others
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


# --------------------------------------------------------------------------- catalogue


@dataclass(frozen=True)
class DatasetInfo:
    """What is known of a data set without loading it."""

    name: str  # the key runs use: "fashion-mnist"
    title: str  # as people write it: "Fashion-MNIST"
    train_size: int  # training samples of the distribution (a copy on disk may hold fewer: see train_size())
    test_size: int
    downloadable: bool  # get_dataset() can fetch it; False: built in or generated, always here
    download_bytes: int  # what a download transfers (0: nothing to download)
    source: str  # where it comes from, in words


DATASET_INFO: dict[str, DatasetInfo] = {
    "fashion-mnist": DatasetInfo("fashion-mnist", "Fashion-MNIST", 60_000, 10_000, True, 30_878_645,
                                 "Zalando Research, from torchvision's mirror"),
    "cifar10": DatasetInfo("cifar10", "CIFAR-10", 50_000, 10_000, True, 170_498_071,
                           "the University of Toronto, from torchvision's address"),
    "digits": DatasetInfo("digits", "digits", 1437, 360, False, 0, "built in (scikit-learn's 8x8 digits)"),
    "synthetic": DatasetInfo("synthetic", "synthetic", SYNTHETIC_TRAIN, SYNTHETIC_TEST, False, 0,
                             "generated from the run's seed"),
}
DOWNLOADABLE: tuple[str, ...] = tuple(name for name, info in DATASET_INFO.items() if info.downloadable)

# The files torchvision reads, under <folder>/_TORCHVISION_LAYOUT[name]; and the distribution's archives they
# come from (Fashion-MNIST: each file gzipped beside it; CIFAR-10: one tar.gz in <folder>).
_FILES = {
    "fashion-mnist": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                      "t10k-labels-idx1-ubyte"),
    "cifar10": (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"),
}
_CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
_CIFAR_IMAGE_BYTES = 3 * 32 * 32


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


def locate(name: str, data_dir: str | os.PathLike | None = None) -> Path | None:
    """The first folder of :func:`data_dir_candidates` holding ``name``'s files (or the distribution's
    archives of them), judged by the files being there, without reading them. None when no folder has
    them, and for the data sets that need no files (digits, synthetic)."""
    key = _canonical_name(name)
    if key not in _TORCHVISION_LAYOUT:
        return None
    return next((folder for folder in data_dir_candidates(data_dir) if _has_files(key, folder)), None)


def available(name: str, data_dir: str | os.PathLike | None = None) -> bool:
    """Whether ``name`` can be loaded on this host without a download: always for digits and synthetic;
    for the others, whether a candidate folder holds their files. ValueError for an unknown name."""
    key = _canonical_name(name)
    return key not in DOWNLOADABLE or locate(key, data_dir) is not None


def train_size(name: str, data_dir: str | os.PathLike | None = None) -> int:
    """Training samples of ``name`` as this host would load it, without loading a full-size copy:
    Fashion-MNIST's count is read from its label file's header (a copy on disk may be cut down);
    CIFAR-10 files of full size hold 50,000 images, a smaller copy is loaded to count it. A data set
    that is not here counts as its distribution (:data:`DATASET_INFO`)."""
    key = _canonical_name(name)
    folder = locate(key, data_dir)
    if folder is None:
        return DATASET_INFO[key].train_size
    if key == "fashion-mnist":
        return _idx_count(folder / _TORCHVISION_LAYOUT[key] / "train-labels-idx1-ubyte")
    batches = [folder / _TORCHVISION_LAYOUT[key] / f"data_batch_{i}" for i in range(1, 6)]
    if all(b.is_file() for b in batches) and sum(b.stat().st_size for b in batches) >= 50_000 * _CIFAR_IMAGE_BYTES:
        return DATASET_INFO[key].train_size
    return len(_load_torchvision(key, data_dir, download=False).train_y)


def _idx_count(path: Path) -> int:
    """The item count in an IDX file's header (or in the header of its gzipped copy beside it)."""
    opener = open if path.is_file() else gzip.open
    with opener(path if path.is_file() else path.with_name(path.name + ".gz"), "rb") as f:
        header = f.read(8)
    if len(header) < 8:
        raise ValueError(f"{path.name} is too short to be an IDX file")
    return int.from_bytes(header[4:8], "big")


def _has_files(name: str, folder: Path) -> bool:
    """Whether ``folder`` holds ``name``'s files in torchvision's layout, or the archives they come in."""
    base = folder / _TORCHVISION_LAYOUT[name]
    if name == "fashion-mnist":
        return all((base / f).is_file() or (base / f"{f}.gz").is_file() for f in _FILES[name])
    return all((base / f).is_file() for f in _FILES[name]) or (folder / _CIFAR_ARCHIVE).is_file()


def layout_hint(name: str) -> str:
    """Where ``name``'s files go in a data folder, as one phrase."""
    if name == "fashion-mnist":
        return ("<folder>/FashionMNIST/raw/ holding " + ", ".join(f"{f}.gz" for f in _FILES[name])
                + ", unpacked or not")
    return f"<folder>/{_CIFAR_ARCHIVE}, or the folder <folder>/cifar-10-batches-py/ it unpacks to"


# --------------------------------------------------------------------------- download


def get_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    progress: Callable[[int, int], None] | None = None,
    *,
    mirror: str | None = None,
) -> Path:
    """Make ``name`` available on this host and return the data folder that holds it.

    When no candidate folder has it, downloads it into the first candidate (``data_dir``, else
    ``$SPLITLAB_DATA``, else ``./data``) from torchvision's mirrors, each file checked against
    torchvision's md5 before it is kept, then unpacks it there in torchvision's layout.
    ``progress(done_bytes, total_bytes)`` is called as bytes arrive (``total_bytes >= done_bytes``).
    ``mirror`` (else ``$SPLITLAB_DATA_MIRROR``) is a base URL that replaces torchvision's mirrors.

    Raises:
        ValueError: unknown name, or a data set that is built in (nothing to download).
        engine.download.DownloadError: no mirror answered (``offline``; its message says where to put
            the files instead) or a file did not match its checksum. One line each.
        OSError: the data folder cannot be written.
    """
    from engine.download import DownloadError, fetch_all

    key = _canonical_name(name)
    info = DATASET_INFO[key]
    if not info.downloadable:
        raise ValueError(f"{info.title} is {info.source}: there is nothing to download")
    found = locate(key, data_dir)
    if found is not None:
        _unpack_or_refuse(key, found)
        return found
    target = data_dir_candidates(data_dir)[0]
    try:
        fetch_all(_remote_files(key, target, mirror or os.environ.get(MIRROR_ENV_VAR) or None), progress)
    except DownloadError as err:
        if not err.offline:
            raise
        raise DownloadError(f"{err}. Without a network, put {_manual_hint(key, target)}", offline=True) from None
    _unpack_or_refuse(key, target)
    if key == "cifar10":
        (target / _CIFAR_ARCHIVE).unlink()  # 170 MB that torchvision never reads again
    return target


def _unpack_or_refuse(name: str, folder: Path) -> None:
    from engine.download import DownloadError

    try:
        _unpack(name, folder)
    except RuntimeError as err:
        raise DownloadError(f"{err}: remove it, then get the data set again") from None


def _remote_files(name: str, target: Path, mirror: str | None) -> list:
    """What to fetch for ``name`` into ``target``: torchvision's file names, mirrors and md5s."""
    from engine.download import RemoteFile

    datasets = import_torchvision().datasets
    if name == "fashion-mnist":
        bases = [mirror] if mirror else list(datasets.FashionMNIST.mirrors)
        raw = target / _TORCHVISION_LAYOUT[name]
        sizes = dict(zip(_FILES[name], (26_421_880, 29_515, 4_422_102, 5_148)))
        return [RemoteFile(tuple(_join(base, file) for base in bases), raw / file, md5,
                           sizes[file.removesuffix(".gz")]) for file, md5 in datasets.FashionMNIST.resources]
    cifar = datasets.CIFAR10
    url = _join(mirror, cifar.filename) if mirror else cifar.url
    return [RemoteFile((url,), target / cifar.filename, cifar.tgz_md5, DATASET_INFO[name].download_bytes)]


def _join(base: str, file: str) -> str:
    return base.rstrip("/") + "/" + file


def _manual_hint(name: str, target: Path) -> str:
    """One sentence: which files, from where, into which folder."""
    datasets = import_torchvision().datasets
    if name == "fashion-mnist":
        files = ", ".join(f for f, _ in datasets.FashionMNIST.resources)
        return (f"{files} (from {datasets.FashionMNIST.mirrors[0]}) in {target / _TORCHVISION_LAYOUT[name]}/ "
                f"(torchvision's layout; unpacked or not), or set {DATA_ENV_VAR} to a folder that has them")
    return (f"{datasets.CIFAR10.filename} (from {datasets.CIFAR10.url}) in {target}/, or the folder "
            f"cifar-10-batches-py it unpacks to (torchvision's layout), or set {DATA_ENV_VAR} to a folder that has it")


def _unpack(name: str, folder: Path) -> None:
    """Unpack the distribution's archives in ``folder`` where the files torchvision reads are missing;
    an archive is unpacked only when it matches torchvision's md5 (RuntimeError otherwise)."""
    base = folder / _TORCHVISION_LAYOUT[name]
    missing = [f for f in _FILES[name] if not (base / f).is_file()]
    if not missing:
        return
    utils = import_torchvision().datasets.utils
    if name == "fashion-mnist":
        md5s = dict(import_torchvision().datasets.FashionMNIST.resources)
        archives = [(base / f"{f}.gz", md5s.get(f"{f}.gz")) for f in missing]
    else:
        archives = [(folder / _CIFAR_ARCHIVE, import_torchvision().datasets.CIFAR10.tgz_md5)]
    for archive, md5 in archives:
        if not utils.check_integrity(str(archive), md5):
            raise RuntimeError(f"{archive} is missing or does not match its checksum")
    with tempfile.TemporaryDirectory(dir=folder, prefix=".unpack-") as scratch:
        for archive, _ in archives:
            utils.extract_archive(str(archive), scratch)
        unpacked = Path(scratch) / (_TORCHVISION_LAYOUT[name] if name == "cifar10" else "")
        base.mkdir(parents=True, exist_ok=True)
        for f in missing:
            os.replace(unpacked / f, base / f)


# --------------------------------------------------------------------------- loading


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    *,
    synthetic_shape: tuple[int, int, int] = (3, 32, 32),
    synthetic_train: int = SYNTHETIC_TRAIN,
    synthetic_test: int = SYNTHETIC_TEST,
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
    failures = []
    for folder in candidates:
        if not _has_files(name, folder):
            continue
        try:
            _unpack(name, folder)
            return _load_torchvision_folder(name, str(folder))
        except (RuntimeError, OSError, ValueError) as err:  # incomplete or corrupted files: try the next folder
            failures.append(f"the files in {folder} could not be read ({_words(err)})")
    if not download:
        raise _not_found(name, candidates, "; ".join(failures).capitalize() + "." if failures else "")
    return _download(name, data_dir, candidates)


def _download(name: str, data_dir: str | os.PathLike | None, candidates: list[Path]) -> Dataset:
    """Download ``name`` into the first candidate folder and load it."""
    from engine.download import DownloadError

    try:
        folder = get_dataset(name, data_dir)
    except (DownloadError, OSError) as exc:  # network, disk or integrity failure
        raise _not_found(name, candidates, f"Downloading it into {candidates[0]} failed: {_words(exc)}.") from exc
    return _load_torchvision_folder(name, str(folder))


def _words(err: BaseException) -> str:
    """An exception's message without its class name; an OSError as its reason and file."""
    if "download=True" in str(err):  # torchvision's own words, about an option SplitLab does not offer
        return "a file is missing or does not match its checksum"
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    return str(err) or type(err).__name__


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
    """Build the DatasetNotFound error for ``name``: where it looked, how to get it."""
    folders = ", ".join(str(p) for p in searched)
    message = (
        f"Data set {name!r} ({DATASET_INFO[name].title}) is not on this host. Searched these folders, in order: "
        f"{folders}. {detail + ' ' if detail else ''}"
        f"Get it with `python -m engine data get {name}` (or the Get button beside the data set on the "
        f"dashboard's New run page), which downloads it into {searched[0]}; or put torchvision's layout for it "
        f"({layout_hint(name)}) in one of those folders, or point the {DATA_ENV_VAR} environment variable or "
        f"--data-dir at a folder that has it. The embedded 'digits' data set needs no download."
    )
    return DatasetNotFound(message, name, tuple(str(p) for p in searched))


DIGITS_SPLIT = Path(__file__).with_name("digits_split.json")  # the 80/20 split, in scikit-learn's order


def _digits_images_and_labels() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 digits as ([N, 8, 8] float64 in 0..16, [N] labels). Read from the CSV that
    scikit-learn ships, as its ``load_digits`` reads it, without importing scikit-learn (about a second
    of CPU in every worker and client process); through ``load_digits`` where the file is elsewhere."""
    spec = importlib.util.find_spec("sklearn")
    csv = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if csv is None or not csv.is_file():
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.images, bunch.target
    with gzip.open(csv, "rt", encoding="utf-8") as rows:
        data = np.loadtxt(rows, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int, copy=False)


@functools.lru_cache(maxsize=1)
def _load_digits() -> Dataset:
    """scikit-learn's 8x8 digits, scaled to [0, 1], resized to 1x28x28, fixed 80/20 split: the one
    ``train_test_split(test_size=0.2, stratify=labels, random_state=0)`` draws, stored in
    ``digits_split.json`` (a test checks that it still is)."""
    pixels, target = _digits_images_and_labels()
    images = torch.as_tensor(pixels, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
    labels = torch.as_tensor(target, dtype=torch.int64)
    split = json.loads(DIGITS_SPLIT.read_text())
    train_idx, test_idx = torch.as_tensor(split["train"]), torch.as_tensor(split["test"])
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


# The paper's "each client samples m items": 12,000 of 60,000 (Fashion-MNIST), 5,000 of 50,000 (CIFAR-10).
PAPER_SAMPLES_PER_CLIENT = {"fashion-mnist": 12_000, "cifar10": 5_000}


def resolve_samples_per_client(dataset: str, scheme: str, samples_per_client: int | None,
                               num_samples: int) -> int | None:
    """m as a run uses it: the one set; else, for the paper partition, the paper's m for its data sets
    (N/5 for the others, and for a copy too small for the paper's m); None (a full share) otherwise."""
    if samples_per_client is not None or scheme != "paper":
        return samples_per_client
    return max(1, min(PAPER_SAMPLES_PER_CLIENT.get(dataset, num_samples), num_samples // 5))


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
    problems = partition_problems(len(labels), num_clients, scheme, samples_per_client, beta)
    if problems:
        raise ValueError("; ".join(f"{arg} {message}" for arg, message in problems))
    if scheme == "paper":
        parts = _partition_paper(len(labels), num_clients, rng, samples_per_client)
    elif scheme == "iid":
        parts = _partition_iid(len(labels), num_clients, rng, samples_per_client)
    else:
        parts = _partition_dirichlet(labels, num_clients, rng, beta, samples_per_client)
    return [np.sort(p).astype(np.int64) for p in parts]


def partition_problems(num_samples: int, num_clients: int, scheme: str, samples_per_client: int | None,
                       beta: float = 0.5, data_name: str = "") -> list[tuple[str, str]]:
    """Everything :func:`partition` refuses for these sizes, as (argument, message) pairs, the message
    phrased to follow the argument's name (``data_name`` names the data set in it); empty when it can
    partition. The one home of these limits: the pre-flight check (:mod:`engine.preflight`) asks here
    without loading the data."""
    if scheme not in PARTITION_SCHEMES:
        return [("scheme", f"must be one of {', '.join(PARTITION_SCHEMES)}, got {scheme!r}")]
    if isinstance(num_clients, bool) or int(num_clients) != num_clients or num_clients < 1:
        return [("num_clients", f"must be a positive whole number, got {num_clients!r}")]
    if scheme == "dirichlet" and not beta > 0:
        return [("beta", f"must be greater than 0, got {beta}")]
    samples = f"{num_samples:,} training sample{'s' if num_samples != 1 else ''}"
    samples += f" of {data_name}" if data_name else ""
    if num_clients > num_samples and (scheme != "paper" or samples_per_client is None):
        why = "disjoint, non-empty shares" if scheme != "paper" else "each draws its share, N/n items"
        return [("num_clients", f"must be at most the {samples} for the {scheme} partition ({why}), "
                                f"got {num_clients:,}")]
    spc = samples_per_client
    if spc is None:
        return []
    if spc < 1:
        return [("samples_per_client", f"must be at least 1, got {spc:,}")]
    if scheme == "paper" and spc > num_samples:
        return [("samples_per_client", f"must be at most the {samples} (each client draws distinct items), "
                                       f"got {spc:,}")]
    if scheme == "iid" and spc > num_samples // num_clients:
        return [("samples_per_client", f"must be at most {num_samples // num_clients:,} for the iid partition "
                                       f"({samples} in disjoint shares among {num_clients:,} clients), got {spc:,}")]
    return []


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
    return labels


def _partition_paper(n: int, num_clients: int, rng: np.random.Generator, spc: int | None) -> list[np.ndarray]:
    spc = n // num_clients if spc is None else spc
    return [rng.choice(n, size=spc, replace=False) for _ in range(num_clients)]


def _partition_iid(n: int, num_clients: int, rng: np.random.Generator, spc: int | None) -> list[np.ndarray]:
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
