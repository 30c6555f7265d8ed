"""Can this run here? One answer for the New run form, the Sweep tab, ``engine run`` and ``engine submit``.

:func:`run_problems` returns every problem of a config before anything is queued or trained: the
config's own ranges (:func:`engine.config.config_problems`) and, when those hold, what depends on this
host and its data: the data set being here, items per client and the number of clients against the
training samples the data set has (the limits of :func:`engine.data.partition_problems`, judged from
sizes known without loading the data), and the torch device. Each problem names its config field, so
a form or a CLI shows it in its own words with ``problem.text(labels)``.
"""

from __future__ import annotations

import os
from typing import Any

from engine.config import ConfigProblem, RunConfig, config_problems
from engine.data import (
    DATASET_INFO,
    available,
    data_dir_candidates,
    partition_problems,
    resolve_samples_per_client,
    train_size,
)

# partition_problems' arguments -> the config fields they come from
_PARTITION_FIELDS = {"num_clients": "num_clients", "samples_per_client": "data.samples_per_client",
                     "beta": "data.dirichlet_beta", "scheme": "data.partition"}


def run_problems(data: dict[str, Any], data_dir: str | os.PathLike | None = None) -> list[ConfigProblem]:
    """Every reason the run ``data`` (a nested config dict) would be refused or fail at start on this
    host; empty when it can run. ``data_dir``: the folder searched first for the data set (default:
    the config's ``data.data_dir``), then ``$SPLITLAB_DATA``, ``./data`` and ``../shared/data``."""
    problems = config_problems(data)
    if problems:
        return problems
    cfg = RunConfig.model_validate(data)
    folder = data_dir if data_dir is not None else cfg.data.data_dir
    return data_problems(cfg, folder) + device_problems(cfg.device)


def data_problems(cfg: RunConfig, data_dir: str | os.PathLike | None = None) -> list[ConfigProblem]:
    """The data set is here (or will be downloaded), and the partition fits its training samples."""
    name, info = cfg.data.dataset, DATASET_INFO[cfg.data.dataset]
    problems = []
    if not available(name, data_dir) and not cfg.data.download:
        folders = ", ".join(str(f) for f in data_dir_candidates(data_dir))
        problems.append(ConfigProblem("data.dataset", (
            f"must be a data set this host has: {info.title} is in none of its data folders ({folders}). Get it "
            f"with `python -m engine data get {name}` or the Get button beside the data set on New run, or "
            f"choose digits, which is built in")))
    try:
        size = train_size(name, data_dir)  # a data set that is not here counts as its distribution
    except (OSError, RuntimeError, ValueError) as err:  # files here, but not readable (DatasetNotFound says why)
        return [*problems, ConfigProblem("data.dataset", f"must be a data set this host can read: {err}")]
    m = resolve_samples_per_client(name, cfg.data.partition, cfg.data.samples_per_client, size)
    found = partition_problems(size, cfg.num_clients, cfg.data.partition, m, cfg.data.dirichlet_beta,
                               data_name=info.title)
    return problems + [ConfigProblem(_PARTITION_FIELDS[arg], message) for arg, message in found]


def device_problems(device: str) -> list[ConfigProblem]:
    """The torch device exists on this host (the trainer refuses a CUDA device it cannot find)."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        return [ConfigProblem("device", f"must be a torch device such as cpu, cuda or cuda:0, got {device!r}")]
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            return [ConfigProblem("device", f"must be a device this host has: it has no CUDA device "
                                            f"(torch {torch.__version__}), got {device!r}; use cpu")]
        if parsed.index is not None and parsed.index >= count:
            gpus = f"{count} CUDA device{'s' if count != 1 else ''}"
            return [ConfigProblem("device", f"must be a device this host has: it has {gpus} (cuda:0"
                                            f"{f' to cuda:{count - 1}' if count > 1 else ''}), got {device!r}")]
    elif parsed.type != "cpu":
        return [ConfigProblem("device", f"must be cpu or a CUDA device (cuda, cuda:0, ...), got {device!r}")]
    return []

