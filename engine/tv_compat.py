"""Import torchvision even when its compiled operators cannot be loaded.

The torchvision wheel installed here is a CUDA build, while torch is a CPU
build.  torchvision's compiled extension (``torchvision/_C.so``) therefore
fails to load; torchvision tolerates that (it only disables its C++ ops), but
``torchvision/_meta_registrations.py`` then calls
``torch.library.register_fake("torchvision::nms")`` and ``("torchvision::qnms")``
unconditionally, and those calls raise
``RuntimeError: operator torchvision::nms does not exist``.

:func:`import_torchvision` works around this: it imports torchvision normally
and, only if that fails for this reason, defines the two missing operator
*schemas* (no kernels: calling the ops still fails, but SplitLab only needs
``torchvision.datasets``), forgets the half-imported modules and imports again.

Schemas are never defined before a first import attempt, because on a machine
where ``_C.so`` loads (a matching CUDA torch) the extension defines these ops
itself and a prior definition would clash with it.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

import torch

# Schemas that ``_meta_registrations.py`` needs to exist (same as in _C.so).
_MISSING_OP_SCHEMAS: dict[str, str] = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}

# The library holding our definitions. It must stay alive: torch removes the
# definitions of a Library object when it is garbage-collected.
_LIBRARY: torch.library.Library | None = None


def import_torchvision() -> ModuleType:
    """Import and return ``torchvision``; safe to call any number of times.

    Raises:
        RuntimeError: torchvision fails to import for any other reason.
    """
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
    _forget_partial_import()
    _define_missing_schemas()
    return importlib.import_module("torchvision")


def _op_exists(name: str) -> bool:
    """Whether the operator ``torchvision::<name>`` is registered."""
    return hasattr(torch.ops.torchvision, name)


def _define_missing_schemas() -> None:
    """Define each schema of ``_MISSING_OP_SCHEMAS`` that nobody defined yet."""
    global _LIBRARY
    for name, schema in _MISSING_OP_SCHEMAS.items():
        if _op_exists(name):
            continue
        if _LIBRARY is None:
            _LIBRARY = torch.library.Library("torchvision", "DEF")
        _LIBRARY.define(schema)


def _forget_partial_import() -> None:
    """Drop the torchvision submodules a failed import left in ``sys.modules``.

    They were initialised while the extension looked unusable and hold
    references to the failed package object, so the retry starts afresh.
    """
    for module_name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[module_name]
