"""What several studies share: a study's lines (arms), its run files and its CSV tables.

A study (``python -m engine reproduce ...``) is a grid of ordinary runs kept in one folder; every
finished run is ``runs/<key>_n<n>_s<seed>.json`` (the ``run --out`` format).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Arm:
    """One line of a study: a technique combination (with any extra overrides)."""

    key: str
    label: str
    overrides: dict[str, Any]
    paper_row: int | None = None
    leakage: bool = False  # measure privacy leakage (engine.privacy) during the run
    leak_at_end: bool = False  # measure it once, at the end (else every few evaluations and at the end)
    # A control arm: trained only when named in --arms, shown in the tables when its runs exist.
    control: bool = False
    # SplitLr with eta_s = eta * factor at every n (alpha = log(factor) / log(n)): a larger server step alone
    server_lr_factor: float | None = None


def run_name(arm: Arm, n: int, seed: int) -> str:
    return f"{arm.key} n={n} seed={seed}"


def run_key(arm: Arm, n: int, seed: int) -> str:
    """The run's file name (without .json) in ``runs/``."""
    return f"{arm.key}_n{n}_s{seed}"


def load_results(out: Path) -> dict[str, dict]:
    """Finished runs by their key (file name)."""
    results = {p.stem: json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))}
    return {k: r for k, r in results.items() if r["summary"].get("final_test_acc") is not None}


def write_csv(path: Path, rows: list[dict], empty_header: list[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else empty_header)
        writer.writeheader()
        writer.writerows(rows)


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (studies write PNGs; no display is needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
