"""The batched client path (engine.batched) gives the loop's results, and checkpoints move between them.

Each preset is trained for three rounds twice from the same seed, once with ``execution=loop``
and once with ``execution=batched``, and every floating-point entry of every model (the upper
model, each client's lower model and auxiliary network, BatchNorm statistics included) must
agree to 1e-5. The batched path must really have run (its vmapped call is counted).
"""

from __future__ import annotations

import pytest
import torch

from engine import batched
from engine.config import ConfigError, validate_config
from engine.presets import PRESETS, deep_merge, get_preset
from engine.round import run_round
from engine.state import TrainState
from engine.trainer import Callbacks, Trainer
from tests.helpers import tiny_dataset

TOL = 1e-5


def preset_config(name: str, execution: str, optim: dict | None = None, **overrides):
    base = {"num_clients": 4, "batch_size": 8, "rounds": 4, "eval_every": 2, "seed": 5,
            "data": {"dataset": "synthetic", "eval_subset": 16},
            "optim": optim or {"name": "sgd", "lr": 0.05}, "execution": execution}
    return validate_config(deep_merge(deep_merge(base, get_preset(name).overrides()), overrides))


def entries(state: TrainState) -> dict[str, torch.Tensor]:
    """Every floating-point state entry of every model, by a readable name."""
    out = {}
    for label, mods in (("upper", [state.upper]), ("lower", state.lowers), ("aux", state.auxes or [])):
        for i, m in enumerate(mods):
            for key, value in m.state_dict().items():
                if value.is_floating_point():
                    out[f"{label}{i}.{key}"] = value.detach().clone()
    return out


def max_differences(a: TrainState, b: TrainState) -> dict[str, float]:
    ea, eb = entries(a), entries(b)
    assert ea.keys() == eb.keys()
    return {k: float((ea[k] - eb[k]).abs().max()) for k in ea}


def three_rounds(cfg) -> TrainState:
    state = TrainState(cfg, tiny_dataset())
    for _ in range(3):
        run_round(state)
    return state


@pytest.fixture
def vmapped_calls(monkeypatch):
    """Counts the batched path's vmapped calls."""
    calls = []
    real = batched.stacked_call

    def counting(modules, inputs):
        calls.append(len(modules))
        return real(modules, inputs)

    monkeypatch.setattr(batched, "stacked_call", counting)
    monkeypatch.setattr("engine.step.stacked_call", counting)
    monkeypatch.setattr("engine.techniques.local_loss.stacked_call", counting)
    return calls


def serves_clients_together(cfg) -> bool:
    return cfg.schedule == "parallel"


@pytest.mark.parametrize("name", list(PRESETS))
def test_batched_execution_equals_the_loop_for_every_preset(name, vmapped_calls):
    loop = three_rounds(preset_config(name, "loop"))
    assert vmapped_calls == []
    cfg = preset_config(name, "batched")
    fast = three_rounds(cfg)
    if serves_clients_together(cfg):
        # one vmapped call for the lower models per round, one more with an auxiliary network
        per_round = 2 if cfg.local_loss.enabled and cfg.local_loss.kind != "norm" else 1
        assert vmapped_calls == [cfg.num_clients] * (3 * per_round)
    else:  # one client per step: nothing to batch, the loop runs
        assert vmapped_calls == []
    worst = max_differences(loop, fast)
    assert max(worst.values()) <= TOL, {k: v for k, v in worst.items() if v > TOL}


@pytest.mark.parametrize("name", ["locfedmix_sl", "table3_row3", "locsplitfed"])
def test_batched_execution_equals_the_loop_under_adam(name):
    """Under Adam too. One parameter is excluded, with the running mean it feeds: the bias of the
    InfoPro decoder's first convolution sits right before a BatchNorm, so its gradient is zero up to
    rounding, and Adam divides that rounding noise by its own square root into steps of the size of
    the learning rate in either direction. The two paths round differently; the function the
    network computes does not depend on that bias in training."""
    adam = {"name": "adam", "lr": 0.001}
    worst = max_differences(three_rounds(preset_config(name, "loop", adam)),
                            three_rounds(preset_config(name, "batched", adam)))
    noisy = {k for k in worst if k.startswith("aux") and (k.endswith("decode.0.bias") or k.endswith("running_mean"))}
    assert max(v for k, v in worst.items() if k not in noisy) <= TOL


def test_the_comparison_is_sharp():
    """A 1e-4 change of one client's weight is caught: the tolerance is far below a training step."""
    cfg = preset_config("locfedmix_sl", "loop")
    a, b = three_rounds(cfg), three_rounds(cfg)
    with torch.no_grad():
        next(b.lowers[2].parameters()).add_(1e-4)
    assert max(max_differences(a, b).values()) > TOL


@pytest.mark.parametrize("first,then", [("loop", "batched"), ("batched", "loop")])
def test_checkpoints_move_between_the_paths(first, then, tmp_path):
    """Two rounds one way, a checkpoint, two rounds the other way: the same as four rounds the first way."""
    cfg = preset_config("locfedmix_sl", first)
    whole = Trainer(cfg, tiny_dataset())
    for _ in range(4):
        whole.step(Callbacks())
    half = Trainer(cfg, tiny_dataset())
    for _ in range(2):
        half.step(Callbacks())
    half.save_checkpoint(tmp_path / "ck.pt")
    resumed = Trainer.from_checkpoint(tmp_path / "ck.pt", tiny_dataset(), execution=then)
    assert resumed.cfg.execution == then and resumed.state.batched == (then == "batched")
    for _ in range(2):
        resumed.step(Callbacks())
    assert resumed.round == 4
    assert max(max_differences(whole.state, resumed.state).values()) <= TOL
    for a, b in zip(whole.history, resumed.history, strict=True):
        assert a["round"] == b["round"] and a["test_acc"] == pytest.approx(b["test_acc"], abs=1e-6)


def test_auto_execution_loops_on_the_cpu_and_batched_is_a_choice():
    assert not TrainState(preset_config("locfedmix_sl", "auto"), tiny_dataset()).batched
    assert TrainState(preset_config("locfedmix_sl", "batched"), tiny_dataset()).batched
    with pytest.raises(ConfigError, match="execution"):
        preset_config("locfedmix_sl", "vmap")


def test_a_traced_round_keeps_the_loop(vmapped_calls):
    """The walkthrough shows each client's own reconstruction, so a traced step loops."""
    from engine.trace import trace_round

    result = trace_round(preset_config("locfedmix_sl", "batched"), tiny_dataset())
    assert vmapped_calls == []
    assert result is not None
