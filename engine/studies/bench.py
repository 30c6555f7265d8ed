"""``python -m engine bench``: what one round costs against the same arithmetic done centrally.

For n clients with batch b, one round of Parallel SL does the arithmetic of one LeNet-5
training step on n*b samples, split into n lower-model passes. A centralized step on the same
n*b samples is therefore the limit, and ``round / centralized`` is the overhead of simulating
the clients. LocFedMix-SL adds n*n_s*b mixed samples through the upper model and an InfoPro
decoder pass on the n*b smashed samples; its reference adds exactly that work, done in one
large batch each. Each round is timed with the clients looped and batched (:mod:`engine.batched`).
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch.nn import functional as F

from engine.config import MAX_ROUNDS, validate_config
from engine.data import load_dataset
from engine.models import InfoProDecoder, split_lenet5
from engine.presets import deep_merge, get_preset
from engine.round import run_round
from engine.runtime import flush_denormals, tune_allocator
from engine.state import TrainState
from engine.studies.bench_peers import lockstep_round, splitfed_authors_round

BATCH = 64
SHAPE = (3, 32, 32)
WARMUP = 2


def median_time(fn: Callable[[], None], repeats: int) -> float:
    """Median wall seconds of ``fn`` after a warm-up."""
    return median_times({"fn": fn}, repeats)["fn"]


def median_times(arms: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median wall seconds of each arm after a warm-up, the arms timed in turn within each repetition."""
    for _ in range(WARMUP):
        for fn in arms.values():
            fn()
    times: dict[str, list[float]] = {arm: [] for arm in arms}
    for _ in range(repeats):
        for arm, fn in arms.items():
            start = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[arm].append(time.perf_counter() - start)
    return {arm: statistics.median(ts) for arm, ts in times.items()}


EXECUTIONS = ("loop", "batched")


def round_state(preset: str, n: int, num_partners: int, device: str, execution: str = "loop") -> TrainState:
    cfg = validate_config(deep_merge(get_preset(preset).overrides(), {
        "num_clients": n, "batch_size": BATCH, "rounds": MAX_ROUNDS, "device": device, "execution": execution,
        "data": {"dataset": "synthetic", "partition": "iid"},
        "mixup": {"num_partners": num_partners}, "optim": {"name": "sgd", "lr": 0.01}}))
    data = load_dataset("synthetic", synthetic_shape=SHAPE, synthetic_train=max(4096, n * BATCH), seed=0)
    return TrainState(cfg, data)


def reference_step(n: int, num_partners: int, device: str, mixup: bool) -> Callable[[], None]:
    """One centralized LeNet-5 SGD step on n*b samples (plus, for LocFedMix-SL, the mixed upper
    pass and the decoder pass, each as one large batch)."""
    lower, upper = split_lenet5(SHAPE, 10, 1)
    lower, upper = lower.to(device), upper.to(device)
    decoder = InfoProDecoder((6, 14, 14), SHAPE).to(device)
    params = [*lower.parameters(), *upper.parameters(), *decoder.parameters()]
    opt = torch.optim.SGD(params, lr=0.01)
    x = torch.rand(n * BATCH, *SHAPE, device=device)
    y = torch.randint(0, 10, (n * BATCH,), device=device)
    # channels-last, as the round's mixup pass is: the reference must stay the faster way to do it
    mixed = torch.rand(n * num_partners * BATCH, 6, 14, 14, device=device).contiguous(memory_format=torch.channels_last)
    soft = torch.softmax(torch.rand(len(mixed), 10, device=device), -1)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        s = lower(x)
        loss = F.cross_entropy(upper(s), y)
        if mixup:
            loss = loss + F.mse_loss(decoder(s), x)
            loss = loss - (soft * F.log_softmax(upper(mixed), -1)).sum(-1).mean()
        loss.backward()
        opt.step()

    return step


def bench_one(n: int, num_partners: int, repeats: int, device: str, executions: tuple[str, ...] = EXECUTIONS) -> dict:
    """Median seconds of a Parallel SL and a LocFedMix-SL round per execution path, and of their
    centralized references; ``<preset>_<execution>_ratio`` = round / reference."""
    out = {"n": n, "batch": BATCH, "num_partners": num_partners,
           "centralized_s": median_time(reference_step(n, num_partners, device, False), repeats),
           "centralized_plus_mixup_s": median_time(reference_step(n, num_partners, device, True), repeats)}
    # Parallel SL against its peers (engine.studies.bench_peers), timed in turn, so that a change of load
    # on the machine falls on every arm alike
    arms = {"lockstep": lockstep_round(n, SHAPE, device, BATCH),
            "splitfed_authors": splitfed_authors_round(n, SHAPE, device, BATCH)}
    for execution in executions:
        state = round_state("parallel_sl", n, num_partners, device, execution)
        arms[f"parallel_sl_{execution}"] = lambda state=state: run_round(state)
    out.update({f"{arm}_s": seconds for arm, seconds in median_times(arms, repeats).items()})
    for execution in executions:
        out[f"parallel_sl_{execution}_ratio"] = out[f"parallel_sl_{execution}_s"] / out["centralized_s"]
        out[f"parallel_sl_{execution}_vs_lockstep"] = out[f"parallel_sl_{execution}_s"] / out["lockstep_s"]
        state = round_state("locfedmix_sl", n, num_partners, device, execution)
        out[f"locfedmix_sl_{execution}_s"] = median_time(lambda state=state: run_round(state), repeats)
        out[f"locfedmix_sl_{execution}_ratio"] = out[f"locfedmix_sl_{execution}_s"] / out["centralized_plus_mixup_s"]
    return out


def run_bench(clients: str = "20,100", repeats: int = 5, as_json: bool = False, device: str = "cpu",
              num_partners: int | None = None, executions: tuple[str, ...] = EXECUTIONS) -> list[dict]:
    tune_allocator()
    flush_denormals()
    rows = []
    for n in [int(c) for c in clients.split(",")]:
        ns = num_partners if num_partners is not None else min(5, n - 1)
        rows.append(bench_one(n, ns, repeats, device, executions))
        if not as_json:
            r = rows[-1]
            parts = " | ".join(
                f"{ex}: Parallel SL {r[f'parallel_sl_{ex}_s'] * 1e3:7.1f} ms = {r[f'parallel_sl_{ex}_ratio']:.2f}x, "
                f"LocFedMix-SL {r[f'locfedmix_sl_{ex}_s'] * 1e3:7.1f} ms = {r[f'locfedmix_sl_{ex}_ratio']:.2f}x"
                for ex in executions)
            print(f"n={n:>4} b={BATCH} n_s={ns} on {device}: centralized {r['centralized_s'] * 1e3:.1f} ms, "
                  f"+ mixup + decoder {r['centralized_plus_mixup_s'] * 1e3:.1f} ms | {parts}", flush=True)
            peers = " | ".join(f"Parallel SL {ex} = {r[f'parallel_sl_{ex}_vs_lockstep']:.2f}x it" for ex in executions)
            print(f"       peers: lockstep loop (SGLR authors' style) {r['lockstep_s'] * 1e3:7.1f} ms, SplitFed "
                  f"authors' style {r['splitfed_authors_s'] * 1e3:7.1f} ms = "
                  f"{r['splitfed_authors_s'] / r['lockstep_s']:.2f}x it | {peers}", flush=True)
    meta = {"device": device, "device_name": device_name(device), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(), "repeats": repeats}
    if as_json:
        print(json.dumps({"meta": meta, "results": rows}, indent=1))
    return rows


def device_name(device: str) -> str:
    """What the figures were measured on, in words."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


# ---- the cost of measuring leakage ------------------------------------------------------------
PRIVACY_ROUNDS = 300


def bench_privacy(repeats: int = 3, as_json: bool = False, dataset: str = "fashion-mnist") -> dict:
    """What measuring leakage (:mod:`engine.privacy`) adds to a 300-round, 10-client LocFedMix-SL run
    with the demo profile: one measurement against one round, as a share of the run for
    ``privacy.every`` = 100, 150 and 300 (3, 2 and 1 measurements)."""
    from engine.presets import PROFILES
    from engine.privacy import measure_client

    tune_allocator()
    flush_denormals()
    cfg = validate_config(deep_merge(deep_merge(PROFILES["demo"], get_preset("locfedmix_sl").overrides()),
                                     {"num_clients": 10, "data": {"dataset": dataset}}))
    state = TrainState(cfg)
    round_s = median_time(lambda: run_round(state), max(10, 4 * repeats))
    measure_s = median_time(lambda: measure_client(state, 0), repeats)
    run_s = PRIVACY_ROUNDS * round_s
    out = {"dataset": dataset, "clients": 10, "rounds": PRIVACY_ROUNDS, "round_s": round_s, "measure_s": measure_s,
           "run_s": run_s, "share": {every: PRIVACY_ROUNDS // every * measure_s / run_s for every in (100, 150, 300)},
           "threads": torch.get_num_threads(), "torch": torch.__version__}
    if as_json:
        print(json.dumps(out, indent=1))
    else:
        shares = ", ".join(f"every {e}: {s:.1%}" for e, s in out["share"].items())
        print(f"LocFedMix-SL, n=10, {dataset}: round {round_s * 1e3:.1f} ms, {PRIVACY_ROUNDS} rounds {run_s:.1f} s; "
              f"one leakage measurement {measure_s:.2f} s; added to the run: {shares}", flush=True)
    return out


# ---- the process transport ---------------------------------------------------------------------
def bench_transport(clients: str = "4,16", repeats: int = 20, as_json: bool = False,
                    dataset: str = "fashion-mnist") -> list[dict]:
    """A LocFedMix-SL round (demo profile) over the process transport on loopback against the same
    round in one process: the overhead per round of n client processes talking to a server over TCP."""
    from engine.presets import PROFILES
    from engine.trainer import Trainer

    tune_allocator()
    flush_denormals()
    rows = []
    for n in [int(c) for c in clients.split(",")]:
        data = deep_merge(deep_merge(PROFILES["demo"], get_preset("locfedmix_sl").overrides()),
                          {"num_clients": n, "data": {"dataset": dataset, "samples_per_client": 1000}})
        local = TrainState(validate_config(data))
        inprocess_s = median_time(lambda: run_round(local), repeats)
        networked = Trainer(validate_config({**data, "transport": "process"}))
        parts: list[dict] = []

        def networked_round() -> None:
            networked.transport.run_round(networked.state)
            parts.append(networked.transport.last_timing)

        try:
            process_s = median_time(networked_round, repeats)
        finally:
            networked.close()
        row = {"n": n, "inprocess_s": inprocess_s, "process_s": process_s, "overhead_s": process_s - inprocess_s,
               "ratio": process_s / inprocess_s, "threads": torch.get_num_threads(),
               **{k: statistics.median(p[k] for p in parts[WARMUP:]) for k in parts[0]}}
        rows.append(row)
        if not as_json:
            print(f"LocFedMix-SL n={n:>3}: in one process {inprocess_s * 1e3:7.1f} ms/round | over TCP "
                  f"(n+1 processes, loopback) {process_s * 1e3:7.1f} ms/round = {row['ratio']:.2f}x, "
                  f"+{row['overhead_s'] * 1e3:.1f} ms | upload {row['latency_upload_s'] * 1e3:.1f} ms, "
                  f"download {row['latency_download_s'] * 1e3:.1f} ms, averaging {row['latency_averaging_s'] * 1e3:.1f} ms",
                  flush=True)
    if as_json:
        print(json.dumps({"meta": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                                   "cpu": platform.processor() or platform.machine()}, "results": rows}, indent=1))
    return rows
