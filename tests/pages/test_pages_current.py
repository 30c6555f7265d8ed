"""Pages that say what is true now (issue 26, items 4 and 7), through AppTest against a real database:
an action on a run whose state changed meanwhile says what happened, Live gives a failed run's
reason, the result page names the time it shows, InfoPro says why a run has no snapshots, the data
set's class names label the pictures, the report's summary is written in words, no message carries
an exception's class name, and Latency's |ŵ_c| is what averaging sends.

Runs are trained by a real worker on tiny data (synthetic, or a data set that is not here to fail)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from engine.config import validate_config
from engine.models import InfoProDecoder, smashed_shape, split_lenet5
from pages import common, images
from pages.figures import accuracy_vs_leakage
from pages.report import SUMMARY_LABELS, run_report, summary_rows
from storage import queries
from storage.db import connect
from storage.worker import Worker, WorkerOptions
from tests.pages.support import page

TINY = {"num_clients": 2, "rounds": 6, "batch_size": 8, "eval_every": 2, "image_every": 3,
        "data": {"dataset": "synthetic", "eval_subset": 32}, "optim": {"name": "adam", "lr": 0.001}}


def queue(db_url: str, **overrides) -> int:
    with connect(db_url).write() as s:
        return queries.create_run(s, validate_config({**TINY, **overrides}))


def work(db_url: str, runs: int = 1) -> None:
    """A real worker takes the queued runs, one after another, and exits when the queue is empty."""
    assert Worker(connect(db_url), WorkerOptions(once=True, poll=0.1)).run() == runs


def status(db_url: str, run_id: int) -> str:
    with connect(db_url).read() as s:
        return queries.get_run(s, run_id).status.value


def texts(at, kind: str) -> list[str]:
    return [e.value.replace("\\", "") for e in getattr(at, kind)]


def button(at, label: str):
    return next(b for b in at.button if b.label == label)


# ---- item 4: actions on a run that changed meanwhile ------------------------------------------------
def test_cancel_of_a_run_that_finished_meanwhile_says_it_finished(db_url):
    run_id = queue(db_url, name="quick")
    at = page("runs", run_id)
    assert not button(at, f"Cancel #{run_id}").disabled  # the panel shows it queued
    work(db_url)  # it finishes while the page is open
    button(at, f"Cancel #{run_id}").click().run()
    assert not at.exception
    assert f"Run #{run_id} finished before it could be cancelled." in texts(at, "warning")
    assert status(db_url, run_id) == "finished"
    common.clear_caches()
    at.run()  # the next refresh: the panel says finished, Cancel off, Delete on
    assert any(c.startswith("finished · round 6 / 6") for c in texts(at, "caption"))
    assert button(at, f"Cancel #{run_id}").disabled


def test_cancel_of_a_queued_run_cancels_it_and_says_so(db_url):
    run_id = queue(db_url, name="waiting")
    at = page("runs", run_id)
    button(at, f"Cancel #{run_id}").click().run()
    assert f"Run #{run_id} cancelled before it started." in texts(at, "success")
    assert status(db_url, run_id) == "cancelled"


def test_cancel_and_re_run_of_a_run_deleted_meanwhile_say_so_and_create_nothing(db_url):
    for action, words in (("Cancel", "cancelled"), ("Re-run", "re-run")):
        run_id = queue(db_url, name="doomed")
        common.clear_caches()  # a new page of a new run (SQLite may give it the deleted run's id again)
        at = page("runs", run_id)
        with connect(db_url).write() as s:
            queries.delete_run(s, run_id)  # deleted elsewhere while the panel shows it
        button(at, f"{action} #{run_id}").click().run()
        assert not at.exception
        assert f"Run #{run_id} was deleted before it could be {words}." in texts(at, "warning")
        with connect(db_url).read() as s:
            assert queries.list_runs(s) == []


def test_delete_of_a_run_deleted_meanwhile_says_so(db_url):
    run_id = queue(db_url, name="gone")
    work(db_url)
    at = page("runs", run_id)
    with connect(db_url).write() as s:
        queries.delete_run(s, run_id)
    button(at, f"Yes, delete #{run_id}").click().run()
    assert not at.exception
    assert f"Run #{run_id} was already deleted." in texts(at, "warning")


# ---- item 4 (and 1): Live says why a run failed --------------------------------------------------------
@pytest.fixture
def failed_run(db_url, tmp_path) -> int:
    """A CIFAR-10 run on a host without CIFAR-10, failed by a real worker."""
    from engine.data import available

    if available("cifar10"):
        pytest.skip("CIFAR-10 is on this machine: the run would train instead of failing")
    run_id = queue(db_url, name="no data", data={"dataset": "cifar10", "data_dir": str(tmp_path / "empty")})
    work(db_url)
    assert status(db_url, run_id) == "failed"
    return run_id


def test_live_shows_a_failed_runs_reason_instead_of_waiting_for_a_point(failed_run, db_url):
    with connect(db_url).read() as s:
        stored = queries.get_run(s, failed_run).error
    at = page("live", failed_run)
    assert not at.exception
    (error,) = texts(at, "error")
    assert error.startswith(f"**Run #{failed_run} no data failed:** ")
    assert common.error_text(stored) in error and "cifar10" in error.lower()
    assert not re.search(r"\w+(Error|NotFound|Exception):", error)  # the message, not the exception's class
    assert not any("No evaluation step recorded yet" in i for i in texts(at, "info"))


def test_runs_and_result_pages_show_the_failure_without_the_exception_class(failed_run):
    for name in ("runs", "run"):
        at = page(name, failed_run)
        shown = " ".join(texts(at, "error"))
        assert f"Run #{failed_run} failed: " in shown and "cifar10" in shown.lower(), name
        assert "DatasetNotFound" not in shown and not re.search(r"\w+Error:", shown), name


def test_live_of_a_queued_run_says_the_first_point_is_to_come(db_url):
    run_id = queue(db_url, name="soon")
    at = page("live", run_id)
    assert any("No evaluation step recorded yet" in i for i in texts(at, "info"))
    assert not texts(at, "error")


@pytest.mark.parametrize(("stored", "shown"), [
    ("DatasetNotFound: The data set cifar10 is not on this machine.", "The data set cifar10 is not on this machine."),
    ("ValueError: items per client must be at most 1437, got 1000000000",
     "items per client must be at most 1437, got 1000000000"),
    ("engine.data.DatasetNotFound: no files", "no files"),
    ("RuntimeError: the GPU caught fire", "the GPU caught fire"),
    ("Note: nothing to strip", "Note: nothing to strip"),
    ("", ""),
])
def test_error_text_drops_the_exception_class_name(stored, shown):
    assert common.error_text(stored) == shown


@pytest.mark.parametrize(("count", "word", "many", "text"), [
    (1, "client", None, "1 client"), (2, "client", None, "2 clients"), (0, "round", None, "0 rounds"),
    (1, "batch", "batches", "1 batch"), (1000, "round", None, "1,000 rounds")])
def test_plural_agrees_with_the_count(count, word, many, text):
    assert common.plural(count, word, many) == text


def test_one_client_is_written_in_the_singular(db_url):
    run_id = queue(db_url, name="solo", num_clients=1)
    at = page("runs", run_id)
    assert any(c.endswith("· 1 client") for c in texts(at, "caption"))


# ---- item 7: the same time on the Runs and the result page, each named ------------------------------
def test_result_page_shows_the_runs_page_time_and_names_the_training_time(db_url):
    run_id = queue(db_url, name="timed")
    work(db_url)
    runs_at = page("runs")
    shown_on_runs = runs_at.dataframe[0].value.set_index("id").loc[run_id, "time"]
    at = page("run", run_id)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["time, start to end"] == shown_on_runs
    with connect(db_url).read() as s:
        wall_s = queries.get_run(s, run_id).summary["wall_s"]
    assert metrics["training rounds alone"] == common.fmt_seconds(wall_s)
    assert "wall time" not in metrics
    assert any(c.startswith("The other ") and "evaluation" in c for c in texts(at, "caption"))


# ---- item 7: InfoPro says why a run has no snapshots -------------------------------------------------
def test_infopro_says_a_run_with_images_off_recorded_none_and_never_will(db_url):
    queue(db_url, name="pictures")  # another run that has some, so the page has a list to offer
    quiet = queue(db_url, name="quiet", image_every=0)
    work(db_url, runs=2)
    at = page("infopro", quiet)
    assert not at.exception
    shown = " ".join(texts(at, "info"))
    assert f"Run #{quiet} recorded no snapshots and never will" in shown
    assert "**images every (rounds, 0: never)** is 0 (off)" in shown
    assert "yet" not in shown.split("Choose")[0]


def test_infopro_says_a_finished_run_ended_before_its_first_snapshot(db_url):
    run_id = queue(db_url, name="short", image_every=50)
    work(db_url)
    at = page("infopro", run_id)
    shown = " ".join(texts(at, "info"))
    assert (f"Run #{run_id} recorded no snapshots: it finished after 6 rounds, before its first was due at "
            "round 50 (**images every (rounds, 0: never)** = 50).") in shown


def test_infopro_labels_images_by_the_data_sets_class_names(db_url, monkeypatch):
    run_id = queue(db_url, name="named")
    work(db_url)
    labels = []
    real = images.row_label
    monkeypatch.setattr(images, "row_label", lambda j, y, classes: labels.append(real(j, y, classes)) or labels[-1])
    at = page("infopro", run_id)
    assert not at.exception and labels
    from engine.data import load_dataset

    names = load_dataset("synthetic").classes
    assert all(label.split("\n")[1] in names for label in labels)  # "class3", as the walkthrough shows it


def test_row_label_uses_the_class_name_and_falls_back_to_the_number():
    fashion = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot")
    assert images.row_label(0, np.array([9, 1]), fashion) == "image 1\nAnkle boot"
    assert images.row_label(1, np.array([9, 1]), None) == "image 2\nclass 1"
    assert images.row_label(2, np.array([9, 1]), fashion) == "image 3"


def test_a_grid_with_class_names_draws_them_not_the_number():
    x = np.random.default_rng(0).random((1, 1, 28, 28)).astype(np.float32)
    smashed = np.random.default_rng(1).random((1, 2, 14, 14)).astype(np.float32)
    by_name = images.labelled_snapshot_grid(x, smashed, None, np.array([9]), ("a",) * 9 + ("Ankle boot",))
    by_number = images.labelled_snapshot_grid(x, smashed, None, np.array([9]))
    assert not np.array_equal(by_name[:, :images.ROW_LABEL_PX], by_number[:, :images.ROW_LABEL_PX])
    assert np.array_equal(by_name[:, images.ROW_LABEL_PX:], by_number[:, images.ROW_LABEL_PX:])


# ---- item 7: the report's summary in words --------------------------------------------------------------
def test_report_summary_has_labels_and_values_in_words(db_url):
    run_id = queue(db_url, name="leaky", privacy={"every": 2, "attack_steps": 5})
    work(db_url)
    with connect(db_url).read() as s:
        run = queries.get_run(s, run_id).as_dict()
        history = queries.run_history(s, run_id)
    rows = dict(summary_rows(run["summary"]))
    assert rows["stopped before the last round"] == "no"
    assert rows["last leakage measurement: distance correlation"] == f"{run['summary']['leak_dcor']:.3f}"
    assert rows["uploaded, in all"].endswith(" MB")
    assert not [label for label in rows if "_" in label]  # every known key has words; no raw key shows
    assert set(run["summary"]) <= set(SUMMARY_LABELS)  # every figure a run writes today is named
    report = run_report(run, history, [])
    summary = report.split("<h2>Summary</h2>")[1].split("</table>")[0]
    assert "leak_dcor" not in summary and "stopped" not in summary.replace("stopped before", "")
    assert "<th>stopped before the last round</th><td>no</td>" in summary
    at = page("run", run_id)
    shown = at.dataframe[-1].value
    assert "leak_dcor" not in set(shown["figure"]) and "last leakage measurement: distance correlation" in set(
        shown["figure"])


# ---- item 7: SSIM's axis ends at 1 -------------------------------------------------------------------
@pytest.mark.parametrize("ssim", [[0.7], [0.93, 0.97], [-0.05, 0.4]])
def test_the_trade_off_scatter_never_runs_past_one_on_a_bounded_measure(ssim):
    points = pd.DataFrame({"id": range(len(ssim)), "name": "r", "techniques": "1,2", "accuracy": 0.8,
                           "leak_ssim": ssim})
    fig = accuracy_vs_leakage(points, "leak_ssim")
    lo, hi = fig.layout.xaxis.range
    assert hi <= 1.02 and lo <= min(ssim) and max(ssim) <= hi


# ---- item 7: Latency's |ŵ_c| is what averaging sends ---------------------------------------------------
def test_latency_defaults_count_the_decoder_as_averaging_sends_it(db_url):
    lower, _ = split_lenet5((1, 28, 28), 10, 1)
    decoder = InfoProDecoder(smashed_shape(lower, (1, 28, 28)), (1, 28, 28))
    sent = sum(p.numel() for p in decoder.parameters()) + sum(b.numel() for b in decoder.buffers()
                                                                 if b.is_floating_point())
    at = page("latency")
    values = {w.label: w.value for w in at.number_input}
    assert values["|ŵ_c|: auxiliary network (elements)"] == sent
    assert values["|w_c|: lower model (elements)"] == sum(p.numel() for p in lower.parameters())
    assert any(f"|ŵ_c| = {sent:,}" in c for c in texts(at, "caption"))


def test_the_ledger_counts_the_same_decoder_size(db_url):
    """The model exchange the ledger counts per client is |w_c| + |ŵ_c| floats, the Latency page's defaults."""
    from engine.ledger import FLOAT_BYTES, Ledger

    lower, _ = split_lenet5((1, 28, 28), 10, 1)
    decoder = InfoProDecoder(smashed_shape(lower, (1, 28, 28)), (1, 28, 28))
    ledger = Ledger()
    ledger.model_exchange(1, [lower, decoder])
    at = page("latency")
    values = {w.label: w.value for w in at.number_input}
    assert ledger.model_up == FLOAT_BYTES * (values["|w_c|: lower model (elements)"]
                                             + values["|ŵ_c|: auxiliary network (elements)"])

