"""``python -m engine reproduce latency --measured``: Fig. 8's methods run over a real, shaped network,
measured against the Table 4 model's prediction for the same sizes.

Each run is a networked run (:mod:`engine.network`): its server in a network namespace, its clients
outside, everything the clients send limited to the set rate (:mod:`engine.network.shaping`). Two
predictions sit beside each measured round time:

- **Table 4**: :func:`engine.latency.latency` for the run's method with T_comp = the measured client
  compute of a step and T_comm = one client's smashed data (and labels) alone at the set rate;
- **bytes**: the measured client compute plus the bytes the run's ledger uploaded in a round at the
  set rate (what Table 4 would say if it counted the model uploads at their real size).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from engine.config import RunConfig, deep_merge, validate_config
from engine.data import load_dataset
from engine.latency import LatencyParams, latency, method_for_techniques
from engine.models import num_state_elements, prod
from engine.presets import get_preset, get_profile
from engine.state import initial_models
from engine.studies.common import pyplot
from engine.studies.latency_study import PAPER_INPUT_SHAPES

METHODS = {"vanilla_sl": "Vanilla SL", "splitfed": "SplitFed", "locsplitfed": "LocSplitFed",
           "locfedmix_sl": "LocFedMix-SL"}
PARTS = ("latency_client_s", "latency_upload_s", "latency_server_s", "latency_download_s", "latency_averaging_s")


def measured_config(preset: str, n: int, rounds: int, dataset: str = "fashion-mnist") -> RunConfig:
    data = deep_merge(get_profile("demo"), get_preset(preset).overrides())
    return validate_config(deep_merge(data, {
        "name": f"{METHODS[preset]} n={n} (networked)", "num_clients": n, "rounds": rounds, "eval_every": rounds,
        "transport": "process", "data": {"dataset": dataset, "samples_per_client": 1000}}))


def model_sizes(cfg: RunConfig) -> tuple[int, int, int, int]:
    """(|s| in elements for b samples, bytes of one client's upload of them with labels, |w_c|, |ŵ_c|)."""
    in_shape, classes = PAPER_INPUT_SHAPES.get(cfg.data.dataset), 10
    if in_shape is None:
        data = load_dataset(cfg.data.dataset, cfg.data.data_dir)
        in_shape, classes = data.input_shape, data.num_classes
    lower, _, shape, aux = initial_models(cfg, in_shape, classes)
    elements = prod(shape)
    return (cfg.batch_size * elements, cfg.batch_size * (elements * 4 + 8), num_state_elements(lower),
            num_state_elements(aux) if aux is not None else 0)


def predictions(cfg: RunConfig, row: dict, summary: dict, mbit: float) -> dict[str, float]:
    """Seconds per round the Table 4 model and the bytes model predict for a measured run at ``mbit``."""
    n, rate = cfg.num_clients, mbit * 1e6 / 8
    smashed, upload_bytes, lower, aux = model_sizes(cfg)
    sequential = cfg.schedule == "sequential"
    method = method_for_techniques(cfg.schedule, cfg.global_backward, cfg.local_loss.enabled, cfg.averaging.enabled)
    t_comp = row["latency_client_s"] / (n if sequential else 1)  # one client's compute of one step
    params = LatencyParams(t_comp=t_comp, t_comm=upload_bytes / rate, smashed_size=smashed, lower_size=lower,
                           aux_size=aux, avg_interval=cfg.averaging.interval if cfg.averaging.enabled else 1)
    rounds = summary["rounds_done"]
    return {"table4_s": latency(method, n, rounds, params) / rounds,
            "bytes_s": row["latency_client_s"] + summary["bytes_up"] / rounds / rate}


def measure(out: Path, rates: list[float], ns: list[int], rounds: int, log=print) -> list[dict]:
    """Train what is missing (a run JSON per method, n and rate in ``out/runs``) and compare them all."""
    from engine.network.shaping import run_over, shaped_uplink, unavailable

    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    todo = [(mbit, preset, n) for mbit in rates for preset in METHODS for n in ns
            if not (runs / f"{preset}-n{n}-{mbit:g}mbit.json").exists()]
    if todo:
        why = unavailable()
        if why:
            raise RuntimeError(f"cannot shape the network here: {why}")
        with shaped_uplink() as link:
            for k, (mbit, preset, n) in enumerate(todo, 1):
                link.set_rate(mbit)
                log(f"[{k}/{len(todo)}] {METHODS[preset]}, n={n}, {mbit:g} Mbit/s")
                run_over(link, measured_config(preset, n, rounds), str(runs / f"{preset}-n{n}-{mbit:g}mbit.json"))
    rows = []
    for mbit in rates:
        for preset in METHODS:
            for n in ns:
                result = json.loads((runs / f"{preset}-n{n}-{mbit:g}mbit.json").read_text())
                cfg = RunConfig.model_validate(result["config"])
                row, summary = result["history"][-1], result["summary"]
                pred = predictions(cfg, row, summary, mbit)
                rows.append({"method": METHODS[preset], "n": n, "mbit": mbit, "rounds": summary["rounds_done"],
                             "measured_s": row["round_s"], **{p: row[p] for p in PARTS}, **pred,
                             "table4_ratio": pred["table4_s"] / row["round_s"],
                             "bytes_ratio": pred["bytes_s"] / row["round_s"]})
    return rows


def markdown(rows: list[dict]) -> str:
    head = ("| method | n | uplink | measured s/round | client | upload | server | download | models "
            "| Table 4 | Table 4 / measured | bytes model | bytes / measured |\n|" + "---|" * 13)
    lines = [head]
    for r in rows:
        parts = " | ".join(f"{r[p] * 1000:.0f} ms" for p in PARTS)
        lines.append(f"| {r['method']} | {r['n']} | {r['mbit']:g} Mbit/s | {r['measured_s'] * 1000:.0f} ms | {parts} "
                     f"| {r['table4_s'] * 1000:.0f} ms | {r['table4_ratio']:.2f} | {r['bytes_s'] * 1000:.0f} ms "
                     f"| {r['bytes_ratio']:.2f} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    plt = pyplot()

    rates = sorted({r["mbit"] for r in rows})
    fig, axes = plt.subplots(1, len(rates), figsize=(5 * len(rates), 4), squeeze=False)
    for ax, mbit in zip(axes[0], rates):
        for k, method in enumerate(METHODS.values()):
            pts = sorted((r["n"], r["measured_s"], r["table4_s"]) for r in rows if r["mbit"] == mbit and r["method"] == method)
            if not pts:
                continue
            n, measured, modeled = zip(*pts)
            ax.plot(n, measured, marker="o", color=f"C{k}", label=f"{method} measured")
            ax.plot(n, modeled, marker="x", linestyle="--", color=f"C{k}", label=f"{method} Table 4")
        ax.set(title=f"uplink {mbit:g} Mbit/s", xlabel="clients n", ylabel="seconds per round", yscale="log",
               xticks=sorted({r["n"] for r in rows}))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Measured latency per round over a shaped network against the Table 4 model")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_measured_study(out_dir: str, rates: list[float], ns: list[int], rounds: int, log=print) -> Path:
    out = Path(out_dir) / "latency-measured-fashion-mnist"
    rows = measure(out, rates, ns, rounds, log)
    with open(out / "latency.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "table.md").write_text(
        f"Networked runs on Fashion-MNIST (demo profile, b = 64, cut after block 1), {rows[0]['rounds']} rounds each; "
        "the server in a network namespace, the clients' uplink limited by tc tbf; the machine's 2 CPU cores "
        "shared by the server and all clients. Seconds per round: measured (mean wall time of a round) and its "
        "parts, against the Table 4 model with T_comp = the measured client compute and T_comm = one client's "
        "upload at the set rate, and against the bytes the run actually uploaded at that rate.\n\n"
        + markdown(rows) + "\n")
    plot(rows, out / "latency-measured.png")
    return out
