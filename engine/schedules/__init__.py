"""The schedules: how a round orders training steps (:mod:`engine.step`), one file each, registered
by name. The trainer runs the one ``cfg.schedule`` names.

- ``parallel``: Parallel SL, every client in one step (:mod:`.parallel`);
- ``sequential``: Vanilla SL, one client a step on one shared lower model (:mod:`.sequential`);
- ``splitfed_v1`` / ``splitfed_v2``: the SplitFed authors' rounds, clients in turn with many batches
  each (:mod:`.splitfed_v1`, :mod:`.splitfed_v2`, sharing :mod:`.splitfed`).

What every schedule does around its steps (participation, update sizes, the end-of-round hooks) is
:mod:`.frame`. Every module here is imported (and so registers its schedule) when the package is.
"""

from __future__ import annotations

import importlib
import pkgutil

from engine.schedules.base import REGISTRY, Schedule, get, register

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module != "base":
        importlib.import_module(f"{__name__}.{_module}")

__all__ = ["REGISTRY", "Schedule", "get", "register"]
