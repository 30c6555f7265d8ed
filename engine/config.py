"""One validated run configuration, shared by the CLI, the worker and the dashboard.

Every field carries its help text (``description``), which doubles as CLI and UI help.
Defaults follow the LocFedMix-SL paper (b = 64, plain SGD at eta = 0.004, T = 10,000);
the ``demo`` profile in :mod:`engine.presets` swaps in settings that learn in minutes.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer, model_validator

from engine.data import DATASETS

SCHEDULES = ("parallel", "sequential", "splitfed_v1", "splitfed_v2")
SPLITFED_SCHEDULES = ("splitfed_v1", "splitfed_v2")
OPTIMIZERS = ("sgd", "momentum", "adam")
PARTITIONS = ("paper", "iid", "dirichlet")
REGULARIZERS = ("infopro", "norm", "classifier")


MAX_ROUNDS = 100_000   # one cap for the CLI, the dashboard and stored runs
MAX_CLIENTS = 1000
MAX_LR = 10.0


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a config: the field (dotted path, "" for the whole config) and what is
    wrong, phrased to follow the field's name as the user knows it ("must be between 1 and 1000, got 0")."""

    field: str
    message: str

    def text(self, labels: Mapping[str, str] | None = None) -> str:
        """The problem in the user's words: ``labels`` maps a field to its form label or flag."""
        if not self.field:
            return self.message
        return f"{(labels or {}).get(self.field, self.field)} {self.message}"


class ConfigError(ValueError):
    """A configuration the engine refuses, with one readable line per problem."""

    def __init__(self, message: str, problems: tuple[ConfigProblem, ...] = ()):
        super().__init__(message)
        self.problems = problems

    def text(self, labels: Mapping[str, str] | None = None) -> str:
        """The message with each field named as the user knows it (flags, form labels)."""
        return "; ".join(p.text(labels) for p in self.problems) if self.problems else str(self)


class FieldValueError(ValueError):
    """Raised by a cross-field check: names the field it is about (pydantic keeps it in the error's ctx)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field} {message}")
        self.field, self.message = field, message


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    dataset: str = Field("fashion-mnist", description=f"data set: one of {', '.join(DATASETS)}")
    data_dir: str | None = Field(None, description="folder holding the data (else SPLITLAB_DATA, ./data, ../shared/data)")
    download: bool = Field(False, description="download the data set if it is not found (needs network)")
    partition: Literal["paper", "iid", "dirichlet"] = Field(
        "paper", description="paper: each client samples m items at random (may overlap); iid: disjoint shards; dirichlet: label skew")
    samples_per_client: int | None = Field(
        None, ge=1, description="m, items per client (paper default: N/5, i.e. 12,000 of 60,000 for Fashion-MNIST)")
    dirichlet_beta: float = Field(0.5, gt=0, le=1000, description="Dirichlet concentration beta (smaller = more label skew)")
    eval_subset: int = Field(1000, ge=1, description="test images used for the live curves (the full test set is used at the end)")


MixupReduction = Literal["sum", "mean"]  # how the n_s partners' mixup losses combine; "sum" is the paper's
MIXUP_REDUCTIONS: tuple[str, ...] = get_args(MixupReduction)


class MixupConfig(_Section):
    enabled: bool = Field(False, description="③ smashed-data mixup at the server")
    num_partners: int | None = Field(None, description="n_s, partners per client (0..n-1; default n//2)")
    alpha: float = Field(1.0, gt=0, le=100, description="lambda ~ Beta(alpha, beta): alpha")
    beta: float = Field(1.0, gt=0, le=100, description="lambda ~ Beta(alpha, beta): beta")
    per_sample: bool = Field(False, description="draw one lambda per sample instead of one per client pair")
    reduction: MixupReduction = Field("sum", description="combine the partners' losses by sum (paper) or mean")
    variant: Literal["mixup", "cutmix"] = Field("mixup", description="mixup (convex combination) or cutmix (element-wise mask)")
    grad_to_clients: bool = Field(False, description="let the mixup gradient also flow back to the mixed clients")


class LocalLossConfig(_Section):
    enabled: bool = Field(False, description="④ a local loss on each client")
    kind: Literal["infopro", "norm", "classifier"] = Field(
        "infopro", description="infopro: decoder + MSE to the input; norm: |theta*||x|| - ||s|||; classifier: small head + CE")
    average_aux: bool = Field(False, description="④': also average the auxiliary networks in ⑤")
    weight: float = Field(1.0, ge=0, description="weight of the local loss in the client's objective")
    norm_theta: float = Field(1.0, gt=0, description="theta of the norm regulariser")


class AveragingConfig(_Section):
    enabled: bool = Field(False, description="⑤ federated averaging of the lower models")
    interval: int = Field(1, ge=1, le=MAX_ROUNDS, description="T_c, average every T_c rounds")


class SplitLrConfig(_Section):
    enabled: bool = Field(False, description="SGLR SplitLr: server learning rate eta_s = eta * n^alpha")
    alpha: float = Field(0.5, ge=0, le=2, description="alpha in eta_s = eta * n^alpha (0..2)")


class SplitAvgConfig(_Section):
    enabled: bool = Field(False, description="SGLR SplitAvg: active clients receive the mean cut-layer gradient")
    fraction: float = Field(0.5, gt=0, le=1, description="phi, fraction of clients drawn active each round (0 < phi <= 1)")
    phase: Literal["all", "first", "last"] = Field("all", description="average in all rounds, or only the first/last part")
    phase_fraction: float = Field(0.5, gt=0, le=1, description="length of the averaging phase as a fraction of the rounds")


class ParticipationConfig(_Section):
    """Clients that come and go (:meth:`engine.state.TrainState.begin_round`): at 1 and 0 every client
    takes part in every round, as in every run before this section existed (bit for bit)."""

    fraction: float = Field(1.0, gt=0, le=1, description=(
        "C, as in FedAvg: each round a seeded random max(1, floor(C n)) of the n clients take part; the others "
        "neither send nor receive, and their lower models wait"))
    dropout: float = Field(0.0, ge=0, lt=1, description=(
        "p: each selected client independently fails to deliver its smashed data this round with probability "
        "p; the round goes on with the rest (with none left, nothing trains that round)"))
    speed_spread: float = Field(0.0, ge=0, le=3, description=(
        "stragglers: sigma of the log-normal each client's compute time per step is drawn from once per run "
        "(median 1: in units of T_comp, the latency model's client compute per step; 0: every client as fast)"))
    deadline: float = Field(0.0, ge=0, le=1000, description=(
        "a round waits at most this many T_comp for a client's step: a slower client misses the round and "
        "counts as dropped (0: no deadline, a round waits for its slowest client)"))

    @property
    def active(self) -> bool:
        return self.fraction < 1 or self.dropout > 0 or self.speed_spread > 0 or self.deadline > 0

    def clients(self, n: int) -> int:
        """How many of n clients are drawn a round: max(1, floor(C n)), as FedAvg's m = max(C K, 1) is
        usually implemented (a product a hair under a whole number, 0.29 * 100, counts as it)."""
        return max(1, math.floor(self.fraction * n + 1e-9))


class PrivacyConfig(_Section):
    every: int = Field(0, ge=0, le=MAX_ROUNDS, description=(
        "measure what the server can reconstruct from smashed data every N rounds and at the end "
        "(0: never); a multiple of eval_every"))
    attack_steps: int = Field(2000, ge=1, le=100_000, description=(
        "cap on the training steps of the server's black-box decoder (batch 64, Adam): it stops earlier when "
        "its loss on held-out images of its own stops improving; runs compare only at the same budget"))
    budget: Literal["strong", "fast"] = Field("strong", description=(
        "strong: the decoder trains until its held-out loss stops improving (at most attack_steps) and the "
        "white-box attacks take 300 steps; fast: a weaker attacker (at most 300 decoder steps, 100 white-box "
        "steps) whose figures a stronger server beats, for frequent measurements"))
    clients: int = Field(2, ge=1, le=MAX_CLIENTS, description=(
        "attack up to this many clients' lower models (identical ones, as after averaging, count once): "
        "the mean and the worst client are reported"))
    averaging_at_server: bool = Field(True, description=(
        "the server runs ⑤'s averaging (or relays Vanilla SL's lower model to the next client) and so holds "
        "the lower models (white-box attacks apply); false: that runs elsewhere (a separate aggregator, or "
        "clients handing the model on directly), and only the black-box attack applies"))


class DefenseConfig(_Section):
    """What a client does to its smashed data before the server sees it (one technique file each)."""

    noise: float = Field(0.0, ge=0, le=100, description=(
        "sigma of Gaussian noise added to the smashed data before upload (0: none)"))
    nopeek: float = Field(0.0, ge=0, le=100, description=(
        "alpha of NoPeek's distance-correlation penalty between a client's inputs and its smashed data, "
        "added to the client's loss (0: none)"))
    bits: int = Field(0, ge=0, le=16, description=(
        "quantise the smashed data to this many bits an element on the wire, with each client batch's range "
        "(straight-through gradient; 32/bits times fewer smashed-data bytes; 0: full 32-bit floats)"))

    def codes(self) -> list[str]:
        """The defenses switched on, as short codes for a run's description: noise0.5, nopeek1, bits4.
        (Set with ``--set defense.noise=0.5``; ``RunConfig.techniques()`` keeps to the paper's codes.)"""
        return [f"{name}{value:g}" for name, value in
                (("noise", self.noise), ("nopeek", self.nopeek), ("bits", self.bits)) if value]


class OptimConfig(_Section):
    name: Literal["sgd", "momentum", "adam"] = Field("sgd", description="optimiser: sgd, momentum (SGD with momentum), adam")
    lr: float = Field(0.004, gt=0, le=MAX_LR, description="learning rate eta (clients; and server unless SplitLr)")
    momentum: float = Field(0.9, ge=0, lt=1, description="momentum for the momentum optimiser")
    weight_decay: float = Field(0.0, ge=0, le=1, description="L2 weight decay")


class RunConfig(_Section):
    """Everything that defines a run. Build it with :func:`build_config`."""

    name: str = Field("", description="a label for the run")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="one seed for every random choice")
    num_clients: int = Field(10, ge=1, le=MAX_CLIENTS, description="n, number of clients")
    rounds: int = Field(10_000, ge=1, le=MAX_ROUNDS, description=(
        "T, training rounds (a round: every client updates once; local_steps times under SplitFed)"))
    batch_size: int = Field(64, ge=1, le=4096, description="b, per-client batch size")
    schedule: Literal["parallel", "sequential", "splitfed_v1", "splitfed_v2"] = Field(
        "parallel", description="parallel (①: every client at once, one server step a round); sequential (Vanilla "
                                "SL: one shared lower model handed on); splitfed_v1 / splitfed_v2 (the SplitFed "
                                "authors' code: clients one after another in a random order, local_steps batches "
                                "each, one server step per batch; V1: a copy of the upper model per client, "
                                "averaged at the round's end; V2: one upper model)")
    local_steps: int = Field(1, ge=1, le=10_000, description="batches per client per round (SplitFed schedules)")
    reset_optimizers: bool = Field(False, description=(
        "re-create the optimisers as the SplitFed authors' code does: the clients' at the start of every round, "
        "the server's before every batch (under Adam every server step is Adam's first); SplitFed schedules only"))
    global_backward: bool = Field(True, description="② the server sends each client its cut-layer gradient")
    model: Literal["lenet5"] = Field("lenet5", description="network architecture")
    cut_layer: int = Field(1, ge=1, le=4, description="cut after block k of LeNet-5 (1: conv+pool, the paper's cut; 4: fc2)")
    device: str = Field("cpu", description="torch device: cpu, cuda, cuda:0, ...")
    execution: Literal["auto", "loop", "batched"] = Field(
        "auto", description="how a parallel step runs the clients' lower (and auxiliary) models: loop, one client "
                            "after another; batched, all at once as one vmapped computation (same results); "
                            "auto: batched on CUDA, loop on the CPU")
    eval_every: int = Field(10, ge=1, le=MAX_ROUNDS, description="evaluate every this many rounds")
    eval_max_clients: int = Field(10, ge=1, description="at most this many distinct client models evaluated during training")
    target_acc: float = Field(0.75, gt=0, le=1, description="accuracy target for 'rounds to target'")
    transport: Literal["inprocess", "process"] = Field(
        "inprocess", description="inprocess: one process (the reference); process: a server and n client "
                                 "processes exchanging smashed data and gradients over TCP (torch.distributed, gloo)")
    on_client_loss: Literal["fail", "continue"] = Field(
        "fail", description="a networked run whose client process dies or stops answering: fail (the default: the "
                            "run stays exactly the run it was configured to be, or ends) or continue (the server goes on "
                            "with the other clients, records the loss, and takes the client back when a process with "
                            "its rank joins again)")
    image_every: int = Field(0, ge=0, le=MAX_ROUNDS, description="record InfoPro reconstructions every K rounds (0: never)")
    track_updates: bool = Field(False, description=(
        "measure the server-client update imbalance: the size of the server's and each client's parameter update "
        "per round (before averaging), recorded with every evaluation"))
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    mixup: MixupConfig = Field(default_factory=MixupConfig)
    local_loss: LocalLossConfig = Field(default_factory=LocalLossConfig)
    averaging: AveragingConfig = Field(default_factory=AveragingConfig)
    split_lr: SplitLrConfig = Field(default_factory=SplitLrConfig)
    split_avg: SplitAvgConfig = Field(default_factory=SplitAvgConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    defense: DefenseConfig = Field(default_factory=DefenseConfig)
    participation: ParticipationConfig = Field(default_factory=ParticipationConfig)
    plugins: dict[str, dict[str, Any]] = Field(default_factory=dict, description=(
        "the sections of techniques that bring their own settings, by name (plugins.<name>.<field>; "
        "docs/extending.md)"))

    @model_validator(mode="before")
    @classmethod
    def _check_plugins(cls, data: Any) -> Any:
        """Each plugin section validated by its technique's ``Settings`` and stored with its defaults filled
        in; a section no registered technique owns is refused, naming the field."""
        if not isinstance(data, dict) or not data.get("plugins"):
            return data
        sections = data["plugins"]
        if not isinstance(sections, dict):
            raise FieldValueError("plugins", "must be a section of technique settings")
        out = {}
        for name, section in sections.items():
            owner = plugin_class(name)
            if owner is None:
                known = ", ".join(t.name for t in _plugins()) or "none is registered"
                raise FieldValueError(f"plugins.{name}", f"is not a technique that has settings (known: {known})")
            try:
                out[name] = owner.Settings.model_validate(section).model_dump(mode="json")
            except ValidationError as err:
                problem = _problem(err.errors()[0], owner.Settings, ("plugins", name))
                raise FieldValueError(problem.field, problem.message) from None
        return {**data, "plugins": out}

    @model_serializer(mode="wrap")
    def _without_empty_plugins(self, handler: Any) -> Any:
        """A config that uses no plugin dumps as it did before plugins existed (no ``plugins`` key)."""
        out = handler(self)
        if isinstance(out, dict) and not out.get("plugins"):
            out.pop("plugins", None)
        return out

    def plugin(self, name: str) -> Any:
        """Plugin ``name``'s settings (its ``Settings``; the defaults when this config has no section for it)."""
        owner = plugin_class(name)
        if owner is None:
            raise KeyError(f"no technique with settings is registered as {name!r}")
        return owner.Settings.model_validate(self.plugins.get(name, {}))

    @model_validator(mode="before")
    @classmethod
    def _default_num_partners(cls, data: Any) -> Any:
        """n_s defaults to n // 2 (the paper grows n_s with n), resolved so stored configs are explicit."""
        if isinstance(data, dict):
            mixup = data.get("mixup")
            if isinstance(mixup, BaseModel):
                mixup = mixup.model_dump()
            mixup = dict(mixup) if isinstance(mixup, dict) else {}
            n = data.get("num_clients", 10)
            if mixup.get("num_partners") is None and isinstance(n, int) and n >= 1:
                mixup["num_partners"] = min(n - 1, n // 2)
                data = {**data, "mixup": mixup}
        return data

    @model_validator(mode="after")
    def _check_ranges(self) -> RunConfig:
        n = self.num_clients
        if self.data.dataset not in DATASETS:
            raise FieldValueError("data.dataset", f"must be one of {', '.join(DATASETS)}, got {self.data.dataset!r}")
        if self.mixup.num_partners is not None and not 0 <= self.mixup.num_partners <= n - 1:
            raise FieldValueError("mixup.num_partners",
                                  f"must be between 0 and n-1 = {n - 1} (n = {n} clients), got {self.mixup.num_partners}")
        every = self.privacy.every
        if every and every % self.eval_every:
            raise FieldValueError("privacy.every", f"must be a multiple of eval_every ({self.eval_every}): leakage "
                                  f"is recorded in the evaluation rows, got {every}")
        if self.transport == "process" and self.device != "cpu":
            raise FieldValueError("transport", f"process runs its clients on the CPU (gloo), got device {self.device!r}")
        if self.on_client_loss == "continue" and self.transport != "process":
            raise FieldValueError("on_client_loss", "continue applies to networked runs (transport process): in one "
                                                    "process no client can be lost")
        if self.track_updates and self.transport == "process":
            raise FieldValueError("track_updates", "needs transport inprocess: over the network the clients' "
                                  "updates happen in their own processes")
        if self.mixup.enabled and self.schedule != "parallel":
            raise FieldValueError("", f"mixup needs the parallel schedule: a {self.schedule} step holds one client's "
                                  "smashed data, with no partners to mix it with")
        self._check_splitfed()
        return self

    def _check_splitfed(self) -> None:
        """The SplitFed schedules' settings (:mod:`engine.schedules.splitfed`), and what they exclude."""
        splitfed = self.schedule in SPLITFED_SCHEDULES
        if splitfed and self.split_avg.enabled:
            raise FieldValueError("split_avg.enabled", f"needs the parallel schedule: a {self.schedule} step serves "
                                  "one client, with no other clients' gradients to average")
        if splitfed and self.transport == "process":
            raise FieldValueError("transport", f"process does not run the {self.schedule} schedule: use inprocess")
        if self.local_steps > 1 and not splitfed:
            raise FieldValueError("local_steps", f"applies to the SplitFed schedules only (splitfed_v1, splitfed_v2), "
                                  f"not {self.schedule}: a round there serves every client once")
        if self.reset_optimizers and not splitfed:
            raise FieldValueError("reset_optimizers", f"applies to the SplitFed schedules only (splitfed_v1, "
                                  f"splitfed_v2), not {self.schedule}")
        if self.schedule == "splitfed_v1" and not self.reset_optimizers and self.optim.name != "sgd":
            raise FieldValueError("reset_optimizers", f"must be true for splitfed_v1 with the {self.optim.name} "
                                  "optimiser: each client's copy of the upper model starts every round afresh from "
                                  "their average, and no optimiser state of the copies is kept between rounds; only "
                                  "plain sgd, which has no state, runs without the reset")

    # ---- derived values, computed from the fields -------------------------------------
    @property
    def server_lr(self) -> float:
        """eta_s: eta, or eta * n^alpha with SplitLr."""
        if self.split_lr.enabled:
            return self.optim.lr * self.num_clients ** self.split_lr.alpha
        return self.optim.lr

    def techniques(self) -> list[str]:
        """The technique codes of this config, as ``--techniques`` takes them (1, 2, 3, 4, 4p, 5, splitlr, splitavg)."""
        codes = ["1"]
        if self.schedule != "sequential" and self.global_backward:
            codes.append("2")
        if self.mixup.enabled:
            codes.append("3")
        if self.local_loss.enabled:
            codes.append("4p" if self.local_loss.average_aux and self.averaging.enabled else "4")
        if self.averaging.enabled:
            codes.append("5")
        if self.split_lr.enabled:
            codes.append("splitlr")
        if self.split_avg.enabled:
            codes.append("splitavg")
        codes += [t.code for t in _plugins() if t.name in self.plugins and self.plugin(t.name).enabled]
        return codes

    def warnings(self) -> list[str]:
        """Settings that are valid but switch a step off or do nothing."""
        out = []
        if self.schedule != "sequential" and not self.global_backward and not self.local_loss.enabled:
            out.append("without ② or ④ the clients receive no learning signal: their lower models never change")
        if self.local_loss.average_aux and not self.averaging.enabled:
            out.append("④' (average_aux) has no effect without ⑤ averaging")
        if self.mixup.enabled and self.mixup.num_partners == 0:
            out.append("mixup with n_s = 0 mixes nothing: it equals no mixup")
        if self.split_avg.enabled and not self.global_backward:
            out.append("SplitAvg averages cut-layer gradients, but ② is off: it has no effect")
        if self.schedule == "sequential" and self.averaging.enabled:
            out.append("Vanilla SL already shares one lower model: averaging changes nothing")
        if self.schedule == "sequential" and self.split_avg.enabled:
            out.append("SplitAvg has no effect under the sequential schedule: each step serves one client")
        if self.schedule in SPLITFED_SCHEDULES and not self.averaging.enabled:
            out.append(f"{self.schedule} without ⑤ averaging: each client keeps its own lower model (SplitFed "
                       "averages them every round)")
        if self.eval_every > self.rounds:
            rounds = f"{self.rounds} round{'s' if self.rounds != 1 else ''}"
            out.append(f"evaluating every {self.eval_every} rounds in a run of {rounds}: no evaluation falls "
                       "due during training, so the curves get one point, from the last round")
        return out


def _plugins() -> list:
    """The registered techniques with settings of their own (importing the techniques registers them)."""
    from engine.techniques import plugins

    return plugins()


def plugin_class(name: str) -> Any:
    """The registered technique whose settings are ``plugins.<name>`` (None: there is none)."""
    return next((t for t in _plugins() if t.name == name), None)


def _bounds(path: tuple[str, ...], root: type[BaseModel] | None = None) -> dict[str, float]:
    """The numeric bounds (ge, gt, le, lt) declared on the field at ``path`` (of ``root``, default RunConfig)."""
    model: Any = root or RunConfig
    field = None
    for part in path:
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return {}
        model = field.annotation
    out: dict[str, float] = {}
    for meta in field.metadata if field else ():
        for key in ("ge", "gt", "le", "lt"):
            if isinstance(meta, getattr(annotated_types, key.capitalize())):
                out[key] = getattr(meta, key)
    return out


def _fmt_number(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value) if isinstance(value, str) else str(value)


def _range_text(bounds: dict[str, float]) -> str:
    """"between 1 and 1,000", "at least 0", "greater than 0 and at most 10", ..."""
    lo = ("at least", bounds["ge"]) if "ge" in bounds else ("greater than", bounds["gt"]) if "gt" in bounds else None
    hi = ("at most", bounds["le"]) if "le" in bounds else ("less than", bounds["lt"]) if "lt" in bounds else None
    if lo and hi and lo[0] == "at least" and hi[0] == "at most":
        return f"between {_fmt_number(lo[1])} and {_fmt_number(hi[1])}"
    return " and ".join(f"{word} {_fmt_number(v)}" for word, v in (b for b in (lo, hi) if b))


RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def _problem(error: dict[str, Any], root: type[BaseModel] | None = None, prefix: tuple[str, ...] = ()) -> ConfigProblem:
    """One pydantic error as a :class:`ConfigProblem` naming the field the user set (an error of a
    plugin's ``root`` settings is named under ``prefix``: plugins.<name>.<field>)."""
    loc = tuple(str(p) for p in error["loc"])
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, FieldValueError):
        return ConfigProblem(cause.field, cause.message)
    got = f", got {_fmt_number(error['input'])}" if "input" in error and not isinstance(error["input"], dict) else ""
    kind = error["type"]
    if kind in RANGE_ERRORS:
        message = f"must be {_range_text(_bounds(loc, root))}{got}"
    elif kind == "extra_forbidden":
        message = "is not a setting SplitLab knows"
    elif kind in ("int_parsing", "int_from_float", "int_type"):
        message = f"must be a whole number{got}"
    elif kind in ("float_parsing", "float_type"):
        message = f"must be a number{got}"
    elif kind in ("bool_parsing", "bool_type"):
        message = f"must be true or false{got}"
    elif kind == "literal_error":
        message = f"must be {error['ctx']['expected']}{got}"
    else:
        message = f"is not valid: {error['msg'].removeprefix('Value error, ')}{got}"
    return ConfigProblem(".".join(prefix + loc), message)


def config_problems(data: dict[str, Any]) -> list[ConfigProblem]:
    """Every problem in ``data`` (empty when it makes a valid config). Forms and the CLI name the
    fields in their own words with :meth:`ConfigProblem.text`."""
    try:
        RunConfig.model_validate(data)
    except ValidationError as err:
        return [_problem(e) for e in err.errors()]
    return []


def validate_config(data: dict[str, Any]) -> RunConfig:
    """Build a :class:`RunConfig` from a (nested) dict, raising :class:`ConfigError` with readable lines."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        problems = tuple(_problem(e) for e in err.errors())
        raise ConfigError("; ".join(p.text() for p in problems), problems) from None


def config_errors(data: dict[str, Any]) -> dict[str, str]:
    """Field path -> message for every problem in ``data`` (empty when valid)."""
    return {p.field or "config": p.message for p in config_problems(data)}


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``data['a']['b'] = value`` for ``dotted = 'a.b'``, creating sections as needed."""
    *parents, leaf = dotted.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {key} is not a section")
    node[leaf] = value


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A new dict: ``base`` with ``override`` merged in, section by section. Neither input is
    shared with the result, so the result can be changed freely (presets are module constants)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def field_help() -> dict[str, str]:
    """Dotted field path -> description, for CLI and UI help."""
    out: dict[str, str] = {}

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, f"{prefix}{name}.")
            else:
                out[prefix + name] = field.description or ""

    walk(RunConfig, "")
    out.pop("plugins", None)
    for owner in _plugins():
        walk(owner.Settings, f"plugins.{owner.name}.")
    return out
