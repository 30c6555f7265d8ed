"""engine.preflight: one answer to "can this run here?", judged before anything is queued or trained,
with the limits the trainer itself applies, each problem naming its field as the form or the CLI does."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from engine.cli import main
from engine.config import config_problems, deep_merge, validate_config
from engine.preflight import run_problems
from engine.presets import get_profile
from engine.trainer import Trainer
from storage import db as storage_db
from storage.models import Run
from tests.engine.datasets_support import fashion_md5s, fresh_host, tiny_fashion  # noqa: F401 (fixtures)

FORM_WORDS = {"data.samples_per_client": "items per client", "num_clients": "clients n", "data.dataset": "data set",
              "device": "device"}


def config(**overrides) -> dict:
    base = deep_merge(get_profile("demo"), {"rounds": 1, "eval_every": 1, "batch_size": 8, "num_clients": 3,
                                            "data": {"dataset": "digits", "eval_subset": 16}})
    return deep_merge(base, overrides)


def texts(data: dict, **kwargs) -> list[str]:
    return [p.text(FORM_WORDS) for p in run_problems(data, **kwargs)]


def test_items_per_client_beyond_the_data_is_refused_in_the_fields_own_words():
    problems = run_problems(config(data={"samples_per_client": 1_000_000_000}))
    assert [p.field for p in problems] == ["data.samples_per_client"]
    assert problems[0].text(FORM_WORDS) == ("items per client must be at most the 1,437 training samples of digits "
                                            "(each client draws distinct items), got 1,000,000,000")


@pytest.mark.parametrize("overrides, field", [
    ({"data": {"samples_per_client": 1438}}, "data.samples_per_client"),
    ({"data": {"partition": "iid", "samples_per_client": 144}, "num_clients": 10}, "data.samples_per_client"),
    ({"data": {"partition": "iid", "samples_per_client": 1}, "num_clients": 1000, "mixup": {"num_partners": 0}},
     None),
    ({"data": {"dataset": "synthetic", "partition": "iid", "samples_per_client": 205}, "num_clients": 10},
     "data.samples_per_client"),
])
def test_what_preflight_refuses_the_trainer_refuses_and_what_it_passes_the_trainer_builds(overrides, field):
    data = config(**overrides)
    problems = run_problems(data)
    assert [p.field for p in problems] == ([field] if field else [])
    cfg = validate_config(data)
    if field:
        with pytest.raises(ValueError):
            Trainer(cfg)
    else:
        Trainer(cfg)


@pytest.mark.parametrize("overrides", [
    {"data": {"samples_per_client": 1437}},
    {"data": {"partition": "iid", "samples_per_client": 143}, "num_clients": 10},
    {"data": {"dataset": "synthetic", "partition": "iid", "samples_per_client": 204}, "num_clients": 10},
])
def test_the_largest_value_the_data_allows_passes_and_trains(overrides):
    data = config(**overrides)
    assert run_problems(data) == []
    Trainer(validate_config(data))


def test_config_problems_come_first_and_alone():
    data = config(num_clients=0, data={"samples_per_client": 1_000_000_000})
    assert run_problems(data) == config_problems(data) and [p.field for p in run_problems(data)] == ["num_clients"]


def test_a_data_set_that_is_not_here_says_where_it_looked_and_how_to_get_it(fresh_host):
    problems = run_problems(config(data={"dataset": "fashion-mnist"}))
    assert [p.field for p in problems] == ["data.dataset"]
    text = problems[0].text(FORM_WORDS)
    assert text.startswith("data set must be a data set this host has: Fashion-MNIST is in none of its data folders (")
    assert str((fresh_host / "data").resolve()) in text
    assert "`python -m engine data get fashion-mnist`" in text and "Get button" in text
    assert run_problems(config(data={"dataset": "fashion-mnist", "download": True})) == []


def test_a_missing_data_set_is_judged_by_its_known_size_too(fresh_host):
    problems = run_problems(config(data={"dataset": "cifar10", "samples_per_client": 50_001}))
    assert [p.field for p in problems] == ["data.dataset", "data.samples_per_client"]
    assert "at most the 50,000 training samples of CIFAR-10" in problems[1].message


def test_a_cut_down_copy_is_judged_by_the_samples_it_holds(fresh_host, fashion_md5s, tmp_path):
    tiny = tiny_fashion(train=30, test=10)
    fashion_md5s(tiny)
    tiny.write_gz(tmp_path / "d" / "FashionMNIST" / "raw")
    data = config(num_clients=31, data={"dataset": "fashion-mnist", "partition": "iid"})
    assert texts(data, data_dir=tmp_path / "d") == [
        "clients n must be at most the 30 training samples of Fashion-MNIST for the iid partition (disjoint, "
        "non-empty shares), got 31"]
    with_dir = deep_merge(data, {"data": {"data_dir": str(tmp_path / "d")}})
    assert [p.field for p in run_problems(with_dir)] == ["num_clients"]  # the config's own data_dir counts
    with pytest.raises(ValueError):
        Trainer(validate_config(with_dir))
    fits = deep_merge(with_dir, {"num_clients": 30, "mixup": {"num_partners": 0}})
    assert run_problems(fits) == []
    Trainer(validate_config(fits))  # and the paper's default m shrinks to fit the copy:
    assert run_problems(deep_merge(with_dir, {"num_clients": 3, "data": {"partition": "paper"}})) == []


@pytest.mark.parametrize("device, words", [("gpu", "must be a torch device such as cpu, cuda or cuda:0, got 'gpu'"),
                                           ("cuda:7", "must be a device this host has")])
def test_a_device_this_host_lacks_is_refused(device, words):
    import torch

    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this host has a cuda:7")
    assert [p.field for p in run_problems(config(device=device))] == ["device"]
    assert words in run_problems(config(device=device))[0].message


def test_evaluating_less_often_than_the_run_is_long_is_warned_about():
    warned = validate_config(config(rounds=5, eval_every=10)).warnings()
    assert any("evaluating every 10 rounds in a run of 5 rounds" in w for w in warned)
    assert not any("evaluating every" in w for w in validate_config(config(rounds=10, eval_every=10)).warnings())


# ---- the command line ----------------------------------------------------------------------------


def runs_in(url: str) -> int:
    with storage_db.connect(url).read() as session:
        return session.scalar(select(func.count()).select_from(Run))


@pytest.mark.parametrize("command", ["run", "submit"])
def test_run_and_submit_print_every_problem_by_its_flag_exit_2_and_queue_nothing(command, fresh_host, capsys):
    url = f"sqlite:///{fresh_host / 'queue.db'}"
    ok = ["--dataset", "digits", "--clients", "3", "--rounds", "1", "--batch-size", "8", "--eval-every", "1"]
    assert main(["submit", "--db", url, *ok]) == 0  # the database exists, with one run
    capsys.readouterr()
    before = runs_in(url)
    extra = ["--db", url] if command == "submit" else []
    assert main([command, *extra, "--dataset", "cifar10", "--samples-per-client", "60000", "--rounds", "1"]) == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == "" and len(lines) == 2, err
    assert lines[0].startswith("error: --dataset must be a data set this host has: CIFAR-10 is in none of")
    assert lines[1] == ("error: --samples-per-client must be at most the 50,000 training samples of CIFAR-10 "
                        "(each client draws distinct items), got 60,000")
    assert main([command, *extra, "--dataset", "digits", "--set", "data.samples_per_client=1000000000"]) == 2
    assert capsys.readouterr().err.startswith("error: --set data.samples_per_client must be at most the 1,437 ")
    assert runs_in(url) == before


def test_a_message_that_mentions_another_setting_names_its_flag(capsys):
    assert main(["run", "--dataset", "digits", "--eval-every", "2", "--set", "privacy.every=3"]) == 2
    assert capsys.readouterr().err == ("error: --set privacy.every must be a multiple of --eval-every (2): leakage is "
                                       "recorded in the evaluation rows, got 3\n")
