"""InfoPro: what the clients send and what their decoders recover, round by round; and what the server can
see: the strongest attack's reconstructions, beside those of a defended run's undefended twin."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from pages import common
from pages.figures import (
    LEAK_FORMATS,
    LEAK_LABELS,
    UPLOAD_DEFENSES,
    attack_name,
    attack_words,
    defense_label,
    defense_words,
    defenses,
    leakage_over_rounds,
    leakage_values,
    reconstruction_mse,
    strongest_attack,
    worst_client_words,
)
from pages.images import attack_grid, attacked_record, identical_clients_note, labelled_snapshot_grid

common.run_through_app_py()  # first thing: a deep link on a fresh server reruns through app.py


def mse_text(mse: float | None) -> str:
    return f"{mse:.4f}" if mse is not None and pd.notna(mse) else "–"


def leakage_rounds(history: pd.DataFrame) -> list[int]:
    """The rounds at which the run measured leakage (its history rows with ``leak_psnr``)."""
    if "leak_psnr" not in history:
        return []
    return [int(r) for r in history.loc[history["leak_psnr"].notna(), "round"]]


def how_to_measure(run_id: int) -> str:
    """One line for a run that never measured leakage: how to turn it on (on a read-only host, only why)."""
    if common.readonly():
        return f"Run #{run_id} did not measure privacy leakage (its config has `privacy.every` = 0)."
    return (f"Run #{run_id} did not measure privacy leakage. To see what the server can reconstruct from the "
            "smashed data, queue a run with **leakage every (rounds, 0: off)** set on the New run form "
            "(`privacy.every` in a config: a multiple of 'evaluate every').")


def measured_row(history: pd.DataFrame, round_: int) -> dict:
    """The history row of a leakage measurement, NaN read as missing."""
    row = history.loc[history["round"] == round_].iloc[-1].to_dict()
    return {k: (None if isinstance(v, float) and pd.isna(v) else v) for k, v in row.items()}


def attack_picture(run_id: int, round_: int, row: dict):
    """The attacked client's record at ``round_`` and its picture, the attack column named by the attack."""
    record = attacked_record(common.images(run_id, round_))
    if record is None:
        return None, None
    strongest = strongest_attack(row)
    header = ("strongest attack", f"({attack_name(strongest)})") if strongest else ("server's attack",
                                                                                   "(inverse network)")
    classes = common.run_classes((common.run_info(run_id) or {}).get("config") or {})
    return record, attack_grid(record, classes, header)


def server_view(run_id: int) -> None:
    """What the server can see: for a round where leakage was measured, the same test images as the input,
    the attacked client's own InfoPro reconstruction and the strongest attack's, with PSNR/SSIM; for a defended
    run, the same from its undefended twin; the measures over rounds."""
    st.subheader("What the server can see")
    history = common.history(run_id)
    measured = leakage_rounds(history)
    if not measured:
        st.info(how_to_measure(run_id))
        return
    round_ = st.select_slider("round (leakage measured)", measured, measured[-1], key="leak_round") \
        if len(measured) > 1 else measured[0]
    row = measured_row(history, round_)
    record, picture = attack_picture(run_id, round_, row)
    client = record.client if record is not None else int(row.get("leak_client") or 0)
    for col, (label, text) in zip(st.columns(4), leakage_values(row).items()):
        col.metric(label, text)
    config = (common.run_info(run_id) or {}).get("config") or {}
    st.caption(f"An honest-but-curious server attacks client {client} at round {round_}: {attack_words(row)}. "
               "PSNR (dB) and SSIM against the input: higher means the server sees more. Distance correlation "
               "(about 0: independent, 1: a similarity transform of the inputs) and mutual information (nats) "
               f"measure how much the smashed data depend on the inputs.{worst_client_words(row)}")
    if defenses(config):
        snr = row.get("defense_snr_db")  # recorded with noise: what σ means on this run's smashed data
        said = "" if snr is None else f" (a signal-to-noise ratio of {snr:.1f} dB on the smashed data at this round)"
        st.markdown(f"**Defense**: {defense_words(config)}{said}.")
        twin_view(run_id, round_, record, row, picture, config)
    elif picture is not None:
        st.image(picture, width="content")
    st.plotly_chart(leakage_over_rounds(history), key="leak_over_rounds")


def twin_view(run_id: int, round_: int, record, row: dict, picture, config: dict) -> None:
    """For a defended run: its pictures beside its undefended twin's (the same settings, every defense off), at
    the same round where the twin measured there, else at the twin's last measurement; without a twin, its own
    pictures and how to get one."""
    for twin in common.undefended_twins(run_id):
        history = common.history(twin)
        measured = leakage_rounds(history)
        if not measured:
            continue
        at = round_ if round_ in measured else measured[-1]
        twin_row = measured_row(history, at)
        twin_record, twin_picture = attack_picture(twin, at, twin_row)
        when = f"round {at}" + ("" if at == round_ else f" (its last measurement; it did not measure at {round_})")
        same = twin_record is not None and record is not None and np.array_equal(twin_record.inputs, record.inputs)
        images = "the same test images" if same else "its own test images"
        deltas = [f"{LEAK_LABELS[key]}: {LEAK_FORMATS[key].format(twin_row[key])} without the defense, "
                  f"{LEAK_FORMATS[key].format(row[key])} with it" for key in ("leak_psnr", "leak_ssim")
                  if row.get(key) is not None and twin_row.get(key) is not None]
        accuracies = [((common.run_info(i) or {}).get("summary") or {}).get("final_test_acc") for i in (twin, run_id)]
        if None not in accuracies:
            deltas.append(f"final test accuracy: {accuracies[0]:.4f} without the defense, {accuracies[1]:.4f} with it")
        st.markdown(f"**Without the defense**: run #{twin}, the same settings with every defense off, at {when}, "
                    f"{images}.")
        if deltas:
            st.caption("; ".join(deltas) + ".")
        left, right = st.columns(2)
        left.markdown(f"**With the defense** (run #{run_id}, {defense_label(config)})")
        right.markdown(f"**Without the defense** (run #{twin})")
        if picture is not None:
            left.image(picture, width="content", caption=f"with the defense: run #{run_id}, round {round_}")
        if twin_picture is not None:
            right.image(twin_picture, width="content", caption=f"without the defense: run #{twin}, {when}")
        return
    if picture is not None:
        st.image(picture, width="content")
    if common.readonly():
        st.caption("No undefended twin of this run here (the same settings with every defense off) to compare with.")
    else:
        st.caption("No undefended twin of this run here (the same settings with every defense off, measuring "
                   "leakage) to compare with: queue one (New run, every defense 0) to see what the defense hides.")


IMAGES_EVERY = "images every (rounds, 0: never)"  # the New run form's label for ``image_every``


def no_snapshots(run: dict) -> str:
    """Why a run has no snapshots, and whether it ever will. Snapshots are recorded every "images every"
    rounds and at each leakage measurement; a run with neither never records one."""
    config, status, done = run["config"], run["status"], int(run["last_round"])
    every = int(config.get("image_every") or 0)
    leak_every = int((config.get("privacy") or {}).get("every") or 0)
    head = f"Run #{run['id']}"
    if not every and not leak_every:
        return (f"{head} recorded no snapshots and never will: its **{IMAGES_EVERY}** is 0 (off) and it measures "
                "no leakage. To see what the clients send, queue a run with images every K > 0 rounds.")
    due = [(every, f"**{IMAGES_EVERY}** = {every}"), (leak_every, "its first leakage measurement")]
    first, why = min((r, text) for r, text in due if r)
    if status in ("finished", "failed", "cancelled"):
        ended = {"finished": "finished", "failed": "failed", "cancelled": "was cancelled"}[status]
        return (f"{head} recorded no snapshots: it {ended} after {common.plural(done, 'round')}, before its first "
                f"was due at round {first} ({why}).")
    return f"{head} has recorded no snapshots yet ({status}, round {done}): the first is due at round {first} ({why})."


st.header("InfoPro reconstructions")
linked = common.linked_run_id()  # a link that names no run says so and stops here
runs = common.runs_frame()
with_images = [int(i) for i in runs["id"] if common.image_rounds(int(i))]
linked_info = common.run_info(linked) if linked is not None and linked not in with_images else None
if linked_info is not None:
    st.info(no_snapshots(linked_info) + (" Choose a run that has some below." if with_images else ""))
if not with_images:
    if linked_info is None:
        st.info(f"No run has recorded snapshots yet. Runs record them every K rounds (**{IMAGES_EVERY}** on the "
                "New run form; the demo profile: every 50); runs with the InfoPro local loss (④) also show "
                "reconstructions.")
    st.stop()
labels = {int(r["id"]): common.run_label(r) for _, r in runs.iterrows()}
# keyed, so that a run finishing underneath (a new entry in the list) keeps the pick instead of making a new
# widget that falls back to the run the page was opened with; the address follows the pick (a copied link
# shows this run)
run_id = st.selectbox("run", with_images, with_images.index(linked) if linked in with_images else 0,
                      format_func=labels.get, key="infopro_run")
if st.query_params.get("run") != str(run_id):
    st.query_params["run"] = str(run_id)
rounds = common.image_rounds(run_id)
round_ = st.select_slider("round", rounds, rounds[-1]) if len(rounds) > 1 else rounds[0]
records = common.images(run_id, round_)
info = common.run_info(run_id) or {}
changed = {k: v for k, v in defenses(info.get("config")).items() if k in UPLOAD_DEFENSES}
uploaded = ("the lower model's output, before this run's defenses: the server receives it with "
            f"{defense_words({'defense': changed})} (What the server can see, below)" if changed else
            "what the client uploads")
st.caption(f"Each row: a test image | the first channels of its smashed data ({uploaded}), each "
           "scaled to its own range (black: the channel is constant, usually all zero after the ReLU) | the "
           "client's InfoPro decoder reconstruction (only with the InfoPro local loss).")
note = identical_clients_note(info.get("config") or {}, round_)
if note and len(records) > 1:
    st.info(note)
classes = common.run_classes(info.get("config") or {})
for rec in records:
    st.markdown(f"**Client {rec.client}**, round {rec.round} · reconstruction MSE {mse_text(rec.mse)}")
    st.image(labelled_snapshot_grid(rec.inputs, rec.smashed, rec.reconstruction, rec.labels, classes),
             width="content")
mse = pd.DataFrame([{"round": r, "client": f"client {rec.client}", "mse": rec.mse}
                    for r in rounds for rec in common.images(run_id, r) if rec.mse is not None])
if not mse.empty:
    st.plotly_chart(reconstruction_mse(mse), key="mse")
server_view(run_id)
