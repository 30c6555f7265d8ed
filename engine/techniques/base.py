"""The technique interface: hooks named after the steps of a round, no-ops by default.

A technique overrides only the step it changes (Flower's ``Strategy`` style):

- ``upload``: what a client does to its smashed data before the server receives it (defenses)
- ``server_extra_losses``: more server-side loss terms, yielded in chunks (mixup ③)
- ``cut_grads``: the cut-layer gradients each client receives (SplitAvg)
- ``client_loss``: a local loss on a client's smashed data (④, NoPeek)
- ``server_lr``: the server's learning rate (SplitLr)
- ``end_round``: work after every client has stepped (averaging ⑤, every T_c rounds)

A technique says itself when it runs: ``enabled(cfg)`` and its ``order`` (its place in a round;
hooks of several techniques run in that order). Registering one is a file in ``engine/techniques/``
with a ``@register`` class: :mod:`engine.techniques` imports every module of the package.

A technique that brings its own settings (a *plugin*; docs/extending.md) sets ``Settings``, a
pydantic model with an ``enabled`` field, and ``code`` and ``label``: its section is then
``plugins.<name>`` of the run config, its code joins ``--techniques`` and the presets, and the New
run form and the Round walkthrough show it, without any other file changed.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import BaseModel

if TYPE_CHECKING:
    from engine.config import RunConfig
    from engine.state import TrainState


@dataclass
class StepBatch:
    """What the server holds during one step: the clients served, their smashed data and labels."""

    clients: list[int]          # client ids in this step (all of them when parallel)
    inputs: torch.Tensor        # [k, b, C, H, W] raw inputs (client side; used by local losses)
    smashed: torch.Tensor       # [k*b, ...] the server's copy, as received (a leaf when ② needs its gradient)
    labels: torch.Tensor        # [k*b]
    weights: torch.Tensor       # [k] delta_i renormalised over the step's clients
    round: int                  # 1-based round number
    stacked: torch.Tensor | None = None  # [k, b, ...] the clients' own smashed data as one tensor (batched execution)

    @property
    def num_clients(self) -> int:
        return len(self.clients)

    @property
    def batch_size(self) -> int:
        return self.labels.shape[0] // len(self.clients)


class Technique:
    """Base class: every hook is a no-op. Subclasses set ``name``, ``order`` and ``enabled`` and override
    what they change."""

    name: ClassVar[str] = ""
    order: ClassVar[float] = 0.0    # place in a round: hooks of several techniques run in this order
    defense: ClassVar[bool] = False  # shown among the defenses (what the server receives)
    # A plugin's own config section (plugins.<name>), its code for --techniques and presets, its label
    # in the form and the walkthrough. The built-in techniques keep theirs in engine.config.
    Settings: ClassVar[type[BaseModel] | None] = None
    code: ClassVar[str] = ""
    label: ClassVar[str] = ""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg

    @classmethod
    def enabled(cls, cfg: RunConfig) -> bool:
        """Whether ``cfg`` switches this technique on (a plugin: its section's ``enabled``)."""
        return cls.Settings is not None and cfg.plugin(cls.name).enabled

    @functools.cached_property
    def settings(self) -> Any:
        """A plugin's section of the run config (its ``Settings``, defaults filled in)."""
        return self.cfg.plugin(self.name)

    @classmethod
    def acts_in(cls) -> list[str]:
        """The steps of a round (engine.trace's phases) whose hooks this technique overrides."""
        return list(dict.fromkeys(phase for hook, phase in HOOK_PHASES.items()
                                  if getattr(cls, hook) is not getattr(Technique, hook)))

    def describe(self) -> str:
        """One line for the UI and the CLI."""
        return self.name

    def upload(self, state: TrainState, clients: list[int], smashed: torch.Tensor) -> torch.Tensor:
        """What the server receives of the clients' smashed data [k, b, ...] (client ``clients[j]``'s in row
        j). Runs on the client: its backward (the cut-layer gradient) goes through what this returns."""
        return smashed

    def server_extra_losses(self, state: TrainState, batch: StepBatch) -> Iterator[torch.Tensor]:
        """Extra server loss terms, already weighted; each is backpropagated as it is yielded."""
        return iter(())

    def cut_grads(self, state: TrainState, batch: StepBatch, grads: torch.Tensor,
                  messages: int) -> tuple[torch.Tensor, int]:
        """(gradients sent to the step's clients [k, b, ...], number of distinct gradient messages)."""
        return grads, messages

    def client_loss(self, state: TrainState, client: int, smashed: torch.Tensor, x: torch.Tensor,
                    y: torch.Tensor) -> torch.Tensor | None:
        """A loss computed on the client from its own smashed data (None: no local loss)."""
        return None

    def client_losses(self, state: TrainState, clients: list[int], smashed: torch.Tensor, x: torch.Tensor,
                      y: torch.Tensor) -> torch.Tensor | None:
        """The sum over ``clients`` of :meth:`client_loss`, from stacked tensors ([k, b, ...]); a technique
        overrides it to compute every client's loss at once (batched execution)."""
        total = None
        for j, i in enumerate(clients):
            term = self.client_loss(state, i, smashed[j], x[j], y[j])
            if term is not None:
                total = term if total is None else total + term
        return total

    def server_lr(self, state: TrainState, lr: float) -> float:
        return lr

    def end_round(self, state: TrainState, round_: int) -> None:
        """Called once after every client stepped in round ``round_`` (1-based)."""

    def metrics(self, state: TrainState) -> dict[str, float]:
        """Figures recorded with every evaluation (history row keys), from the state's current models."""
        return {}

    # ---- the wire: a technique that changes what travels (quantisation) -------------------------
    def wire(self, shape: tuple[int, ...]) -> list[tuple[tuple[int, ...], torch.dtype]] | None:
        """The tensors (shape, dtype) one client's smashed data of ``shape`` travels as, or None when this
        technique leaves the wire alone (float32 as computed). Transports send :meth:`encode`'s tensors."""
        return None

    def encode(self, smashed: torch.Tensor) -> list[torch.Tensor]:
        """One client's smashed data as the tensors :meth:`wire` names."""
        raise NotImplementedError

    def decode(self, payload: list[torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
        """The server's smashed data from :meth:`encode`'s tensors: exactly what :meth:`upload` gives."""
        raise NotImplementedError

    # ---- random state kept per client (checkpoints, and over a transport in each client) -------
    def client_state(self, client: int) -> Any:
        """What a checkpoint keeps of this technique for ``client`` (None: nothing)."""
        return None

    def load_client_state(self, client: int, value: Any) -> None:
        """Restore :meth:`client_state`."""

    def reseed(self, seed: int) -> None:
        """Draw from streams of ``seed`` from now on (a measurement's own, never the run's)."""


# Which step of a round (engine.trace.PHASES) each hook belongs to, for the walkthrough.
HOOK_PHASES = {"upload": "upload", "server_extra_losses": "server", "server_lr": "server", "cut_grads": "grads_down",
               "client_loss": "local", "client_losses": "local", "end_round": "client_update"}
BUILT_IN_CODES = ("1", "2", "3", "4", "4p", "5", "splitlr", "splitavg")  # engine.presets.TECHNIQUE_CODES

REGISTRY: dict[str, type[Technique]] = {}


def register(cls: type[Technique]) -> type[Technique]:
    """Class decorator: add a technique to the registry under its ``name``; duplicates are refused, and
    so is a plugin (``Settings``) without a code and label, whose code is taken, or whose settings
    have no ``enabled`` switch."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in REGISTRY:
        raise ValueError(f"technique {cls.name!r} is registered twice")
    if cls.Settings is not None:
        if not cls.code or not cls.label:
            raise ValueError(f"technique {cls.name!r} has settings but no code or label")
        if not cls.code.isidentifier() or cls.code in BUILT_IN_CODES or cls.code in {t.code for t in plugins()}:
            raise ValueError(f"technique {cls.name!r}: its code {cls.code!r} is taken or not a plain word")
        if "enabled" not in cls.Settings.model_fields:
            raise ValueError(f"technique {cls.name!r}: its Settings need an 'enabled' field")
    REGISTRY[cls.name] = cls
    return cls


def plugins() -> list[type[Technique]]:
    """The registered techniques that bring their own settings, by name."""
    return sorted((cls for cls in REGISTRY.values() if cls.Settings is not None), key=lambda cls: cls.name)


def unregister(name: str) -> None:
    """Take a technique out of the registry (tests that register one of their own)."""
    REGISTRY.pop(name, None)
