"""The door for new techniques (issue 28, part 4; docs/extending.md): a technique in one file, with its
own settings (``plugins.<name>``), shows up in ``--techniques``, the presets, the New run form and the
Round walkthrough without any of those files changed.

Two techniques are exercised: the shipped example, cut-layer gradient clipping
(``engine/techniques/clip_grads.py``), and one defined here, in the test, registered and taken out
again around each test that uses it.
"""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import BaseModel, ConfigDict, Field

from engine.cli import main
from engine.config import ConfigError, deep_merge, validate_config
from engine.data import load_dataset
from engine.presets import Preset, get_preset, register_preset, technique_codes, techniques_to_config, unregister_preset
from engine.techniques import Technique, active_techniques, plugin_lines, register, unregister
from engine.techniques.base import StepBatch
from engine.techniques.clip_grads import ClipCutGrads
from engine.trainer import Trainer

TINY = {"num_clients": 3, "rounds": 4, "batch_size": 8, "eval_every": 2, "seed": 3,
        "data": {"dataset": "digits", "eval_subset": 32}, "optim": {"name": "adam", "lr": 0.001}}
TINY_FLAGS = ["--dataset", "digits", "--clients", "3", "--rounds", "4", "--batch-size", "8", "--eval-every", "2",
              "--seed", "3", "--set", "data.eval_subset=32"]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


# ---- a technique defined here ------------------------------------------------------------------
class ScaleSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(False, description="scale the cut-layer gradients")
    factor: float = Field(1.0, ge=0, le=10, description="what every cut-layer gradient is multiplied by")


class ScaleCutGrads(Technique):
    name = "scale_grads"
    code = "scalegrad"
    label = "cut-layer gradient scaling"
    order = 66
    Settings = ScaleSettings
    calls = 0

    def describe(self) -> str:
        return f"every cut-layer gradient is multiplied by {self.settings.factor:g}"

    def cut_grads(self, state, batch, grads, messages):
        type(self).calls += 1
        return grads * self.settings.factor, messages


@pytest.fixture
def scale_grads():
    ScaleCutGrads.calls = 0
    register(ScaleCutGrads)
    yield ScaleCutGrads
    unregister(ScaleCutGrads.name)
    unregister_preset("parallel_sl_scaled")


def run(digits, codes: str, **overrides) -> Trainer:
    trainer = Trainer(validate_config(deep_merge(deep_merge(TINY, techniques_to_config(codes)), overrides)), digits)
    trainer.run()
    return trainer


def lower_params(trainer: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for lower in trainer.state.lowers for p in lower.parameters()]


# ---- the shipped example ---------------------------------------------------------------------------
def test_clipping_scales_each_clients_gradient_to_the_norm_and_leaves_smaller_ones(digits):
    cfg = validate_config(deep_merge(TINY, {"plugins": {"clip": {"enabled": True, "max_norm": 1.0}}}))
    clip = ClipCutGrads(cfg)
    grads = torch.zeros(2, 4, 3)
    grads[0, 0, 0], grads[1, 1, 2] = 2.0, 0.5  # norms 2 and 0.5
    batch = StepBatch([0, 1], torch.zeros(2, 4, 1), grads.flatten(0, 1), torch.zeros(8), torch.ones(2), 1)
    out, messages = clip.cut_grads(None, batch, grads, 2)
    assert messages == 2
    assert out[0].norm() == pytest.approx(1.0) and out[0, 0, 0] == pytest.approx(1.0)
    assert torch.equal(out[1], grads[1])


def test_clipping_that_never_binds_changes_nothing_and_clipping_that_binds_changes_the_run(digits):
    plain = run(digits, "1,2")
    loose = run(digits, "1,2,clip", plugins={"clip": {"max_norm": 1_000_000}})
    tight = run(digits, "1,2,clip", plugins={"clip": {"max_norm": 1e-4}})
    assert [t.name for t in active_techniques(loose.cfg)] == ["clip"]
    assert [r["test_loss"] for r in loose.history] == [r["test_loss"] for r in plain.history]
    assert all(torch.equal(a, b) for a, b in zip(lower_params(loose), lower_params(plain)))
    assert not all(torch.equal(a, b) for a, b in zip(lower_params(tight), lower_params(plain)))


def test_clipping_trains_over_the_network_exactly_as_in_one_process(digits):
    from tests.engine.test_network import assert_same_history, assert_same_models

    torch.set_num_threads(1)
    data = deep_merge(deep_merge(TINY, techniques_to_config("1,2,clip")), {"plugins": {"clip": {"max_norm": 0.01}}})
    reference = Trainer(validate_config(data), digits)
    ref = reference.run()
    networked = Trainer(validate_config({**data, "transport": "process"}), digits)
    assert_same_history(ref["history"], networked.run()["history"])
    assert_same_models(reference, networked)


def test_a_config_without_plugins_dumps_as_before_and_one_with_them_round_trips():
    plain = validate_config(TINY)
    assert "plugins" not in plain.model_dump() and "plugins" not in json.loads(plain.model_dump_json())
    clipped = validate_config({**TINY, "plugins": {"clip": {"enabled": True}}})
    assert clipped.model_dump()["plugins"] == {"clip": {"enabled": True, "max_norm": 1.0}}
    assert validate_config(json.loads(clipped.model_dump_json())) == clipped
    assert clipped.techniques() == ["1", "2", "clip"] and plain.plugin("clip").enabled is False


@pytest.mark.parametrize("section,message", [
    ({"clip": {"max_norm": 0}}, "plugins.clip.max_norm must be greater than 0 and at most 1,000,000, got 0"),
    ({"clip": {"max_norm": "x"}}, "plugins.clip.max_norm must be a number, got 'x'"),
    ({"clip": {"norm": 1}}, "plugins.clip.norm is not a setting SplitLab knows"),
    ({"clap": {"enabled": True}}, "plugins.clap is not a technique that has settings (known: clip)"),
])
def test_a_bad_plugin_setting_is_refused_naming_the_field(section, message):
    with pytest.raises(ConfigError) as err:
        validate_config({**TINY, "plugins": section})
    assert err.value.text() == message


# ---- a technique registered by a test ---------------------------------------------------------------
def test_a_registered_technique_trains_and_its_hook_runs(scale_grads, digits):
    frozen = run(digits, "1,2,scalegrad", plugins={"scale_grads": {"factor": 0.0}})
    assert scale_grads.calls == 4  # one parallel step a round
    start = Trainer(validate_config(deep_merge(TINY, techniques_to_config("1,2"))), digits)
    # no gradient reaches the lower models: under Adam a zero gradient moves nothing
    assert all(torch.equal(a, b) for a, b in zip(lower_params(frozen), lower_params(start)))
    same = run(digits, "1,2,scalegrad")  # factor 1
    plain = run(digits, "1,2")
    assert all(torch.equal(a, b) for a, b in zip(lower_params(same), lower_params(plain)))


def test_a_registered_technique_joins_the_codes_the_command_line_and_the_presets(scale_grads, tmp_path, capsys):
    assert technique_codes()["scalegrad"] == "cut-layer gradient scaling"
    out = tmp_path / "run.json"
    assert main(["run", "--techniques", "1,2,scalegrad", *TINY_FLAGS, "--set", "plugins.scale_grads.factor=0.5",
                 "--out", str(out)]) == 0
    config = json.loads(out.read_text())["config"]
    assert config["plugins"] == {"scale_grads": {"enabled": True, "factor": 0.5}}
    assert scale_grads.calls == 4
    capsys.readouterr()
    assert main(["run", "--techniques", "1,2,scalegrad", *TINY_FLAGS, "--set", "plugins.scale_grads.factor=20"]) == 2
    assert "plugins.scale_grads.factor must be between 0 and 10, got 20" in capsys.readouterr().err
    register_preset(Preset("parallel_sl_scaled", "Parallel SL, gradients halved", "1,2,scalegrad",
                           "Parallel SL with every cut-layer gradient multiplied by 0.5",
                           extra={"plugins": {"scale_grads": {"factor": 0.5}}}, source="tests"))
    assert get_preset("parallel_sl_scaled").overrides()["plugins"] == {"scale_grads": {"enabled": True, "factor": 0.5}}
    assert main(["presets"]) == 0
    assert any(line.startswith("parallel_sl_scaled ") and "1,2,scalegrad" in line
               for line in capsys.readouterr().out.splitlines())
    out2 = tmp_path / "preset.json"
    assert main(["run", "--preset", "parallel_sl_scaled", *TINY_FLAGS, "--out", str(out2)]) == 0
    assert json.loads(out2.read_text())["config"]["plugins"]["scale_grads"]["factor"] == 0.5


def test_the_techniques_flag_names_the_registered_codes(scale_grads, capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "scalegrad (cut-layer gradient scaling)" in capsys.readouterr().out
    assert main(["run", "--techniques", "1,2,nosuch", *TINY_FLAGS]) == 2
    assert "unknown code(s) nosuch" in capsys.readouterr().err


def test_the_walkthrough_says_what_a_registered_technique_does_in_its_step(scale_grads):
    from engine.trace import trace_round
    from pages.walkthrough_steps import purpose, walk, walkthrough_config

    cfg = walkthrough_config("1,2,scalegrad", 3, "digits")
    assert scale_grads.acts_in() == ["grads_down"]
    assert plugin_lines(cfg, "grads_down") == ["cut-layer gradient scaling: every cut-layer gradient is multiplied by 1"]
    res = trace_round(cfg)
    texts = {step.phase: purpose(step, res) for step in walk(res) if step.event is not None}
    assert texts["grads_down"].endswith("Also in this step, cut-layer gradient scaling: every cut-layer gradient "
                                        "is multiplied by 1.")
    assert not any("scaling" in text for phase, text in texts.items() if phase != "grads_down")


def test_the_registry_refuses_a_plugin_it_could_not_show():
    class NoCode(ScaleCutGrads):
        name, code = "no_code", ""

    class TakenCode(ScaleCutGrads):
        name, code = "taken", "3"

    class NoSwitch(ScaleCutGrads):
        name, code = "no_switch", "noswitch"
        Settings = type("S", (BaseModel,), {"__annotations__": {"factor": float}, "factor": 1.0})

    for cls, message in ((NoCode, "has settings but no code or label"), (TakenCode, "its code '3' is taken"),
                         (NoSwitch, "need an 'enabled' field")):
        with pytest.raises(ValueError, match=message):
            register(cls)
        unregister(cls.name)
