"""Getting the data sets: `engine data get` / get_dataset downloads with torchvision's checksums into
torchvision's layout, from a mirror on loopback; a corrupted file is refused; without a network one
line says where the files go; what was downloaded (or put there by hand) then trains."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import data
from engine.cli import main
from engine.data import available, get_dataset, load_dataset, locate, train_size
from engine.download import DownloadError
from tests.engine.datasets_support import (  # noqa: F401 (fixtures)
    CIFAR_FILES,
    CIFAR_NAMES,
    FASHION_FILES,
    cifar_md5s,
    closed_port,
    fashion_md5s,
    fresh_host,
    loopback_only,
    mirror,
    tiny_cifar,
    tiny_fashion,
)

ROOT = Path(__file__).resolve().parents[2]
ONE_ROUND = ["--clients", "3", "--rounds", "1", "--batch-size", "8", "--eval-every", "1",
             "--set", "data.eval_subset=16"]


def serve_fashion(mirror, fashion_md5s, **kwargs):
    ds = tiny_fashion(**kwargs)
    for name, payload in ds.gz.items():
        mirror.put(name, payload)
    fashion_md5s(ds)
    return ds


def test_get_fashion_mnist_downloads_into_torchvisions_layout_and_the_download_trains(
        fresh_host, mirror, fashion_md5s, capsys):
    ds = serve_fashion(mirror, fashion_md5s)
    assert not available("fashion-mnist")
    seen = []
    folder = get_dataset("fashion-mnist", progress=lambda done, total: seen.append((done, total)), mirror=mirror.url)
    assert folder == (fresh_host / "data").resolve()
    raw = folder / "FashionMNIST" / "raw"
    for name in FASHION_FILES:  # torchvision reads the unpacked files; the archives stay beside them
        assert (raw / name).is_file() and (raw / f"{name}.gz").is_file()
    assert not list(raw.glob("*.part"))
    size = sum(len(p) for p in ds.gz.values())
    assert seen[-1] == (size, size)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and all(t == size for _, t in seen)
    assert available("fashion-mnist") and locate("fashion-mnist") == folder
    assert train_size("fashion-mnist") == 60  # read from the label file's header, not assumed

    loaded = load_dataset("fashion-mnist")
    assert loaded.train_x.shape == (60, 1, 28, 28) and loaded.test_x.shape == (20, 1, 28, 28)
    assert torch.equal(loaded.train_x[:, 0], torch.from_numpy(ds.train_x.astype(np.float32)) / 255)
    assert loaded.train_y.tolist() == ds.train_y.tolist()

    assert main(["run", "--dataset", "fashion-mnist", *ONE_ROUND]) == 0
    assert "final test accuracy" in capsys.readouterr().out


def test_engine_data_get_shows_progress_then_where_the_data_is_and_data_list_agrees(
        fresh_host, mirror, fashion_md5s, capsys):
    serve_fashion(mirror, fashion_md5s)
    assert main(["data", "list"]) == 0
    before = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("fashion-mnist "))
    assert before.split()[1] == "no" and "python -m engine data get fashion-mnist" in before
    assert str(fresh_host.resolve() / "data") in before  # where a download would go

    assert main(["data", "get", "fashion-mnist", "--mirror", mirror.url]) == 0
    out, err = capsys.readouterr()
    assert out == f"Fashion-MNIST is here: {fresh_host.resolve() / 'data'}\n"
    assert err.splitlines()[-1].startswith("Fashion-MNIST: ") and err.splitlines()[-1].endswith("(100%)")

    assert main(["data", "list"]) == 0
    after = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("fashion-mnist "))
    assert after.split()[:3] == ["fashion-mnist", "yes", "60"] and after.endswith(str(fresh_host.resolve() / "data"))
    assert main(["data", "get", "fashion-mnist", "--mirror", mirror.url]) == 0
    assert capsys.readouterr().out == f"Fashion-MNIST is already here: {fresh_host.resolve() / 'data'}\n"


def test_a_file_that_does_not_match_its_checksum_is_refused_and_not_kept(fresh_host, mirror, fashion_md5s, capsys):
    ds = serve_fashion(mirror, fashion_md5s)
    corrupted = bytearray(ds.gz["train-images-idx3-ubyte.gz"])
    corrupted[len(corrupted) // 2] ^= 0xFF
    mirror.put("train-images-idx3-ubyte.gz", bytes(corrupted))
    with pytest.raises(DownloadError) as info:
        get_dataset("fashion-mnist", mirror=mirror.url)
    assert not info.value.offline
    assert "train-images-idx3-ubyte.gz" in str(info.value) and "does not match its checksum" in str(info.value)
    raw = fresh_host / "data" / "FashionMNIST" / "raw"
    assert not (raw / "train-images-idx3-ubyte.gz").exists() and not list(raw.glob("*.part"))
    assert not available("fashion-mnist")

    assert main(["data", "get", "fashion-mnist", "--mirror", mirror.url]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("error: train-images-idx3-ubyte.gz from http://127.0.0.1:")
    assert "does not match its checksum" in err[-1] and "Traceback" not in "\n".join(err)


def test_without_a_network_one_line_says_where_to_put_the_files_and_they_then_load(
        fresh_host, loopback_only, fashion_md5s, capsys):
    nowhere = f"http://127.0.0.1:{closed_port()}/"
    assert main(["data", "get", "fashion-mnist", "--mirror", nowhere]) == 1
    out, err = capsys.readouterr()
    raw = fresh_host.resolve() / "data" / "FashionMNIST" / "raw"
    assert out == "" and err.count("\n") == 1 and err.startswith("error: could not download ")
    assert f"in {raw}/" in err and "train-images-idx3-ubyte.gz" in err and "t10k-labels-idx1-ubyte.gz" in err
    assert not (fresh_host / "data").exists()  # nothing half made

    ds = tiny_fashion(train=40, test=10, seed=3)  # the user puts the archives where the line said
    fashion_md5s(ds)
    ds.write_gz(raw)
    assert available("fashion-mnist")
    loaded = load_dataset("fashion-mnist")  # unpacked on first use, as torchvision lays it out
    assert loaded.train_x.shape == (40, 1, 28, 28) and (raw / "train-images-idx3-ubyte").is_file()


def test_offline_from_a_real_process_is_one_line_exit_1_and_no_traceback(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "SPLITLAB_DATA": str(tmp_path / "data"),
           "SPLITLAB_DATA_MIRROR": f"http://127.0.0.1:{closed_port()}/"}
    proc = subprocess.run([sys.executable, "-m", "engine", "data", "get", "cifar10"], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: could not download http://127.0.0.1:")
    assert f"put cifar-10-python.tar.gz (from https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz) in " \
           f"{tmp_path / 'data'}/" in proc.stderr


def test_get_cifar10_downloads_checks_unpacks_and_trains(fresh_host, mirror, cifar_md5s, capsys, tmp_path):
    ds = tiny_cifar(per_file=4)
    cifar_md5s(ds)
    mirror.put("cifar-10-python.tar.gz", ds.tar_gz())
    target = tmp_path / "chosen"
    assert get_dataset("cifar10", target, mirror=mirror.url) == target.resolve()
    for name in [*CIFAR_FILES, "batches.meta"]:
        assert (target / "cifar-10-batches-py" / name).is_file()
    assert not (target / "cifar-10-python.tar.gz").exists()  # unpacked, the archive is not kept
    loaded = load_dataset("cifar10", target)
    assert loaded.train_x.shape == (20, 3, 32, 32) and loaded.classes == tuple(CIFAR_NAMES)
    assert train_size("cifar10", target) == 20
    assert main(["run", "--dataset", "cifar10", "--data-dir", str(target), *ONE_ROUND]) == 0


def test_a_corrupted_cifar10_archive_is_refused(fresh_host, mirror, cifar_md5s):
    ds = tiny_cifar(per_file=2)
    cifar_md5s(ds)
    mirror.put("cifar-10-python.tar.gz", ds.tar_gz()[:-10])
    with pytest.raises(DownloadError, match="cifar-10-python.tar.gz from .* does not match its checksum"):
        get_dataset("cifar10", mirror=mirror.url)
    assert not available("cifar10") and not (fresh_host / "data" / "cifar-10-batches-py").exists()


def test_the_mirror_can_come_from_the_environment(fresh_host, mirror, fashion_md5s, monkeypatch):
    serve_fashion(mirror, fashion_md5s)
    monkeypatch.setenv(data.MIRROR_ENV_VAR, mirror.url)
    assert get_dataset("fashion-mnist") == (fresh_host / "data").resolve()


def test_a_tiny_cifar10_in_its_pickle_layout_loads_and_trains_a_round(fresh_host, cifar_md5s, tmp_path, capsys):
    ds = tiny_cifar(per_file=3, seed=5)
    cifar_md5s(ds)
    ds.write(tmp_path / "c")
    loaded = load_dataset("cifar10", tmp_path / "c")
    expected = np.concatenate([ds.pixels[n] for n in CIFAR_FILES[:5]]).reshape(-1, 3, 32, 32)
    assert torch.equal(loaded.train_x, torch.from_numpy(expected.astype(np.float32)) / 255)
    assert loaded.train_y.tolist() == sum((ds.labels[n] for n in CIFAR_FILES[:5]), [])
    assert main(["run", "--dataset", "cifar10", "--data-dir", str(tmp_path / "c"), *ONE_ROUND]) == 0
    assert "final test accuracy" in capsys.readouterr().out


def test_built_in_data_sets_have_nothing_to_download(fresh_host, capsys):
    assert data.DOWNLOADABLE == ("fashion-mnist", "cifar10")
    for name in ("digits", "synthetic"):
        assert available(name)
        with pytest.raises(ValueError, match="nothing to download"):
            get_dataset(name)
    assert main(["data", "get", "digits"]) == 0
    assert capsys.readouterr().out == "digits is built in (scikit-learn's 8x8 digits): there is nothing to download\n"
    assert main(["data", "get", "mnist"]) == 2
    assert "unknown data set 'mnist'" in capsys.readouterr().err


def test_known_sizes_are_the_sizes_loaded():
    for name in ("digits", "synthetic"):
        loaded = load_dataset(name)
        info = data.DATASET_INFO[name]
        assert (len(loaded.train_y), len(loaded.test_y)) == (info.train_size, info.test_size) == \
               (train_size(name), info.test_size)


def test_the_not_found_error_says_how_to_get_the_data(fresh_host):
    with pytest.raises(data.DatasetNotFound) as info:
        load_dataset("fashion-mnist")
    message = str(info.value)
    assert "python -m engine data get fashion-mnist" in message and "Get button" in message
    assert "download=True" not in message and str((fresh_host / "data").resolve()) in message


@pytest.mark.parametrize("scheme", ["paper", "iid", "dirichlet"])
def test_partition_refuses_exactly_what_partition_problems_reports(scheme):
    labels = np.arange(50) % 10
    for clients in (1, 7, 50, 51):
        for spc in (None, 0, 1, 7, 8, 50, 51):
            problems = data.partition_problems(len(labels), clients, scheme, spc)
            try:
                data.partition(labels, clients, scheme, np.random.default_rng(0), samples_per_client=spc)
            except ValueError as err:
                assert problems, (clients, spc, str(err))
            else:
                assert not problems, (clients, spc, problems)



def test_a_bad_archive_put_there_by_hand_is_named_and_not_unpacked(fresh_host, loopback_only, fashion_md5s, capsys):
    ds = tiny_fashion()
    fashion_md5s(ds)
    raw = fresh_host / "data" / "FashionMNIST" / "raw"
    ds.write_gz(raw)
    (raw / "train-images-idx3-ubyte.gz").write_bytes(ds.gz["train-images-idx3-ubyte.gz"][:-5])  # cut short
    assert main(["data", "get", "fashion-mnist"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train-images-idx3-ubyte.gz is missing or does not match its checksum: " \
                                      "remove it, then get the data set again" in err
    assert not (raw / "train-images-idx3-ubyte").exists()
    with pytest.raises(data.DatasetNotFound, match="could not be read"):
        load_dataset("fashion-mnist")
