"""Small data sets in torchvision's layouts, written by the tests, and a mirror on loopback that serves them.

No test reaches the internet: :func:`loopback_only` refuses any connection to another host, and the
mirror is a ``http.server`` on 127.0.0.1 serving a folder the test fills.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import pickle
import socket
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from engine import data
from engine.tv_compat import import_torchvision

FASHION_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte")
CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def md5(payload: bytes) -> str:
    return hashlib.md5(payload).hexdigest()


# --------------------------------------------------------------------------- Fashion-MNIST


def idx_images(pixels: np.ndarray) -> bytes:
    """uint8 images [N, 28, 28] as an IDX3 file (magic 2051, count, rows, columns, pixels)."""
    n, rows, cols = pixels.shape
    header = b"".join(v.to_bytes(4, "big") for v in (0x803, n, rows, cols))
    return header + pixels.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    """uint8 labels [N] as an IDX1 file (magic 2049, count, labels)."""
    return (0x801).to_bytes(4, "big") + len(labels).to_bytes(4, "big") + labels.astype(np.uint8).tobytes()


@dataclass
class TinyFashion:
    """A cut-down Fashion-MNIST: the gzipped distribution files (name -> bytes) and what they hold."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    gz: dict[str, bytes] = field(default_factory=dict)

    def resources(self) -> list[tuple[str, str]]:
        """torchvision's FashionMNIST.resources for these files: (file name, md5 of its bytes)."""
        return [(name, md5(payload)) for name, payload in self.gz.items()]

    def write_gz(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name, payload in self.gz.items():
            (folder / name).write_bytes(payload)


def tiny_fashion(train: int = 60, test: int = 20, seed: int = 0) -> TinyFashion:
    rng = np.random.default_rng(seed)
    ds = TinyFashion(rng.integers(0, 256, (train, 28, 28), dtype=np.uint8), rng.integers(0, 10, train),
                     rng.integers(0, 256, (test, 28, 28), dtype=np.uint8), rng.integers(0, 10, test))
    raw = {"train-images-idx3-ubyte": idx_images(ds.train_x), "train-labels-idx1-ubyte": idx_labels(ds.train_y),
           "t10k-images-idx3-ubyte": idx_images(ds.test_x), "t10k-labels-idx1-ubyte": idx_labels(ds.test_y)}
    ds.gz = {f"{name}.gz": gzip.compress(payload, mtime=0) for name, payload in raw.items()}
    return ds


@pytest.fixture
def fashion_md5s(monkeypatch):
    """Make torchvision's FashionMNIST expect the md5s of a given tiny copy (its own checksum table)."""
    fashion = import_torchvision().datasets.FashionMNIST

    def accept(ds: TinyFashion) -> None:
        monkeypatch.setattr(fashion, "resources", ds.resources())

    return accept


# --------------------------------------------------------------------------- CIFAR-10


@dataclass
class TinyCifar:
    """A cut-down CIFAR-10: file name -> pickled bytes, as in cifar-10-batches-py/."""

    files: dict[str, bytes]
    pixels: dict[str, np.ndarray]
    labels: dict[str, list[int]]

    def write(self, root: Path) -> Path:
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        for name, payload in self.files.items():
            (folder / name).write_bytes(payload)
        return folder

    def tar_gz(self) -> bytes:
        """The distribution's archive: cifar-10-batches-py/<file> for every file, gzipped tar."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for name, payload in self.files.items():
                info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
        return buf.getvalue()


def tiny_cifar(per_file: int = 4, seed: int = 0) -> TinyCifar:
    rng = np.random.default_rng(seed)
    files, pixels, labels = {}, {}, {}
    for name in CIFAR_FILES:
        pixels[name] = rng.integers(0, 256, size=(per_file, 3072), dtype=np.uint8)
        labels[name] = rng.integers(0, 10, size=per_file).tolist()
        files[name] = pickle.dumps({"data": pixels[name], "labels": labels[name]})
    files["batches.meta"] = pickle.dumps({"label_names": CIFAR_NAMES})
    return TinyCifar(files, pixels, labels)


@pytest.fixture
def cifar_md5s(monkeypatch):
    """Make torchvision's CIFAR10 expect the md5s of a given tiny copy (and of its archive)."""
    cifar10 = import_torchvision().datasets.CIFAR10

    def accept(ds: TinyCifar) -> None:
        monkeypatch.setattr(cifar10, "train_list", [[n, md5(ds.files[n])] for n in CIFAR_FILES[:5]])
        monkeypatch.setattr(cifar10, "test_list", [["test_batch", md5(ds.files["test_batch"])]])
        monkeypatch.setattr(cifar10, "meta", {**cifar10.meta, "md5": md5(ds.files["batches.meta"])})
        monkeypatch.setattr(cifar10, "tgz_md5", md5(ds.tar_gz()))

    return accept


# --------------------------------------------------------------------------- folders and the mirror


@pytest.fixture
def fresh_host(tmp_path, monkeypatch) -> Path:
    """A host with no data: cwd an empty folder, no SPLITLAB_DATA, no ../shared/data; returns cwd.
    The first data folder, where downloads go, is then <cwd>/data."""
    cwd = tmp_path / "clone"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv(data.DATA_ENV_VAR, raising=False)
    monkeypatch.delenv(data.MIRROR_ENV_VAR, raising=False)
    monkeypatch.setattr(data, "_SHARED_DATA", tmp_path / "no-shared-data")
    data.clear_cache()
    yield cwd
    data.clear_cache()


@pytest.fixture
def loopback_only(monkeypatch):
    """Any connection to a host other than 127.0.0.1 fails the test."""
    real = socket.create_connection

    def guarded(address, *args, **kwargs):
        assert address[0] in ("127.0.0.1", "localhost"), f"a test tried to reach {address[0]}"
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", guarded)


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@dataclass
class Mirror:
    """A folder served over HTTP on 127.0.0.1; ``url`` is its base address."""

    folder: Path
    url: str

    def put(self, name: str, payload: bytes) -> None:
        (self.folder / name).write_bytes(payload)


@pytest.fixture
def mirror(tmp_path, loopback_only) -> Iterator[Mirror]:
    folder = tmp_path / "mirror"
    folder.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Mirror(folder, f"http://127.0.0.1:{server.server_address[1]}/")
    server.shutdown()
    server.server_close()


def closed_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
