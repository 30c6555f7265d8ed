"""Learning actually happens on real data (select with -m slow; about a minute on 2 CPU cores)."""

import pytest

from engine.config import validate_config
from engine.data import DatasetNotFound, load_dataset
from engine.presets import PROFILES, deep_merge, get_preset
from engine.trainer import Trainer


@pytest.mark.slow
def test_locfedmix_sl_reaches_75_percent_on_fashion_mnist_within_300_rounds():
    try:
        load_dataset("fashion-mnist")
    except DatasetNotFound as err:
        pytest.skip(f"Fashion-MNIST is not on this machine: {err}")
    cfg = validate_config(deep_merge(deep_merge(PROFILES["demo"], get_preset("locfedmix_sl").overrides()),
                                     {"num_clients": 10, "rounds": 300, "eval_every": 50, "image_every": 0}))
    assert cfg.optim.name == "adam" and cfg.mixup.enabled and cfg.local_loss.average_aux
    result = Trainer(cfg).run()
    assert result["summary"]["final_test_acc"] >= 0.75, result["history"]
    assert result["summary"]["final_clients_evaluated"] == 10
