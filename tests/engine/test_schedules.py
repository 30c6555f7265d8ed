"""The schedules are one file each, registered by name: every schedule a config can name is
registered, the trainer runs the one its config names, and a name that is not one says which are."""

from __future__ import annotations

import dataclasses
from typing import get_args

import pytest

from engine.config import RunConfig, validate_config
from engine.schedules import REGISTRY, get
from engine.trainer import Trainer
from tests.helpers import tiny_dataset


def test_every_schedule_a_config_can_name_is_registered_from_its_own_file():
    names = set(get_args(RunConfig.model_fields["schedule"].annotation))
    assert set(REGISTRY) == names == {"parallel", "sequential", "splitfed_v1", "splitfed_v2"}
    assert {get(name).run_round.__module__ for name in names} == {f"engine.schedules.{name}" for name in names}
    # the lockstep schedules say which clients each step serves (the networked server replays them)
    assert get("parallel").steps([0, 2, 3]) == [[0, 2, 3]] and get("parallel").steps([]) == []
    assert get("sequential").steps([0, 2, 3]) == [[0], [2], [3]]


@pytest.mark.parametrize("name", ["parallel", "sequential", "splitfed_v2"])
def test_the_trainer_runs_the_schedule_its_config_names(name, monkeypatch):
    cfg = validate_config({"num_clients": 2, "rounds": 2, "eval_every": 2, "batch_size": 4, "schedule": name,
                           "data": {"dataset": "synthetic", "eval_subset": 16}})
    trainer = Trainer(cfg, tiny_dataset())
    assert trainer.schedule is get(name)
    ran = []

    def recording(state):
        ran.append(state.round)
        return get(name).run_round(state)

    monkeypatch.setattr(trainer, "schedule", dataclasses.replace(trainer.schedule, run_round=recording))
    trainer.run()
    assert ran == [0, 1]


def test_a_name_that_is_no_schedule_says_which_are():
    with pytest.raises(ValueError, match="no schedule is called 'lockstep'; there are parallel, sequential, "
                                        "splitfed_v1, splitfed_v2"):
        get("lockstep")
