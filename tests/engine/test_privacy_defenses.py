"""``python -m engine reproduce privacy-defenses`` (issue 27, part 4): Parallel SL and LocFedMix-SL at
two cuts, undefended and under each defense at three strengths, leakage measured once at the end; the
report pairs every defended run with the undefended run of its seed."""

from __future__ import annotations

import csv

import pytest

import engine.privacy
from engine.cli import main
from engine.studies import privacy_defenses as pd
from engine.studies import reproduce as rep
from engine.trainer import Trainer


def test_the_grid_is_two_methods_by_two_cuts_by_each_defense_at_three_strengths():
    arms = pd.defense_arms()
    assert len(arms) == 2 * 2 * (1 + 3 * 3) and len({a.key for a in arms}) == len(arms)
    for arm in arms:
        cfg = rep.study_config(arm, 10, "fashion-mnist", 300, 0, "demo")
        on = {k: v for k, v in cfg.defense.model_dump().items() if v}
        base, cut, *rest = arm.key.split("_")
        assert cfg.cut_layer == int(cut.removeprefix("cut"))
        assert cfg.averaging.enabled == (base == "row8") and cfg.mixup.enabled == (base == "row8")
        assert on == ({} if not rest else {d: pytest.approx(float(rest[0].removeprefix(d)))
                                            for d in pd.STRENGTHS if rest[0].startswith(d)})


@pytest.mark.parametrize("rounds,eval_every", [(300, 10), (100, 3), (2, 1), (7, 7)])
def test_leakage_is_measured_once_at_the_end(rounds, eval_every):
    arm = pd.defense_arms()[1]
    cfg = rep.study_config(arm, 4, "digits", rounds, 0, "demo", eval_every=eval_every)
    trainer = Trainer.__new__(Trainer)
    trainer.cfg = cfg
    assert [t for t in range(1, rounds + 1) if trainer.privacy_due(t)] == [rounds]


def row(defense, strength, acc, psnr, floor=13.0, base="parallel", cut=1):
    return {"base": base, "cut": cut, "defense": defense, "strength": strength, "seeds": 1, "acc": acc,
            "acc_std": None, "psnr": psnr, "psnr_std": None, "ssim": 0.5, "dcor": 0.5, "floor": floor,
            "strongest": "blackbox"}


def test_the_pareto_front_keeps_only_the_undominated_lines():
    rows = [row("none", None, 0.85, 30.0), row("noise", 0.5, 0.84, 25.0), row("noise", 2, 0.80, 26.0),
            row("bits", 4, 0.85, 30.0), row("bits", 1, 0.70, 13.0)]
    # noise 2 is beaten by noise 0.5 on both counts; 'bits 4' ties the undefended run, so both stay
    assert pd.pareto(rows) == {0, 1, 3, 4}


def test_decibels_per_point_only_where_the_defense_costs_accuracy_and_lowers_the_psnr():
    assert pd.per_point({**row("noise", 2, 0.8, 20.0), "d_acc": -4.0, "d_psnr": -10.0}) == pytest.approx(2.5)
    assert pd.per_point({**row("noise", 2, 0.8, 20.0), "d_acc": 0.5, "d_psnr": -10.0}) is None
    assert pd.per_point({**row("noise", 2, 0.8, 20.0), "d_acc": -1.0, "d_psnr": 0.3}) is None
    assert pd.per_point({**row("none", None, 0.8, 20.0), "d_acc": 0.0, "d_psnr": 0.0}) is None


def test_the_study_pairs_each_defended_run_with_its_undefended_twin(tmp_path, monkeypatch):
    """Three arms on digits, two seeds, a 10-step attacker: the table's differences are the per-seed
    paired differences of the runs' own summaries; the data-mean floor and the findings come with it."""
    monkeypatch.setattr(engine.privacy, "AttackBudget", lambda steps: engine.privacy.DEFAULT_BUDGET.__class__(10))
    arms = ["parallel_cut1", "parallel_cut1_noise8", "parallel_cut1_bits1"]
    out = rep.reproduce("privacy-defenses", "digits", [2], rounds=2, seeds=[0, 1], profile="demo",
                        out_dir=str(tmp_path), db_url=None, only=arms)
    assert out == tmp_path / "privacy-defenses-digits-T2"
    results = rep.load_results(out)
    assert sorted(results) == sorted(f"{a}_n2_s{s}" for a in arms for s in (0, 1))
    run = results["parallel_cut1_noise8_n2_s1"]
    assert run["config"]["defense"]["noise"] == 8 and run["config"]["privacy"]["every"] == 2
    assert [h["round"] for h in run["history"] if "leak_psnr" in h] == [2]
    with open(out / "table.csv") as f:
        rows = {r["defense"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"none", "noise", "bits"}
    s = {(a, seed): results[f"{a}_n2_s{seed}"]["summary"] for a in arms for seed in (0, 1)}
    d_psnr = [s[("parallel_cut1_noise8", k)]["leak_psnr"] - s[("parallel_cut1", k)]["leak_psnr"] for k in (0, 1)]
    assert float(rows["noise"]["d_psnr"]) == pytest.approx(sum(d_psnr) / 2, abs=1e-6)
    d_acc = [100 * (s[("parallel_cut1_bits1", k)]["final_test_acc"] - s[("parallel_cut1", k)]["final_test_acc"])
             for k in (0, 1)]
    assert float(rows["bits"]["d_acc"]) == pytest.approx(sum(d_acc) / 2, abs=1e-6)
    # the strongest attack is never below the data-mean guess, which the table states as the floor
    for summary in s.values():
        assert summary["leak_psnr"] >= summary["leak_psnr_mean"] - 1e-9
    table = (out / "table.md").read_text()
    assert "**Parallel SL, cut after block 1**" in table and "| Gaussian noise σ = 8 |" in table
    assert "The data-mean floor" in table and "mixup.reduction = sum" in table
    findings = (out / "findings.md").read_text()
    assert "## Parallel SL, cut 1" in findings and "Pareto front:" in findings
    assert "- Gaussian noise σ:" in findings and "- k-bit quantisation:" in findings
    assert (out / "accuracy_vs_leakage.png").stat().st_size > 1000


def test_privacy_defenses_on_the_command_line(tmp_path, capsys):
    assert main(["reproduce", "privacy-defenses", "--dataset", "digits", "--rounds", "2", "--no-train",
                 "--out-dir", str(tmp_path)]) == 2
    assert "no finished runs in" in capsys.readouterr().err
    assert main(["reproduce", "privacy-defenses", "--arms", "row8_cut3", "--out-dir", str(tmp_path)]) == 2
    assert "unknown arm 'row8_cut3'" in capsys.readouterr().err
