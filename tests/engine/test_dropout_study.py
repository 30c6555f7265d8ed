"""``python -m engine reproduce dropout`` (issue 29, part 4): four methods x C in {1, 0.5, 0.2} x p in
{0, 0.1, 0.3}; the report pairs each setting with the same method's everyone-present run."""

from __future__ import annotations

import csv

import pytest

from engine.cli import main
from engine.studies import dropout as dp
from engine.studies import reproduce as rep


def test_the_grid_is_four_methods_at_every_fraction_and_dropout():
    arms = dp.dropout_arms()
    assert len(arms) == 4 * 3 * 3 and len({a.key for a in arms}) == len(arms)
    cfg = rep.study_config(next(a for a in arms if a.key == "row8_c0.2_p0.3"), 20, "fashion-mnist", 300, 0, "demo")
    assert (cfg.participation.fraction, cfg.participation.dropout) == (0.2, 0.3)
    assert cfg.mixup.enabled and cfg.averaging.enabled and cfg.participation.clients(20) == 4
    sglr = rep.study_config(next(a for a in arms if a.key == "sglr_c1_p0"), 20, "fashion-mnist", 300, 0, "demo")
    assert sglr.split_lr.enabled and sglr.split_avg.enabled and not sglr.participation.active


def test_the_study_reports_each_setting_against_everyone_present(tmp_path):
    arms = ["row7_c1_p0", "row7_c0.5_p0.3", "row8_c1_p0", "row8_c0.5_p0.3"]
    out = rep.reproduce("dropout", "digits", [4], rounds=4, seeds=[0, 1], profile="demo", out_dir=str(tmp_path),
                        db_url=None, only=arms, eval_every=2)
    assert out == tmp_path / "dropout-digits-T4"
    results = rep.load_results(out)
    assert sorted(results) == sorted(f"{a}_n4_s{s}" for a in arms for s in (0, 1))
    run = results["row8_c0.5_p0.3_n4_s1"]
    assert run["config"]["participation"]["fraction"] == 0.5 and "clients_present" in run["history"][-1]
    with open(out / "table.csv") as f:
        rows = {(r["method"], r["fraction"], r["dropout"]): r for r in csv.DictReader(f)}
    acc = {(a, s): results[f"{a}_n4_s{s}"]["summary"]["final_test_acc"] for a in arms for s in (0, 1)}
    loss = [100 * (acc[("row7_c0.5_p0.3", s)] - acc[("row7_c1_p0", s)]) for s in (0, 1)]
    assert float(rows[("row7", "0.5", "0.3")]["loss_points"]) == pytest.approx(sum(loss) / 2, abs=1e-6)
    edge = [100 * (acc[("row8_c0.5_p0.3", s)] - acc[("row7_c0.5_p0.3", s)]) for s in (0, 1)]
    table = (out / "table.md").read_text()
    assert f"| row 8 − row 7 | {(sum(e for e in [100 * (acc[('row8_c1_p0', s)] - acc[('row7_c1_p0', s)]) for s in (0, 1)]) / 2):+.1f} | {sum(edge) / 2:+.1f} |" in table
    assert "| LocFedMix-SL (row 8) |" in table and "| SplitFed (row 4) |" not in table  # not trained: no line
    findings = (out / "findings.md").read_text()
    assert "Degrades least:" in findings and "Mixup's edge (row 8 − row 7)" in findings
    assert (out / "accuracy_vs_participation.png").stat().st_size > 1000


def test_reproduce_dropout_on_the_command_line_defaults_to_twenty_clients(tmp_path, capsys):
    assert main(["reproduce", "dropout", "--dataset", "digits", "--rounds", "2", "--no-train",
                 "--out-dir", str(tmp_path)]) == 2
    assert "no finished runs in" in capsys.readouterr().err
    assert main(["reproduce", "dropout", "--arms", "row9_c1_p0", "--out-dir", str(tmp_path)]) == 2
    assert "unknown arm 'row9_c1_p0'" in capsys.readouterr().err
