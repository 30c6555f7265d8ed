"""`reproduce latency`: the paper's Fig. 8 claims checked on the Table 4 model, and accuracy against
simulated time from recorded uploads."""

from __future__ import annotations

import pytest

import engine.studies.reproduce as rep
from engine.cli import main
from engine.models import split_lenet5
from engine.studies.latency_study import (
    FIG9_ROWS,
    fig8_claims,
    fig8_rows,
    fig9_runs,
    lenet_sizes,
    ranges,
    simulated_curves,
    write_latency_study,
)


def test_sizes_come_from_the_model_at_the_cut():
    cifar, fmnist = lenet_sizes("cifar10"), lenet_sizes("fashion-mnist")
    assert cifar.smashed == fmnist.smashed == 64 * 6 * 14 * 14
    assert cifar.lower == sum(p.numel() for p in split_lenet5((3, 32, 32), 10, 1)[0].parameters()) == 3 * 6 * 25 + 6
    assert fmnist.lower == 1 * 6 * 25 + 6 and cifar.aux > fmnist.aux > 0


def test_the_worst_case_claim_fails_exactly_where_table_4_ties_it_with_locsplitfed():
    sizes = lenet_sizes("fashion-mnist")
    full = {c.text[:30]: c for c in fig8_claims(fig8_rows(sizes, range(1, 101), 10_000))}
    worst = full["10:1: LocFedMix-SL's worst cas"]
    assert not worst.holds and "not below LocSplitFed at n = 10–100" in worst.evidence
    assert all(c.holds for k, c in full.items() if "best case" in c.text)
    # Below n = T_comp / T_comm = 10, LocSplitFed waits for its compute, so the worst case is faster.
    small = {c.text[:30]: c for c in fig8_claims(fig8_rows(sizes, range(3, 10), 10_000))}
    assert small["10:1: LocFedMix-SL's worst cas"].holds


def test_ranges_compress_runs_of_numbers():
    assert ranges([12, 2, 10, 11, 14]) == "2, 10–12, 14"
    assert ranges([5]) == "5"


@pytest.fixture(scope="module")
def table3_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    study = rep.study_dir(out, "table3", "digits", 3)
    (study / "runs").mkdir(parents=True)
    arms = {a.paper_row: a for a in rep.table3_arms() if a.paper_row}
    for row in FIG9_ROWS:
        rep.run_in_process(rep.study_config(arms[row], 3, "digits", 3, 0, "demo"),
                           study / "runs" / f"row{row}_n3_s0.json")
    return out, study


def test_simulated_time_is_compute_plus_recorded_uploads(table3_runs):
    _, study = table3_runs
    sizes = lenet_sizes("digits")
    curves = simulated_curves(fig9_runs(study, 3, 0), sizes, (1, 1))
    assert set(curves) == set(FIG9_ROWS.values())
    runs = {label: rep.load_results(study)[f"row{row}_n3_s0"] for row, label in FIG9_ROWS.items()}
    for label, c in curves.items():
        s = runs[label]["summary"]
        compute = 3 * (3 if label == "Vanilla SL" else 1)  # rounds x T_comp (n steps a round when sequential)
        assert c["total_time"] == pytest.approx(compute + s["bytes_up"] / (sizes.smashed * 4))
    # LocFedMix-SL uploads its aux network every round (T_c = 1) on top of SplitFed's traffic.
    assert curves["LocFedMix-SL"]["total_time"] > curves["SplitFed"]["total_time"]


def test_latency_study_writes_figures_and_the_claims_table(table3_runs, capsys):
    out_dir, study = table3_runs
    out = write_latency_study(str(out_dir), "digits", study, 3)
    text = (out / "latency.md").read_text()
    assert "| yes |" in text and "| **no** |" in text
    assert all(label in text for label in FIG9_ROWS.values())
    assert (out / "fig8.png").stat().st_size > 1000 and (out / "fig9_n3.png").exists()
    assert main(["reproduce", "latency", "--dataset", "digits", "--rounds", "3", "--clients", "3",
                 "--out-dir", str(out_dir)]) == 0
    assert main(["reproduce", "latency", "--dataset", "digits", "--rounds", "4", "--clients", "3",
                 "--out-dir", str(out_dir)]) == 2
    assert "run `python -m engine reproduce table3` first" in capsys.readouterr().err
