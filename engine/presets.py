"""Named algorithms as data: one row per preset, each naming the paper or code it follows, plus two profiles.

A preset says *which techniques* run; a profile says *which hyper-parameters* (the paper's,
or demo settings that learn within minutes on a laptop CPU). Both are plain override dicts
merged into :class:`engine.config.RunConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.config import ConfigError, deep_merge


@dataclass(frozen=True)
class Preset:
    name: str                      # what --preset takes (snake_case)
    title: str                     # as the paper names it
    techniques: str                # technique codes, as --techniques takes them
    description: str
    table3_row: int | None = None  # row of the paper's Table 3, if any
    extra: dict[str, Any] = field(default_factory=dict)  # overrides beyond the technique codes
    source: str = ""               # the paper (and row) or the code whose algorithm the preset follows

    def overrides(self) -> dict[str, Any]:
        return deep_merge(techniques_to_config(self.techniques), self.extra)


TECHNIQUE_CODES = {
    "1": "① smashed-data forward",
    "2": "② global-gradient backward",
    "3": "③ smashed-data mixup",
    "4": "④ local loss (auxiliary network kept per client)",
    "4p": "④' local loss (auxiliary network averaged in ⑤)",
    "5": "⑤ lower-model federated averaging",
    "splitlr": "SGLR SplitLr (server lr eta * n^alpha)",
    "splitavg": "SGLR SplitAvg (averaged cut-layer gradient)",
}


def plugin_codes() -> dict[str, str]:
    """Code -> (technique name, label) of the registered techniques that bring their own settings."""
    from engine.techniques import plugins

    return {t.code: (t.name, t.label) for t in plugins()}


def technique_codes() -> dict[str, str]:
    """Every code ``--techniques`` and the presets take, with what it switches on: the built-in ones
    and those of the registered plugins (docs/extending.md)."""
    return {**TECHNIQUE_CODES, **{code: label for code, (_, label) in plugin_codes().items()}}


def parse_techniques(text: str) -> set[str]:
    """'1,2,3,4p,5' -> {'1', '2', '3', '4p', '5'}; unknown codes are a ConfigError."""
    codes = {c.strip().lower().replace("'", "p") for c in text.split(",") if c.strip()}
    known = technique_codes()
    unknown = codes - known.keys()
    if unknown:
        raise ConfigError(f"techniques: unknown code(s) {', '.join(sorted(unknown))}; "
                          f"allowed: {', '.join(known)}")
    if "4" in codes and "4p" in codes:
        raise ConfigError("techniques: choose either 4 or 4p (4'), not both")
    if "1" not in codes:
        raise ConfigError("techniques: ① (code 1, the smashed-data forward) is part of every split-learning run")
    return codes


def techniques_to_config(text: str) -> dict[str, Any]:
    """Config overrides for a technique set. ① alone is Vanilla SL (sequential); anything else is parallel."""
    codes = parse_techniques(text)
    sequential = codes == {"1"}
    return {
        "schedule": "sequential" if sequential else "parallel",
        # a sequential step sends its one client the cut-layer gradient (② with delta_i = 1)
        "global_backward": "2" in codes or sequential,
        "mixup": {"enabled": "3" in codes},
        "local_loss": {"enabled": bool(codes & {"4", "4p"}), "average_aux": "4p" in codes},
        "averaging": {"enabled": "5" in codes},
        "split_lr": {"enabled": "splitlr" in codes},
        "split_avg": {"enabled": "splitavg" in codes},
        # a plugin's section only where its code is given: configs without plugins stay as they were
        **({"plugins": {name: {"enabled": True} for code, (name, _) in plugin_codes().items() if code in codes}}
           if codes & plugin_codes().keys() else {}),
    }


T3 = "LocFedMix-SL Table 3"  # the LocFedMix-SL paper's Table 3, one row per technique combination
SPLITFED_CODE = "SplitFed authors' code"  # chandra2thapa/SplitFed-When-Federated-Learning-Meets-Split-Learning

_PRESETS = [
    Preset("vanilla_sl", "Vanilla SL", "1", "sequential SL: clients take turns and hand one lower model on", 1,
           source=f"{T3} row 1"),
    Preset("parallel_sl", "Parallel SL", "1,2", "all clients at once, each gets its own cut-layer gradient",
           source="LocFedMix-SL paper, §2.2 eq. (4)"),
    Preset("table3_row2", "Table 3 row 2", "1,2,3", "parallel SL + smashed-data mixup", 2, source=f"{T3} row 2"),
    Preset("table3_row3", "Table 3 row 3", "1,2,4", "parallel SL + InfoPro local loss", 3, source=f"{T3} row 3"),
    Preset("splitfed", "SplitFed", "1,2,5", "parallel SL + lower-model averaging every round", 4,
           source=f"{T3} row 4"),
    Preset("splitfed_v1", "SplitFed V1", "1,2,5",
           "clients in turn, in a random order, 20 batches each, each training its own copy of the upper model; "
           "copies and lower models averaged every round (optimisers re-created as the authors do)",
           extra={"schedule": "splitfed_v1", "local_steps": 20, "reset_optimizers": True},
           source=f"{SPLITFED_CODE} (V1)"),
    Preset("splitfed_v2", "SplitFed V2", "1,2,5",
           "clients in turn, in a random order, 20 batches each, all through one upper model; lower models "
           "averaged every round (optimisers re-created as the authors do)",
           extra={"schedule": "splitfed_v2", "local_steps": 20, "reset_optimizers": True},
           source=f"{SPLITFED_CODE} (V2)"),
    Preset("table3_row5", "Table 3 row 5", "1,2,3,4", "parallel SL + mixup + local loss", 5, source=f"{T3} row 5"),
    Preset("table3_row6", "Table 3 row 6", "1,2,3,5", "parallel SL + mixup + averaging", 6, source=f"{T3} row 6"),
    Preset("locsplitfed_2", "LocSplitFed + ②", "1,2,4p,5", "local loss and averaging, with the server's gradient", 7,
           source=f"{T3} row 7"),
    Preset("locfedmix_sl", "LocFedMix-SL", "1,2,3,4p,5",
           "the paper's proposal: mixup + InfoPro local loss + averaging (aux too)", 8, source=f"{T3} row 8"),
    Preset("locsplitfed", "LocSplitFed (original)", "1,4p,5",
           "clients learn from a local classifier loss only; the server never sends gradients",
           extra={"local_loss": {"kind": "classifier"}}, source="LocSplitFed (Han et al.) as ALGORITHMS.md reads it"),
    Preset("sglr", "SGLR", "1,2,splitlr,splitavg",
           "parallel SL with server lr acceleration (alpha 0.5) and split-layer gradient averaging (phi 0.5)",
           source="SGLR paper"),
    Preset("locfedmix_sl_splitlr", "LocFedMix-SL + SplitLr", "1,2,3,4p,5,splitlr",
           "LocFedMix-SL with SGLR's server lr acceleration (named as future work)",
           source="LocFedMix-SL paper (future work) + SGLR"),
]
PRESETS: dict[str, Preset] = {p.name: p for p in _PRESETS}
TABLE3_ROWS: dict[int, Preset] = {p.table3_row: p for p in _PRESETS if p.table3_row}

PROFILES: dict[str, dict[str, Any]] = {
    # The paper's settings are RunConfig's defaults: b = 64, SGD at eta = 0.004, T = 10,000, mixup sum.
    "paper": {},
    # Learns in minutes on a CPU. Measured on Fashion-MNIST, LocFedMix-SL, 10 clients, 300 rounds:
    # Adam 1e-3 reached 81 % steadily; momentum SGD at 0.05 and 0.02 reached 76-78 % but swung
    # between 10 % and 70 % on the way. The mean over partners keeps the server step in scale.
    "demo": {
        "rounds": 300, "eval_every": 10, "image_every": 50,
        "optim": {"name": "adam", "lr": 0.001},
        "mixup": {"reduction": "mean"},
    },
    # The SplitFed authors' own settings (their SFLV1/SFLV2 scripts), for the splitfed_v1/v2 presets:
    # Adam 1e-4, batch 256, disjoint equal IID shards. Their round is one local epoch per client, which
    # depends on n: `reproduce splitfed` sets local_steps to ceil(shard / 256) (24 at n = 10 on
    # Fashion-MNIST); `engine run --profile splitfed_authors` needs --set local_steps=... for it.
    "splitfed_authors": {
        "rounds": 200, "eval_every": 10, "image_every": 0, "batch_size": 256,
        "optim": {"name": "adam", "lr": 0.0001},
        "data": {"partition": "iid"},
    },
}


def without_mixup(codes: str) -> str | None:
    """The technique codes with ③ taken out (None when they hold no ③): the row a mixup row is
    compared with to see what mixup alone changes (Table 3: row 5 -> 3, 6 -> 4, 8 -> 7)."""
    parts = codes.split(",")
    return ",".join(c for c in parts if c != "3") if "3" in parts else None


def register_preset(preset: Preset) -> Preset:
    """Add a preset (a plugin's file may add its own): it joins ``--preset``, ``presets``, the New run
    form and the walkthrough. Its technique codes must parse; a taken name is refused."""
    if preset.name in PRESETS:
        raise ValueError(f"preset {preset.name!r} exists")
    if preset.table3_row:
        raise ValueError("Table 3 has eight rows: a registered preset has no table3_row")
    preset.overrides()  # unknown codes are refused here, not when a user picks it
    PRESETS[preset.name] = preset
    return preset


def unregister_preset(name: str) -> None:
    """Take a registered preset out again (tests)."""
    PRESETS.pop(name, None)


def get_preset(name: str) -> Preset:
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    if key not in PRESETS:
        raise ConfigError(f"preset: unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[key]


def get_profile(name: str) -> dict[str, Any]:
    if name not in PROFILES:
        raise ConfigError(f"profile: unknown profile {name!r}; known: {', '.join(PROFILES)}")
    return PROFILES[name]
