"""LeNet-5 split at each cut layer, and the auxiliary networks' shapes."""

import pytest
import torch

from engine.config import validate_config
from engine.models import ClassifierHead, InfoProDecoder, num_params, smashed_shape, split_lenet5
from engine.presets import deep_merge, techniques_to_config
from engine.trainer import Callbacks, Trainer

from tests.helpers import tiny_dataset


@pytest.mark.parametrize("in_shape", [(1, 28, 28), (3, 32, 32)])
@pytest.mark.parametrize("cut, expected", [(1, (6, 14, 14)), (2, (16, 5, 5)), (3, (120,)), (4, (84,))])
def test_lenet5_cut_layers_give_the_paper_shapes(in_shape, cut, expected):
    lower, upper = split_lenet5(in_shape, 10, cut)
    assert smashed_shape(lower, in_shape) == expected
    x = torch.rand(2, *in_shape)
    assert upper(lower(x)).shape == (2, 10)


def test_paper_cut_lower_model_sizes():
    lower, upper = split_lenet5((1, 28, 28), 10, 1)
    assert num_params(lower) == 6 * 25 + 6
    assert num_params(lower) + num_params(upper) == 61_706  # LeNet-5 on 28x28 with padding


@pytest.mark.parametrize("smashed", [(6, 14, 14), (16, 5, 5), (84,)])
def test_aux_networks_fit_any_cut(smashed):
    s = torch.rand(3, *smashed)
    assert InfoProDecoder(smashed, (3, 32, 32))(s).shape == (3, 3, 32, 32)
    assert ClassifierHead(smashed, 10)(s).shape == (3, 10)


def test_moving_the_cut_changes_what_is_sent_up():
    def bytes_up(cut):
        cfg = validate_config(deep_merge(techniques_to_config("1,2"), {
            "num_clients": 2, "batch_size": 4, "rounds": 1, "cut_layer": cut, "data": {"dataset": "synthetic"}}))
        tr = Trainer(cfg, tiny_dataset())
        tr.step(Callbacks())
        return tr.state.ledger.smashed_up

    # 16x16 inputs: 6x6x6 after block 1, 16x1x1 after block 2; plus an 8-byte label per sample
    assert bytes_up(1) == 2 * 4 * (6 * 6 * 6 * 4 + 8)
    assert bytes_up(2) == 2 * 4 * (16 * 4 + 8)
