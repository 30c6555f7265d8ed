"""Analytical latency model of LocFedMix-SL (Oh et al., WWW 2022), Table 4.

Only client-side computation ``T_comp`` and uplink communication ``T_comm``
are counted: the server is infinitely fast and the uplink bandwidth is shared
equally, so ``n`` clients uploading at once take ``n * T_comm``.  ``|s|``,
``|w_c|`` and ``|ŵ_c|`` are the sizes of ``b`` smashed samples, the lower
(client) model and the auxiliary network, in any consistent unit.

Latency for ``T`` rounds:

==============  ==============================================================
Vanilla SL      (T_comp + n T_comm) · n T
SplitFed        (T_comp + n T_comm (|s| + |w_c|) / |s|) · T
LocSplitFed     (T_comp + max(T_comp, n T_comm)
                 + n T_comm (|ŵ_c| + |w_c|) / |w_c|) · T
LocFedMix-SL    (T_comp + n T_comm) · T
                 + n T_comm (|ŵ_c| + |w_c|) / |w_c| · floor(T / T_c)
==============  ==============================================================

The formulas are implemented exactly as written above (including the
``/ |w_c|`` normalisation of the model-exchange terms).

Besides the closed forms this module derives a latency from the bytes a
simulated run actually uploaded (:func:`latency_from_bytes`,
:func:`latency_curve_for_run`), so accuracy can be plotted against simulated
wall-clock time.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

__all__ = [
    "METHODS",
    "LatencyParams",
    "latency",
    "latency_curves",
    "method_for_techniques",
    "latency_from_bytes",
    "latency_curve_for_run",
]

METHODS = ("vanilla_sl", "splitfed", "locsplitfed", "locfedmix_sl")

BEST_CASE_LABEL = "locfedmix_sl (T_c=T)"
WORST_CASE_LABEL = "locfedmix_sl (T_c=1)"


def _check_real(name: str, value: float, *, positive: bool = False) -> float:
    """Return ``value`` as a float, raising ``ValueError`` unless it is finite
    and ``>= 0`` (or ``> 0`` when ``positive``)."""
    rng = "> 0" if positive else ">= 0"
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a finite number {rng}, got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number {rng}, got {value!r}") from None
    if not math.isfinite(x) or x < 0 or (positive and x == 0):
        raise ValueError(f"{name} must be a finite number {rng}, got {value!r}")
    return x


def _check_int(name: str, value: int, minimum: int) -> int:
    """Return ``value`` as an int, raising ``ValueError`` unless it is an
    integer ``>= minimum`` (bools are rejected)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        v = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}") from None
    if v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return v


@dataclass(frozen=True)
class LatencyParams:
    """Parameters of the Table 4 latency model.

    ``t_comp``: client compute time of one step (s); ``t_comm``: time for one
    client to upload ``|s|`` alone at full bandwidth (s); ``smashed_size``:
    ``|s|``; ``lower_size``: ``|w_c|``; ``aux_size``: ``|ŵ_c|``;
    ``avg_interval``: ``T_c``, rounds between lower-model averagings in
    LocFedMix-SL.
    """

    t_comp: float = 1.0
    t_comm: float = 1.0
    smashed_size: float = 1.0
    lower_size: float = 1.0
    aux_size: float = 0.0
    avg_interval: int = 1

    def __post_init__(self) -> None:
        """Validate every field; raise ``ValueError`` naming the field and range."""
        _check_real("t_comp", self.t_comp)
        _check_real("t_comm", self.t_comm)
        _check_real("smashed_size", self.smashed_size, positive=True)
        _check_real("lower_size", self.lower_size, positive=True)
        _check_real("aux_size", self.aux_size)
        _check_int("avg_interval", self.avg_interval, 1)


def _as_clients(n: int | np.ndarray) -> np.ndarray:
    """Return ``n`` as a float array, raising ``ValueError`` unless every
    entry is a finite number ``>= 1``."""
    try:
        arr = np.asarray(n, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"n must be a number or array of numbers >= 1, got {n!r}") from None
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 1):
        raise ValueError(f"n must be >= 1 (every entry), got {n!r}")
    return arr


def _per_method(method: str, n: np.ndarray, rounds: int, p: LatencyParams) -> np.ndarray:
    """Evaluate the Table 4 formula of ``method`` for a validated ``n`` array."""
    up = n * p.t_comm  # n clients uploading |s| at once over the shared uplink
    model_exchange = up * (p.aux_size + p.lower_size) / p.lower_size
    if method == "vanilla_sl":
        return (p.t_comp + up) * n * rounds
    if method == "splitfed":
        return (p.t_comp + up * (p.smashed_size + p.lower_size) / p.smashed_size) * rounds
    if method == "locsplitfed":
        return (p.t_comp + np.maximum(p.t_comp, up) + model_exchange) * rounds
    return (p.t_comp + up) * rounds + model_exchange * (rounds // p.avg_interval)


def latency(method: str, n: int | np.ndarray, rounds: int, p: LatencyParams) -> float | np.ndarray:
    """Latency (seconds) of ``rounds`` training rounds of ``method`` with ``n``
    clients, per Table 4 (see the module docstring).

    ``n`` may be a scalar (a ``float`` is returned) or a numpy array (an array
    of the same shape is returned).  Raises ``ValueError`` for an unknown
    method, ``n < 1`` or ``rounds`` that is not an integer ``>= 0``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    rounds = _check_int("rounds", rounds, 0)
    arr = _as_clients(n)
    out = _per_method(method, arr, rounds, p)
    return float(out) if out.ndim == 0 else out


def _ratio_params(p: LatencyParams, a: float, b: float) -> LatencyParams:
    """Copy of ``p`` with ``t_comp = p.t_comm * a / b`` (ratio ``a:b``)."""
    a = _check_real("ratio numerator", a)
    b = _check_real("ratio denominator", b, positive=True)
    return LatencyParams(p.t_comm * a / b, p.t_comm, p.smashed_size,
                         p.lower_size, p.aux_size, p.avg_interval)


def _fmt(x: float) -> str:
    """Format a ratio term without a trailing ``.0``."""
    return f"{x:g}"


def latency_curves(
    ns: Iterable[int],
    rounds: int,
    p: LatencyParams,
    ratios: Sequence[tuple[float, float]] = ((10, 1), (1, 1), (1, 10)),
) -> list[dict]:
    """Rows for Fig. 8-style plots of latency against the number of clients.

    For each ratio ``a:b`` of ``T_comp:T_comm`` (``t_comm = p.t_comm``,
    ``t_comp = p.t_comm * a / b``), each method in :data:`METHODS` (LocFedMix-SL
    with ``p.avg_interval``), plus LocFedMix-SL's best case (``T_c = T``,
    label ``"locfedmix_sl (T_c=T)"``) and worst case (``T_c = 1``, label
    ``"locfedmix_sl (T_c=1)"``), and each ``n`` in ``ns``, one row
    ``{"ratio": "a:b", "method": ..., "n": n, "latency": seconds}``.
    """
    rounds = _check_int("rounds", rounds, 0)
    ns_list = list(ns)
    rows: list[dict] = []
    if not ns_list:
        return rows
    ns_arr = _as_clients(ns_list).reshape(-1)
    for a, b in ratios:
        q = _ratio_params(p, a, b)
        variants = [(m, m, q) for m in METHODS] + [
            (BEST_CASE_LABEL, "locfedmix_sl", _with_interval(q, max(rounds, 1))),
            (WORST_CASE_LABEL, "locfedmix_sl", _with_interval(q, 1)),
        ]
        label = f"{_fmt(a)}:{_fmt(b)}"
        for name, method, params in variants:
            values = latency(method, ns_arr, rounds, params)
            rows.extend(
                {"ratio": label, "method": name, "n": _num(n), "latency": float(v)}
                for n, v in zip(ns_arr, values)
            )
    return rows


def _with_interval(p: LatencyParams, interval: int) -> LatencyParams:
    """Copy of ``p`` with ``avg_interval`` replaced by ``interval``."""
    return LatencyParams(p.t_comp, p.t_comm, p.smashed_size, p.lower_size, p.aux_size, interval)


def _num(x: float) -> int | float:
    """Return ``x`` as an int when it is integral, else as a float."""
    return int(x) if float(x).is_integer() else float(x)


def method_for_techniques(schedule: str, global_backward: bool, local_loss: bool, averaging: bool) -> str:
    """Table 4 row that best describes an arbitrary technique combination.

    Mapping (first match wins):

    * ``schedule == "sequential"`` (case-insensitive) -> ``"vanilla_sl"``:
      clients take turns, so latency scales with ``n`` whatever else is on;
    * any other schedule is treated as parallel, and then
      * no local loss -> ``"splitfed"`` (every step waits for the server's
        gradient, uplink carries smashed data plus the lower model);
      * local loss without global backward -> ``"locsplitfed"`` (clients
        update from the auxiliary loss, compute overlaps the upload);
      * local loss with global backward -> ``"locfedmix_sl"``.

    ``averaging`` does not change the row: every parallel row of Table 4
    already includes lower-model exchange, and Vanilla SL has none to add.
    """
    if not isinstance(schedule, str):
        raise ValueError(f"schedule must be a string, got {schedule!r}")
    del averaging  # documented above: it does not select a different row
    if schedule.strip().lower() == "sequential":
        return "vanilla_sl"
    if not local_loss:
        return "splitfed"
    return "locfedmix_sl" if global_backward else "locsplitfed"


def _round_compute(t_comp: float, num_clients: int, sequential: bool) -> float:
    """Client compute time of one round: ``t_comp``, times ``n`` if clients take turns."""
    return t_comp * num_clients if sequential else t_comp


def latency_from_bytes(
    bytes_up_per_round: float,
    num_clients: int,
    rounds: int,
    t_comp: float,
    uplink_bytes_per_s: float,
    sequential: bool = False,
) -> float:
    """Latency (seconds) from the bytes a run uploaded.

    Per round: ``t_comp`` (times ``num_clients`` if ``sequential``) plus
    ``bytes_up_per_round`` (all clients together) over the shared uplink
    bandwidth ``uplink_bytes_per_s``; multiplied by ``rounds``.
    """
    b = _check_real("bytes_up_per_round", bytes_up_per_round)
    n = _check_int("num_clients", num_clients, 1)
    rounds = _check_int("rounds", rounds, 0)
    t = _check_real("t_comp", t_comp)
    bw = _check_real("uplink_bytes_per_s", uplink_bytes_per_s, positive=True)
    return (_round_compute(t, n, sequential) + b / bw) * rounds


def latency_curve_for_run(
    history_rounds: Sequence[float],
    bytes_up_cumulative: Sequence[float],
    num_clients: int,
    t_comp: float,
    uplink_bytes_per_s: float,
    sequential: bool = False,
) -> np.ndarray:
    """Simulated wall-clock (seconds) at each recorded round of a run.

    ``rounds * t_comp`` (times ``num_clients`` if ``sequential``) plus the
    cumulative uploaded bytes over ``uplink_bytes_per_s``, elementwise over
    the two equally long sequences.
    """
    r = np.asarray(history_rounds, dtype=float).reshape(-1)
    cum = np.asarray(bytes_up_cumulative, dtype=float).reshape(-1)
    if r.shape != cum.shape:
        raise ValueError(
            f"history_rounds and bytes_up_cumulative must have equal length, got {r.size} and {cum.size}"
        )
    if not (np.all(np.isfinite(r)) and np.all(r >= 0)):
        raise ValueError("history_rounds must be finite and >= 0")
    if not (np.all(np.isfinite(cum)) and np.all(cum >= 0)):
        raise ValueError("bytes_up_cumulative must be finite and >= 0")
    n = _check_int("num_clients", num_clients, 1)
    t = _check_real("t_comp", t_comp)
    bw = _check_real("uplink_bytes_per_s", uplink_bytes_per_s, positive=True)
    return r * _round_compute(t, n, sequential) + cum / bw
