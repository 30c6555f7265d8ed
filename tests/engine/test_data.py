"""Tests for engine.data (data sets, folders, partitions) and engine.tv_compat."""

from __future__ import annotations

import hashlib
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import data
from engine.data import DatasetNotFound, data_dir_candidates, load_dataset, partition
from engine.tv_compat import import_torchvision
from tests.engine.datasets_support import cifar_md5s, loopback_only, mirror, tiny_cifar  # noqa: F401 (fixtures)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture
def isolated_dirs(tmp_path, monkeypatch):
    """cwd = an empty folder and SPLITLAB_DATA = another empty folder; returns (cwd, env dir)."""
    cwd, env_dir = tmp_path / "cwd", tmp_path / "env"
    cwd.mkdir()
    env_dir.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("SPLITLAB_DATA", str(env_dir))
    return cwd, env_dir


# --------------------------------------------------------------------------- tv_compat


def test_import_torchvision_twice_gives_datasets():
    first = import_torchvision()
    second = import_torchvision()
    assert first is second
    from torchvision.datasets import CIFAR10, FashionMNIST  # noqa: F401  (importable after the shim)

    assert first.datasets.FashionMNIST is FashionMNIST


def test_import_torchvision_in_fresh_interpreter():
    code = (
        "from engine.tv_compat import import_torchvision, _define_missing_schemas\n"
        "a = import_torchvision(); b = import_torchvision(); _define_missing_schemas()\n"
        "import torchvision.datasets\n"
        "assert a is b and a.datasets.FashionMNIST is torchvision.datasets.FashionMNIST\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# --------------------------------------------------------------------------- folders


def test_data_dir_candidates_order(tmp_path, monkeypatch):
    explicit, env_dir = tmp_path / "explicit", tmp_path / "env"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPLITLAB_DATA", str(env_dir))
    found = data_dir_candidates(explicit)
    base = tmp_path.resolve()
    assert found[:3] == [base / "explicit", base / "env", base / "data"]
    assert (PROJECT_ROOT.parent / "shared" / "data").resolve() in found
    assert found[-1] == base.parent / "shared" / "data"
    assert len(found) == len(set(found))


def test_data_dir_candidates_without_explicit_or_env_and_dedup(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SPLITLAB_DATA", raising=False)
    assert data_dir_candidates()[0] == tmp_path.resolve() / "data"
    monkeypatch.setenv("SPLITLAB_DATA", str(tmp_path / "data"))
    found = data_dir_candidates(tmp_path / "data")
    assert found.count(tmp_path.resolve() / "data") == 1
    assert found[0] == tmp_path.resolve() / "data"


# --------------------------------------------------------------------------- fashion-mnist


@pytest.mark.skipif(
    not (SHARED_DATA / "FashionMNIST" / "raw").is_dir(), reason=f"Fashion-MNIST not present in {SHARED_DATA}"
)
def test_fashion_mnist_loads_from_shared_data():
    ds = load_dataset("fashion-mnist", data_dir=SHARED_DATA)
    assert ds.name == "fashion-mnist"
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.train_x.dtype == torch.float32 and ds.train_y.dtype == torch.int64
    assert float(ds.train_x.min()) == 0.0 and float(ds.train_x.max()) == 1.0
    assert int(ds.train_y[0]) == 9 and ds.classes[9] == "Ankle boot"
    assert torch.bincount(ds.train_y).tolist() == [6000] * 10
    assert torch.bincount(ds.test_y).tolist() == [1000] * 10
    assert ds.num_classes == 10 and ds.input_shape == (1, 28, 28)
    assert load_dataset("fashion_MNIST", data_dir=SHARED_DATA) is ds  # cached, name normalised


# --------------------------------------------------------------------------- cifar10


def _write_cifar(root: Path, per_file: int, seed: int = 0) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Write a tiny CIFAR-10 in torchvision's layout; returns {file: (uint8 data, labels)}."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    written = {}
    for name in CIFAR_FILES:
        pixels = rng.integers(0, 256, size=(per_file, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=per_file).tolist()
        (folder / name).write_bytes(pickle.dumps({"data": pixels, "labels": labels}))
        written[name] = (pixels, labels)
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": CIFAR_NAMES}))
    return written


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def cifar_md5s_of(monkeypatch):
    """Make torchvision's CIFAR10 expect the md5s of the files in a given folder."""
    cifar10 = import_torchvision().datasets.CIFAR10

    def accept(folder: Path) -> None:
        folder = folder / "cifar-10-batches-py"
        train = [[n, _md5(folder / n)] for n in CIFAR_FILES[:5]]
        monkeypatch.setattr(cifar10, "train_list", train)
        monkeypatch.setattr(cifar10, "test_list", [["test_batch", _md5(folder / "test_batch")]])
        monkeypatch.setattr(cifar10, "meta", {**cifar10.meta, "md5": _md5(folder / "batches.meta")})

    return accept


def test_cifar10_round_trips_tiny_files(tmp_path, isolated_dirs, cifar_md5s_of):
    written = _write_cifar(tmp_path / "c", per_file=4)
    cifar_md5s_of(tmp_path / "c")
    ds = load_dataset("cifar10", data_dir=tmp_path / "c")
    assert ds.train_x.shape == (20, 3, 32, 32) and ds.test_x.shape == (4, 3, 32, 32)
    assert ds.classes == tuple(CIFAR_NAMES) and ds.input_shape == (3, 32, 32)
    train_pixels = np.concatenate([written[n][0] for n in CIFAR_FILES[:5]])
    train_labels = sum((written[n][1] for n in CIFAR_FILES[:5]), [])
    expected = torch.from_numpy(train_pixels.reshape(-1, 3, 32, 32).astype(np.float32)) / 255
    assert torch.equal(ds.train_x, expected)
    assert ds.train_y.tolist() == train_labels and ds.train_y.dtype == torch.int64
    test_expected = torch.from_numpy(written["test_batch"][0].reshape(-1, 3, 32, 32).astype(np.float32)) / 255
    assert torch.equal(ds.test_x, test_expected)
    assert ds.test_y.tolist() == written["test_batch"][1]


def test_cifar10_first_loadable_folder_wins(tmp_path, isolated_dirs, cifar_md5s_of):
    _, env_dir = isolated_dirs
    (tmp_path / "broken" / "cifar-10-batches-py").mkdir(parents=True)  # layout present, files missing
    _write_cifar(env_dir, per_file=2, seed=1)
    cifar_md5s_of(env_dir)
    ds = load_dataset("cifar10", data_dir=tmp_path / "broken")
    assert ds.train_x.shape[0] == 10


def test_cifar10_download_goes_to_first_candidate(tmp_path, isolated_dirs, cifar_md5s, mirror, monkeypatch):
    tiny = tiny_cifar(per_file=3)
    cifar_md5s(tiny)
    mirror.put("cifar-10-python.tar.gz", tiny.tar_gz())  # stands in for the network, on loopback
    monkeypatch.setenv(data.MIRROR_ENV_VAR, mirror.url)
    target = tmp_path / "new" / "nested"
    ds = load_dataset("cifar10", data_dir=target, download=True)
    assert ds.train_x.shape == (15, 3, 32, 32)
    assert (target / "cifar-10-batches-py" / "test_batch").is_file()


def test_missing_cifar10_raises_readable_error_offline(tmp_path, isolated_dirs, monkeypatch):
    cifar10 = import_torchvision().datasets.CIFAR10

    def no_network(*args, **kwargs):
        raise AssertionError("network used")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(cifar10, "download", no_network)
    explicit = tmp_path / "explicit"
    explicit.mkdir()
    with pytest.raises(DatasetNotFound) as info:
        load_dataset("cifar10", data_dir=explicit)
    message = str(info.value)
    searched = data_dir_candidates(explicit)
    for folder in searched:
        assert str(folder) in message
    positions = [message.index(str(folder)) for folder in searched]
    assert positions == sorted(positions)
    assert "cifar10" in message and "SPLITLAB_DATA" in message and "download" in message
    assert "digits" in message
    assert isinstance(info.value, FileNotFoundError)
    assert info.value.searched == tuple(str(f) for f in searched)
    again = pickle.loads(pickle.dumps(info.value))  # crosses process boundaries intact
    assert str(again) == message and again.dataset == "cifar10"


def test_unknown_dataset_name_lists_known_names():
    with pytest.raises(ValueError) as info:
        load_dataset("mnist")
    for name in data.DATASETS:
        assert name in str(info.value)


# --------------------------------------------------------------------------- digits / synthetic


def test_digits_needs_no_files_and_is_deterministic(isolated_dirs):
    ds = load_dataset("digits")
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10
    assert ds.classes == tuple(str(i) for i in range(10))
    assert len(ds.train_y) + len(ds.test_y) == 1797
    assert 0.15 < len(ds.test_y) / 1797 < 0.25
    assert float(ds.train_x.min()) >= 0.0 and float(ds.train_x.max()) <= 1.0
    assert float(ds.train_x.max()) > 0.9
    assert sorted(torch.unique(ds.test_y).tolist()) == list(range(10))
    data.clear_cache()
    again = load_dataset("digits")
    assert again is not ds
    assert torch.equal(again.train_x, ds.train_x) and torch.equal(again.test_y, ds.test_y)


def test_digits_are_scikit_learns_split_as_train_test_split_draws_it(monkeypatch):
    """The loader reads scikit-learn's CSV itself and takes the split from engine/digits_split.json; both
    equal what load_digits and train_test_split give, bit for bit, and so does the fallback through them."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    train, test = train_test_split(np.arange(len(bunch.target)), test_size=data._DIGITS_TEST_FRACTION,
                                   stratify=bunch.target, random_state=data._DIGITS_SPLIT_SEED)
    pixels, labels = data._digits_images_and_labels()
    assert np.array_equal(pixels, bunch.images) and np.array_equal(labels, bunch.target)
    data.clear_cache()
    ds = load_dataset("digits")
    images = torch.nn.functional.interpolate(torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0,
                                             size=(28, 28), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
    assert torch.equal(ds.train_x, images[torch.as_tensor(train)])
    assert torch.equal(ds.test_x, images[torch.as_tensor(test)])
    assert ds.train_y.tolist() == bunch.target[train].tolist() and ds.test_y.tolist() == bunch.target[test].tolist()
    # where scikit-learn's CSV is not where it is today, load_digits reads it
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    pixels_again, labels_again = data._digits_images_and_labels()
    assert np.array_equal(pixels_again, bunch.images) and np.array_equal(labels_again, bunch.target)
    data.clear_cache()


def test_synthetic_is_seeded_and_shaped():
    a = load_dataset("synthetic", synthetic_shape=(1, 28, 28), synthetic_train=300, synthetic_test=50, seed=3)
    data.clear_cache()
    b = load_dataset("synthetic", synthetic_shape=(1, 28, 28), synthetic_train=300, synthetic_test=50, seed=3)
    c = load_dataset("synthetic", synthetic_shape=(1, 28, 28), synthetic_train=300, synthetic_test=50, seed=4)
    assert a.train_x.shape == (300, 1, 28, 28) and a.test_x.shape == (50, 1, 28, 28)
    assert a.train_x.dtype == torch.float32 and a.train_y.dtype == torch.int64
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert not torch.equal(a.train_x, c.train_x)
    assert float(a.train_x.min()) >= 0.0 and float(a.train_x.max()) <= 1.0
    assert torch.bincount(a.train_y, minlength=10).tolist() == [30] * 10
    default = load_dataset("synthetic")
    assert default.input_shape == (3, 32, 32) and len(default.train_y) == 2048 and len(default.test_y) == 512


def test_synthetic_is_learnable_by_nearest_class_mean():
    ds = load_dataset("synthetic", synthetic_shape=(3, 16, 16), synthetic_train=1000, synthetic_test=200, seed=0)
    means = torch.stack([ds.train_x[ds.train_y == k].mean(0) for k in range(10)]).flatten(1)
    predicted = torch.cdist(ds.test_x.flatten(1), means).argmin(1)
    assert (predicted == ds.test_y).float().mean() > 0.8


def test_synthetic_rejects_bad_shape():
    with pytest.raises(ValueError):
        load_dataset("synthetic", synthetic_shape=(0, 8, 8))
    with pytest.raises(ValueError):
        load_dataset("synthetic", synthetic_train=0)


# --------------------------------------------------------------------------- partitions


def _balanced_labels(n: int = 5000, classes: int = 10) -> np.ndarray:
    return np.random.default_rng(123).permutation(np.arange(n) % classes)


def _mean_max_class_fraction(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    return float(np.mean([np.bincount(labels[p]).max() / len(p) for p in parts]))


def test_paper_partition_sizes_distinct_and_overlapping():
    labels = _balanced_labels(100)
    parts = partition(labels, 10, "paper", np.random.default_rng(0), samples_per_client=50)
    assert len(parts) == 10
    for part in parts:
        assert part.dtype == np.int64 and len(part) == 50
        assert len(np.unique(part)) == 50 and part.min() >= 0 and part.max() < 100
        assert np.all(np.diff(part) > 0)  # sorted
    assert len(np.intersect1d(parts[0], parts[1])) > 0
    default = partition(labels, 4, "paper", np.random.default_rng(0))
    assert [len(p) for p in default] == [25] * 4


def test_iid_partition_disjoint_covering_balanced():
    labels = _balanced_labels(1003)
    parts = partition(labels, 10, "iid", np.random.default_rng(0))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    everything = np.concatenate(parts)
    assert np.array_equal(np.sort(everything), np.arange(1003))
    truncated = partition(labels, 10, "iid", np.random.default_rng(0), samples_per_client=30)
    assert [len(p) for p in truncated] == [30] * 10
    assert len(np.unique(np.concatenate(truncated))) == 300


def test_dirichlet_partition_disjoint_nonempty_and_skewed():
    labels = _balanced_labels()
    skewed = partition(labels, 10, "dirichlet", np.random.default_rng(0), beta=0.1)
    everything = np.concatenate(skewed)
    assert len(everything) == len(np.unique(everything)) == len(labels)
    assert all(len(p) > 0 for p in skewed)
    iid = partition(labels, 10, "iid", np.random.default_rng(0))
    assert _mean_max_class_fraction(labels, skewed) > 0.5
    assert _mean_max_class_fraction(labels, iid) < 0.3
    capped = partition(labels, 10, "dirichlet", np.random.default_rng(0), beta=0.1, samples_per_client=100)
    assert all(0 < len(p) <= 100 for p in capped)


def test_dirichlet_never_leaves_a_client_empty():
    labels = _balanced_labels(60, classes=3)
    for seed in range(20):
        parts = partition(labels, 30, "dirichlet", np.random.default_rng(seed), beta=0.01)
        assert all(len(p) > 0 for p in parts)
        assert len(np.unique(np.concatenate(parts))) == 60


@pytest.mark.parametrize("scheme", ["paper", "iid", "dirichlet"])
def test_partition_same_seed_same_result(scheme):
    labels = _balanced_labels(500)
    a = partition(labels, 7, scheme, np.random.default_rng(42), beta=0.3)
    b = partition(labels, 7, scheme, np.random.default_rng(42), beta=0.3)
    c = partition(labels, 7, scheme, np.random.default_rng(43), beta=0.3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize(
    "args, kwargs",
    [
        ((0, "iid"), {}),
        ((-2, "paper"), {}),
        ((4, "shards"), {}),
        ((4, "paper"), {"samples_per_client": 101}),
        ((4, "paper"), {"samples_per_client": 0}),
        ((4, "iid"), {"samples_per_client": 26}),
        ((101, "iid"), {}),
        ((4, "dirichlet"), {"beta": 0.0}),
        ((4, "dirichlet"), {"beta": -1.0}),
    ],
)
def test_partition_rejects_bad_input(args, kwargs):
    with pytest.raises(ValueError):
        partition(_balanced_labels(100), *args, np.random.default_rng(0), **kwargs)
