"""The reproduction command: a resumable grid of runs (seeds, parallel jobs, checkpoints), tables and
plots, in-process or queued."""

from __future__ import annotations

import csv
import json
import threading

import pytest

import engine.studies.reproduce as rep
from engine.cli import main
from engine.presets import without_mixup
from engine.trainer import Callbacks, Trainer
from storage.db import close, connect
from storage.worker import Worker, WorkerOptions


def test_table3_grid_writes_tables_and_plots_and_resumes(tmp_path, monkeypatch):
    out = rep.reproduce("table3", "digits", [3, 4], rounds=2, seeds=[0], profile="demo", out_dir=str(tmp_path),
                        db_url=None)
    assert out == tmp_path / "table3-digits-T2"
    assert len(list((out / "runs").glob("*_s0.json"))) == 16
    table = (out / "table.md").read_text()
    assert table.count("\n| ") >= 8 + 8  # our 8 rows and the paper's 8
    assert "8: 1,2,3,4p,5 (LocFedMix-SL)" in table and "one seed" in table and "±" not in table
    with open(out / "table.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["arm"][:1], r["n"]) for r in rows} == {(str(i), n) for i in range(1, 9) for n in ("3", "4")}
    assert (out / "accuracy_vs_n.png").stat().st_size > 1000 and (out / "curves_n4.png").exists()
    # rows that differ by mixup alone, paired by seed: 5-3, 6-4, 8-7
    with open(out / "mixup_effect.csv") as f:
        effects = {(r["pair"], int(r["n"])): r for r in csv.DictReader(f)}
    assert set(effects) == {(p, n) for p in ("row 5 - row 3", "row 6 - row 4", "row 8 - row 7") for n in (3, 4)}
    results = rep.load_results(out)
    diff = results["row8_n4_s0"]["summary"]["final_test_acc"] - results["row7_n4_s0"]["summary"]["final_test_acc"]
    assert float(effects[("row 8 - row 7", 4)]["final_diff"]) == pytest.approx(diff, abs=1e-4)
    assert f"| row 8 - row 7 | {float(effects[('row 8 - row 7', 3)]['final_diff']) * 100:+.1f} |" in table
    assert "| row 8 - row 7 | +0.2 | +0.3 | +2.3 | +4.3 | +4.3 |" in table  # the paper's: 0.6365 - 0.6348, ...
    monkeypatch.setattr(rep, "run_in_process", lambda cfg, path: pytest.fail(f"{cfg.name} trained twice"))
    rep.reproduce("table3", "digits", [3, 4], 2, [0], "demo", str(tmp_path), None)


def test_seeds_give_mean_and_spread_and_jobs_change_nothing(tmp_path):
    one = rep.reproduce("sglr", "digits", [3], rounds=3, seeds=[0, 1], profile="demo", out_dir=str(tmp_path / "a"),
                        db_url=None, jobs=1)
    two = rep.reproduce("sglr", "digits", [3], rounds=3, seeds=[0, 1], profile="demo", out_dir=str(tmp_path / "b"),
                        db_url=None, jobs=2)
    for path in sorted((one / "runs").glob("*.json")):
        a, b = json.loads(path.read_text()), json.loads((two / "runs" / path.name).read_text())
        assert [h["test_acc"] for h in a["history"]] == [h["test_acc"] for h in b["history"]], path.name
        assert a["summary"]["final_test_acc"] == b["summary"]["final_test_acc"]
    results = rep.load_results(one)
    assert len(results) == 8
    with open(one / "table.csv") as f:
        row = next(r for r in csv.DictReader(f) if r["arm"] == "SGLR: both")
    finals = [results[f"sglr_n3_s{s}"]["summary"]["final_test_acc"] for s in (0, 1)]
    assert row["seeds"] == "2"
    assert float(row["final_test_acc"]) == pytest.approx(sum(finals) / 2, abs=1e-4)
    assert float(row["final_test_acc_std"]) == pytest.approx(abs(finals[0] - finals[1]) / 2 ** 0.5, abs=1e-4)
    last5 = [sum(h["test_acc"] for h in results[f"sglr_n3_s{s}"]["history"][-5:]) / len(
        results[f"sglr_n3_s{s}"]["history"][-5:]) for s in (0, 1)]
    assert float(row["last5_live_acc"]) == pytest.approx(sum(last5) / 2, abs=1e-4)
    assert "mean ± standard deviation over 2 seeds" in (one / "table.md").read_text()
    assert not (one / "mixup_effect.csv").exists()  # SGLR's arms have no mixup pairs


def test_mixup_effects_pair_rows_by_seed_and_skip_unpaired_seeds():
    arms = rep.table3_arms()
    row = {a.paper_row: a for a in arms}

    def run(acc, live):
        return {"summary": {"final_test_acc": acc}, "history": [{"test_acc": live}] * 5}

    results = {rep.run_key(row[8], 10, 0): run(0.80, 0.70), rep.run_key(row[7], 10, 0): run(0.85, 0.72),
               rep.run_key(row[8], 10, 1): run(0.90, 0.75), rep.run_key(row[7], 10, 1): run(0.86, 0.74),
               rep.run_key(row[8], 10, 2): run(0.99, 0.99)}  # seed 2 has no row 7: not a pair
    [effect] = rep.mixup_effects(arms, [10], [0, 1, 2], results)
    assert effect["pair"] == "row 8 - row 7" and effect["seeds"] == 2
    assert effect["final_diff"] == pytest.approx(((0.80 - 0.85) + (0.90 - 0.86)) / 2)
    assert effect["final_diff_per_seed"] == "-0.0500 +0.0400"
    assert effect["last5_live_diff"] == pytest.approx(((0.70 - 0.72) + (0.75 - 0.74)) / 2)
    assert "| row 8 - row 7 | -0.5 (-5.0, +4.0) |" in rep.mixup_effect_table([10], [effect])
    assert without_mixup("1,2,3,4p,5") == "1,2,4p,5" and without_mixup("1,2,3") == "1,2"
    assert without_mixup("1,2,4p,5") is None


def test_an_interrupted_run_resumes_from_its_checkpoint_to_the_same_result(tmp_path):
    arm = rep.sglr_arms()[3]
    cfg = rep.study_config(arm, 3, "digits", 6, 0, "demo")
    whole = Trainer(cfg).run()

    class StopAt3(Callbacks):
        def should_stop(self, trainer):
            return trainer.round == 3

    out = tmp_path / "study" / "runs" / "sglr_n3_s0.json"
    out.parent.mkdir(parents=True)
    cut = Trainer(cfg)
    cut.run(StopAt3())
    cut.save_checkpoint(rep._checkpoint_path(out))
    resumed = rep.run_in_process(cfg, out)
    assert [h["test_acc"] for h in resumed["history"]] == [h["test_acc"] for h in whole["history"]]
    assert resumed["summary"]["final_test_acc"] == whole["summary"]["final_test_acc"]
    assert not rep._checkpoint_path(out).exists() and json.loads(out.read_text())["summary"]["rounds_done"] == 6


def test_a_checkpoint_for_another_config_is_not_used(tmp_path):
    arm = rep.sglr_arms()[0]
    out = tmp_path / "study" / "runs" / "parallel_n3_s0.json"
    out.parent.mkdir(parents=True)
    other = Trainer(rep.study_config(arm, 3, "digits", 4, 1, "demo"))  # seed 1, not 0
    seed1 = other.run()
    other.save_checkpoint(rep._checkpoint_path(out))
    cfg = rep.study_config(arm, 3, "digits", 4, 0, "demo")
    got = [h["test_acc"] for h in rep.run_in_process(cfg, out)["history"]]
    assert got == [h["test_acc"] for h in Trainer(cfg).run()["history"]]
    assert got != [h["test_acc"] for h in seed1["history"]]


def test_a_finished_run_with_another_config_is_refused_not_reused(tmp_path, capsys):
    out = rep.reproduce("sglr", "digits", [3], rounds=2, seeds=[0], profile="demo", out_dir=str(tmp_path), db_url=None)
    path = out / "runs" / "splitlr_n3_s0.json"
    run = json.loads(path.read_text())
    run["config"]["lr"] = 0.5
    path.write_text(json.dumps(run))
    with pytest.raises(rep.StudyMismatch, match="splitlr_n3_s0.json.*differs in lr"):
        rep.reproduce("sglr", "digits", [3], 2, [0], "demo", str(tmp_path), None)
    assert main(["reproduce", "sglr", "--dataset", "digits", "--clients", "3", "--rounds", "2",
                 "--out-dir", str(tmp_path)]) == 2
    assert "different config" in capsys.readouterr().err


def test_attacker_settings_of_a_run_that_never_measured_do_not_make_it_another_run(tmp_path):
    """A run stored before the attacker's defaults changed (privacy.attack_steps 200, no budget) is still
    this study's run when it never measured leakage; a run that measured with another attacker is not."""
    out = rep.reproduce("sglr", "digits", [3], rounds=2, seeds=[0], profile="demo", out_dir=str(tmp_path), db_url=None)
    path = out / "runs" / "splitlr_n3_s0.json"
    run = json.loads(path.read_text())
    assert run["config"]["privacy"]["every"] == 0
    run["config"]["privacy"] = {"every": 0, "attack_steps": 200}
    path.write_text(json.dumps(run))
    before = path.read_text()
    rep.reproduce("sglr", "digits", [3], 2, [0], "demo", str(tmp_path), None, train=False)
    assert path.read_text() == before  # kept, not refused and not retrained
    run["config"]["privacy"] = {"every": 2, "attack_steps": 200}
    path.write_text(json.dumps(run))
    with pytest.raises(rep.StudyMismatch, match="differs in privacy"):
        rep.reproduce("sglr", "digits", [3], 2, [0], "demo", str(tmp_path), None, train=False)


@pytest.mark.parametrize("flags, message", [
    (["--clients", "10,x"], "--clients '10,x'"),
    (["--clients", "1,10"], "at least 2"),
    (["--seeds", "a"], "--seeds 'a'"),
    (["--jobs", "0"], "--jobs must be at least 1"),
    (["--rounds", "0"], "--rounds must be at least 1"),
    (["--arms", "row1,row9"], "unknown arm 'row9'; choose from row1, row2"),
    (["--arms", ","], "(none given)"),
    (["--mixup-reduction", "max"], "invalid choice: 'max'"),
    (["--eval-every", "0"], "--eval-every must be between 1 and --rounds (300)"),
    (["--rounds", "20", "--eval-every", "21"], "--eval-every must be between 1 and --rounds (20)"),
    (["--profile", "splitfed_authors"], "use it with `reproduce splitfed`"),
])
def test_bad_flags_are_one_clear_error(flags, message, capsys, tmp_path):
    assert main(["reproduce", "table3", "--out-dir", str(tmp_path), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err


def test_study_configs_follow_the_paper_where_the_scale_allows():
    cfg = rep.study_config(rep.table3_arms()[7], 20, "fashion-mnist", 300, 0, "demo")
    assert cfg.mixup.enabled and cfg.mixup.num_partners == 10 and cfg.mixup.reduction == "sum"
    assert cfg.local_loss.average_aux and cfg.averaging.enabled and cfg.batch_size == 64


def test_sglr_grid_runs_through_the_queue(tmp_path):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    worker = Worker(connect(url), WorkerOptions(poll=0.1))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        out = rep.reproduce("sglr", "digits", [3], rounds=2, seeds=[0], profile="demo", out_dir=str(tmp_path / "r"),
                            db_url=url)
    finally:
        worker.stop()
        thread.join(timeout=30)
        close(url)
    assert len(list((out / "runs").glob("*.json"))) == 4
    assert "SGLR: both" in (out / "table.md").read_text()


def test_late_gain_says_whether_a_curve_has_flattened():
    flat = [{"test_acc": a} for a in [0.5, 0.7, 0.8, 0.85] + [0.86] * 12]
    rising = [{"test_acc": 0.5 + 0.02 * i} for i in range(16)]
    assert rep.late_gain(flat) == pytest.approx(0.0)
    assert rep.late_gain(rising) == pytest.approx(0.02 * ((13 + 14 + 15) / 3 - (10 + 11 + 12) / 3))


def test_arms_trains_only_those_in_the_given_order_and_tables_keep_the_rest(tmp_path, monkeypatch):
    trained = []
    real = rep.run_in_process
    monkeypatch.setattr(rep, "run_in_process", lambda cfg, path: trained.append(path.stem) or real(cfg, path))
    out = rep.reproduce("sglr", "digits", [3], rounds=2, seeds=[0], profile="demo", out_dir=str(tmp_path),
                        db_url=None, only=["splitlr", "parallel"])
    assert trained == ["splitlr_n3_s0", "parallel_n3_s0"]
    table = (out / "table.md").read_text()
    assert "| SplitAvg phi=0.5 | – |" in table and "| SGLR: both | – |" in table
    assert "| SplitLr alpha=0.5 | –" not in table
    rep.reproduce("sglr", "digits", [3], 2, [0], "demo", str(tmp_path), None, only=["sglr"])
    assert trained[2:] == ["sglr_n3_s0"]
    with open(out / "table.csv") as f:
        assert {r["arm"] for r in csv.DictReader(f)} == {"SplitLr alpha=0.5", "Parallel SL (neither)", "SGLR: both"}


def test_no_train_rewrites_the_tables_from_finished_runs_only(tmp_path, monkeypatch, capsys):
    out = rep.reproduce("sglr", "digits", [3], rounds=2, seeds=[0], profile="demo", out_dir=str(tmp_path),
                        db_url=None, only=["parallel"])
    monkeypatch.setattr(rep, "run_in_process", lambda cfg, path: pytest.fail(f"{cfg.name} trained"))
    assert main(["reproduce", "sglr", "--dataset", "digits", "--clients", "3,4", "--rounds", "2",
                 "--out-dir", str(tmp_path), "--no-train"]) == 0
    assert "1 run done, 7 missing" in capsys.readouterr().err
    table = (out / "table.md").read_text()
    assert "| techniques | n=3 | n=4 |" in table and "| Parallel SL (neither) | **0." in table
    assert "| SGLR: both | – | – |" in table
    assert (out / "curves_n3.png").exists() and not (out / "curves_n4.png").exists()  # n = 4 has no run yet
    assert main(["reproduce", "sglr", "--dataset", "digits", "--rounds", "5", "--out-dir", str(tmp_path),
                 "--no-train"]) == 2
    assert "error: no finished runs in" in capsys.readouterr().err
    assert not (tmp_path / "sglr-digits-T5").exists()


def test_mean_reduction_is_its_own_study_and_weighs_partners_as_one_batch(tmp_path, monkeypatch, capsys):
    row8 = rep.table3_arms()[7]
    sums = rep.study_config(row8, 4, "digits", 2, 0, "demo")
    means = rep.study_config(row8, 4, "digits", 2, 0, "demo", "mean")
    assert (sums.mixup.reduction, means.mixup.reduction, means.mixup.num_partners) == ("sum", "mean", 2)
    # same draws, same first step: the averaged mixup loss is the summed one over n_s = 2
    first_sum, first_mean = (Trainer(c.model_copy(update={"rounds": 1})).run()["history"][-1] for c in (sums, means))
    assert first_mean["train_loss_mixup"] == pytest.approx(first_sum["train_loss_mixup"] / 2, rel=1e-5)
    assert first_mean["train_loss"] == pytest.approx(first_sum["train_loss"], rel=1e-6)

    assert main(["reproduce", "table3", "--dataset", "digits", "--clients", "4", "--rounds", "2", "--arms", "row8",
                 "--mixup-reduction", "mean", "--out-dir", str(tmp_path)]) == 0
    out = tmp_path / "table3-digits-T2-mean"
    stored = json.loads((out / "runs" / "row8_n4_s0.json").read_text())["config"]
    assert stored["mixup"]["reduction"] == "mean" and stored["mixup"]["num_partners"] == 2
    assert "averages their losses" in (out / "table.md").read_text()
    assert not (tmp_path / "table3-digits-T2").exists()  # the paper's sum study is untouched
    # the sum study trains its own row 8; its table says it sums
    capsys.readouterr()
    rep.reproduce("table3", "digits", [4], 2, [0], "demo", str(tmp_path), None, only=["row8"])
    assert "sums their losses, as the paper does" in (tmp_path / "table3-digits-T2" / "table.md").read_text()
    with pytest.raises(ValueError, match="mixup reduction 'max'"):
        rep.reproduce("table3", "digits", [4], 2, [0], "demo", str(tmp_path), None, reduction="max")


def test_privacy_study_measures_leakage_beside_accuracy_and_answers_per_seed(tmp_path, monkeypatch):
    """Four arms of the privacy grid on digits, two seeds: the table, the per-seed findings and the plots
    are computed from the runs' own summaries. The attacker's decoder trains 10 steps here and its
    white-box attacks 20 (the study: up to 2,000 and 300)."""
    import engine.privacy

    tiny = engine.privacy.AttackBudget(10, inversion_steps=20, tv_weights=(0.0, 0.01), tv_images=4)
    monkeypatch.setattr(engine.privacy, "AttackBudget", lambda steps: tiny)
    arms = ["row3_cut1", "parallel_cut1", "row3_cut2", "sglr_cut1"]
    out = rep.reproduce("privacy", "digits", [3], rounds=2, seeds=[0, 1], profile="demo", out_dir=str(tmp_path),
                        db_url=None, only=arms)
    assert out == tmp_path / "privacy-digits-T2"
    results = rep.load_results(out)
    assert sorted(results) == sorted(f"{a}_n3_s{s}" for a in arms for s in (0, 1))
    run = results["row3_cut2_n3_s1"]
    assert run["config"]["cut_layer"] == 2 and run["config"]["privacy"]["every"] == 10
    assert {"leak_ssim", "leak_psnr", "leak_dcor", "leak_mi", "leak_mse"} <= set(run["summary"])
    assert "leak_ssim" in run["history"][-1]  # measured at the end (every 10 rounds > 2 rounds)
    table = (out / "table.md").read_text()
    assert "**Cut after block 1**" in table and "**Cut after block 2**" in table
    assert "| 3: Table 3 row 3 (1,2,4) |" in table and "| SGLR (1,2,splitlr,splitavg) |" in table
    with open(out / "table.csv") as f:
        rows = {(r["arm"], r["cut"]): r for r in csv.DictReader(f)}
    ssim = [results[f"row3_cut1_n3_s{s}"]["summary"]["leak_ssim"] for s in (0, 1)]
    assert float(rows[("row3", "1")]["leak_ssim"]) == pytest.approx(sum(ssim) / 2, abs=1e-4)
    findings = (out / "findings.md").read_text()
    diff = {s: results[f"row3_cut1_n3_s{s}"]["summary"]["leak_ssim"]
            - results[f"parallel_cut1_n3_s{s}"]["summary"]["leak_ssim"] for s in (0, 1)}
    line = next(x for x in findings.splitlines() if x.startswith("| 3: Table 3 row 3 − Parallel SL, cut 1"))
    assert f"seed 0: {diff[0]:+.3f}, seed 1: {diff[1]:+.3f}" in line
    assert f"in {sum(d < 0 for d in diff.values())} of 2 seeds" in line
    assert "| 3: Table 3 row 3: cut 2 − cut 1" in findings and "SGLR − Parallel SL, cut 1" in findings
    assert "SGLR − 4: SplitFed" not in findings  # SplitFed was not trained: no line, not a made-up one
    assert (out / "accuracy_vs_leakage.png").stat().st_size > 1000 and (out / "leakage_over_rounds.png").exists()


def test_reproduce_privacy_on_the_command_line_defaults_to_ten_clients(tmp_path, capsys):
    assert main(["reproduce", "privacy", "--dataset", "digits", "--rounds", "2", "--no-train",
                 "--out-dir", str(tmp_path)]) == 2
    assert "no finished runs in" in capsys.readouterr().err
    assert main(["reproduce", "privacy", "--arms", "row9_cut1", "--out-dir", str(tmp_path)]) == 2
    assert "unknown arm 'row9_cut1'" in capsys.readouterr().err


# ---- paper-length studies: controls, gains read off the same runs, SplitFed at its authors' settings --
def test_the_server_lr_control_raises_only_the_servers_learning_rate_by_its_factor_at_every_n():
    arms = {a.key: a for a in rep.table3_arms()}
    for n in (10, 20):
        control = rep.study_config(arms["row7_slr6"], n, "fashion-mnist", 2000, 0, "paper")
        row7 = rep.study_config(arms["row7"], n, "fashion-mnist", 2000, 0, "paper")
        assert control.server_lr == pytest.approx(6 * control.optim.lr) and row7.server_lr == row7.optim.lr
        differs = {k for k, v in control.model_dump().items() if v != row7.model_dump()[k]}
        assert differs == {"name", "split_lr"}
    # a control is trained only when named, and is no line of the table until it has a run
    assert "row7_slr6" not in [a.key for a in rep.pick_arms(rep.table3_arms(), None)]
    assert [a.key for a in rep.pick_arms(rep.table3_arms(), ["row7_slr6"])] == ["row7_slr6"]


def test_eval_every_is_part_of_the_study_config():
    arm = rep.table3_arms()[7]
    assert rep.study_config(arm, 10, "digits", 10_000, 0, "paper").eval_every == 333
    assert rep.study_config(arm, 10, "digits", 10_000, 0, "paper", eval_every=100).eval_every == 100


def test_gains_are_read_off_the_same_runs_at_each_milestone():
    arms = {a.key: a for a in rep.table3_arms()}

    def run(accs, final):  # an evaluation every 1,000 rounds
        return {"summary": {"final_test_acc": final, "rounds_done": 1000 * len(accs)},
                "history": [{"round": 1000 * (i + 1), "test_acc": a} for i, a in enumerate(accs)]}

    results = {"row8_n10_s0": run([.1, .2, .3, .4, .5, .6, .7, .8, .9, .95], 0.96),
               "row7_n10_s0": run([.1, .1, .1, .2, .2, .3, .4, .5, .6, .7], 0.71),
               "row7_slr6_n10_s0": run([.1, .1, .2, .3, .4, .5, .6, .7, .8, .9], 0.92)}
    gains = rep.gains_by_round(list(arms.values()), [10], [0], results, rep.MILESTONES)
    by = {(g["pair"], g["round"]): g for g in gains}
    assert set(by) == {(p, m) for p in ("row8 - row7", "row7_slr6 - row7") for m in (2000, 5000, 10_000)}
    assert by[("row8 - row7", 2000)]["diff"] == pytest.approx(0.2 - 0.1)
    assert by[("row8 - row7", 5000)]["diff_last5"] == pytest.approx((0.1 + .2 + .3 + .4 + .5) / 5 - (.1 + .1 + .1 + .2 + .2) / 5)
    assert by[("row8 - row7", 10_000)]["diff_final_full_test"] == pytest.approx(0.96 - 0.71)
    assert by[("row8 - row7", 5000)]["diff_final_full_test"] is None
    assert by[("row7_slr6 - row7", 10_000)]["diff"] == pytest.approx(0.9 - 0.7)
    table = rep.gains_table(gains)
    assert "| row8 - row7 | 10 | 10,000 | +25.0 (seed 0) |" in table


def test_splitfed_study_runs_one_local_epoch_at_the_authors_settings(tmp_path):
    v1, v2 = rep.splitfed_arms()
    cfg = rep.study_config(v1, 10, "digits", 3, 0, "splitfed_authors")
    assert (cfg.schedule, cfg.batch_size, cfg.optim.name, cfg.optim.lr) == ("splitfed_v1", 256, "adam", 1e-4)
    assert cfg.data.partition == "iid" and cfg.reset_optimizers
    assert cfg.local_steps == 1  # digits: 1,437 training images / 10 clients = 144 <= 256
    assert rep.study_config(v2, 2, "digits", 3, 0, "splitfed_authors").local_steps == 3  # ceil(719 / 256)
    assert rep.one_local_epoch("fashion-mnist", 10, 256) == 24
    out = rep.reproduce("splitfed", "digits", [3], rounds=2, seeds=[0], profile="splitfed_authors",
                        out_dir=str(tmp_path), db_url=None, eval_every=1)
    assert out == tmp_path / "splitfed-digits-T2-authors-settings"
    with open(out / "table.csv") as f:
        rows = {r["version"][:11]: r for r in csv.DictReader(f)}
    results = rep.load_results(out)
    assert set(rows) == {"SplitFed V1", "SplitFed V2"}
    for key, row in (("v1_n3_s0", rows["SplitFed V1"]), ("v2_n3_s0", rows["SplitFed V2"])):
        history = results[key]["history"]
        assert [h["round"] for h in history] == [1, 2] and all(0 <= h["authors_test_acc"] <= 1 for h in history)
        assert float(row["authors_test_acc"]) == pytest.approx(history[-1]["authors_test_acc"], abs=1e-4)
        assert float(row["final_test_acc"]) == pytest.approx(results[key]["summary"]["final_test_acc"], abs=1e-4)
    assert "the authors' figure" in (out / "table.md").read_text() and (out / "curves_n3.png").exists()
