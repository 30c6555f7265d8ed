"""The New run form and the Sweep tab queue exactly what is on screen, and only runs that can run here
(issue 26, items 1-4, through ``streamlit.testing.v1.AppTest``; the browser tests are in
``tests/e2e/test_front_door.py``).

- A number is read exactly as typed: text a field cannot hold exactly (a decimal or an exponent in a
  whole-number field, a huge integer, a real that is not finite) is refused in a message naming the
  field as labelled and the text typed; Queue is off and the summary claims nothing.
- The engine's preflight judges what depends on the data (items per client) and the data set being here.
- The data-set list says what is here, opens on a data set that is, and offers to get one that is not.
- The Sweep tab reads its numbers the same way, has "evaluate every" and "leakage every", and queues a
  grid once.
"""

from __future__ import annotations

import functools
import gzip
import http.server
import shutil
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from engine import data as engine_data
from pages.form_fields import _progress_to, parse_real, parse_whole
from tests.pages.support import button, errors, field, page, runs_in_db

SHARED_FASHION = Path(__file__).resolve().parents[3] / "shared" / "data" / "FashionMNIST" / "raw"
FASHION_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte")


def data_box(at, sweep: bool = False):
    """The One run tab's data-set list (the Sweep tab's with ``sweep``)."""
    return [w for w in at.selectbox if w.label == "data set"][1 if sweep else 0]


def summary_shown(at) -> bool:
    return any("× b=" in c.value for c in at.caption)


def in_order(node) -> Iterator:
    """Every element under ``node``, in the order the page draws them."""
    for child in getattr(node, "children", {}).values():
        yield child
        yield from in_order(child)


@pytest.fixture
def no_data(tmp_path, monkeypatch) -> Path:
    """A host with no data folder: the working folder, $SPLITLAB_DATA and the shared folder beside the
    project are empty (as on a fresh clone). Returns $SPLITLAB_DATA, where a download goes."""
    for name in ("cwd", "env", "shared"):
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("SPLITLAB_DATA", str(tmp_path / "env"))
    monkeypatch.setattr(engine_data, "_SHARED_DATA", tmp_path / "shared")
    monkeypatch.delenv(engine_data.MIRROR_ENV_VAR, raising=False)
    return tmp_path / "env"


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file as Fashion-MNIST ships them (uint8 data, big-endian sizes)."""
    magic = 0x0800 | array.ndim
    path.write_bytes(struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes())


@pytest.fixture
def tiny_fashion(no_data) -> Path:
    """A Fashion-MNIST of 100 training and 20 test images in $SPLITLAB_DATA, in torchvision's layout."""
    raw = no_data / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, count in (("train", 100), ("t10k", 20)):
        write_idx(raw / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28)))
        write_idx(raw / f"{split}-labels-idx1-ubyte", np.arange(count) % 10)
    return no_data


# --------------------------------------------------------------------------- reading numbers


@pytest.mark.parametrize(("text", "value"), [("12", 12), ("-5", -5), ("+7", 7), (" 3 ", 3),
                                             ("99999999999999999999", 99999999999999999999),
                                             ("9007199254740993", 9007199254740993)])
def test_a_whole_number_is_read_exactly(text, value):
    assert parse_whole(text) == value


@pytest.mark.parametrize("text", ["1.5", "1e3", "2.7", "", "1,000", "0x10", "ten", "1 000", "5.0", "--1", "١٢"])
def test_what_is_not_a_whole_number_is_not_read_as_one(text):
    assert parse_whole(text) is None


@pytest.mark.parametrize(("text", "value"), [("0.001", 0.001), ("1e-3", 0.001), (".5", 0.5), ("-2", -2.0),
                                             ("1E9", 1e9), ("3.", 3.0)])
def test_a_real_number_is_read_as_typed(text, value):
    assert parse_real(text) == value


@pytest.mark.parametrize("text", ["abc", "1e999", "-1e400", "nan", "inf", "Infinity", "", "0,5", "1e", "1_000"])
def test_what_is_not_a_finite_number_is_not_read_as_one(text):
    assert parse_real(text) is None


class Bar:
    def __init__(self):
        self.shown: list[tuple[float, str]] = []

    def progress(self, value: float, text: str) -> None:
        self.shown.append((value, text))


def test_the_progress_bar_follows_the_bytes_once_per_percent():
    bar = Bar()
    progress = _progress_to(bar, "Fashion-MNIST")
    for done in (0, 1_000_000, 1_000_001, 15_000_000, 30_000_000):
        progress(done, 30_000_000)
    assert [round(v, 4) for v, _ in bar.shown] == [0.0, 0.0333, 0.5, 1.0]  # 1,000,001: the same percent
    assert bar.shown[-1][1] == "Downloading Fashion-MNIST: 30.0 of 30.0 MB"


# --------------------------------------------------------------------------- the One run tab


REFUSED = [  # (form label, typed, what the message says): the message names the field and the text typed
    ("clients n", "99999999999999999999", "clients n must be between 1 and 1000, got 99,999,999,999,999,999,999"),
    ("seed", "99999999999999999999", "seed must be between 0 and 2,147,483,647, got 99,999,999,999,999,999,999"),
    ("rounds T", "9007199254740993", "rounds T must be between 1 and 100,000, got 9,007,199,254,740,993"),
    ("clients n", "1.5", "clients n must be a whole number, got 1.5"),
    ("clients n", "1e3", "clients n must be a whole number, got 1e3"),
    ("rounds T", "2.7", "rounds T must be a whole number, got 2.7"),
    ("rounds T", "", "rounds T must be a whole number, got nothing"),
    ("batch size b", "64.0", "batch size b must be a whole number, got 64.0"),
    ("evaluate every (rounds)", "1e1", "evaluate every (rounds) must be a whole number, got 1e1"),
    ("images every (rounds, 0: never)", "0x10", "images every (rounds, 0: never) must be a whole number, got 0x10"),
    ("leakage every (rounds, 0: off)", "2.0", "leakage every (rounds, 0: off) must be a whole number, got 2.0"),
    ("T_c, average every (rounds)", "1,000", "T_c, average every (rounds) must be a whole number, got 1,000"),
    ("items per client (0: default)", "1e3", "items per client (0: default) must be a whole number, got 1e3"),
    ("seed", "9" * 5000, f"seed must be a whole number of fewer digits, got one of 5,000 digits ({'9' * 40}…)"),
    ("learning rate η", "abc", "learning rate η must be a finite number, got abc"),
    ("learning rate η", "1e999", "learning rate η must be a finite number, got 1e999"),
    ("λ ~ Beta(α, β): α", "nan", "λ ~ Beta(α, β): α must be a finite number, got nan"),
    ("λ ~ Beta(α, β): β", "0,5", "λ ~ Beta(α, β): β must be a finite number, got 0,5"),
]


@pytest.mark.parametrize(("label", "typed", "message"), REFUSED)
def test_a_number_a_field_cannot_hold_is_refused_as_typed(db_url, label, typed, message):
    at = page("new_run")
    field(at, label).set_value(typed).run()
    assert field(at, label).value == typed  # shown as typed, never replaced
    assert message in errors(at)
    assert button(at, "Queue run").disabled
    assert not summary_shown(at)  # no summary of numbers other than those on screen
    assert runs_in_db(db_url) == []


def test_batches_per_client_is_read_exactly_too(db_url):
    at = page("new_run")
    next(w for w in at.selectbox if w.label == "start from a preset").set_value("splitfed_v2").run()
    field(at, "batches per client per round").set_value("2.5").run()
    assert "batches per client per round must be a whole number, got 2.5" in errors(at)
    assert button(at, "Queue run").disabled and not summary_shown(at)


def test_dirichlet_beta_is_refused_when_not_a_finite_number(db_url):
    at = page("new_run")
    next(w for w in at.selectbox if w.label == "partition").set_value("dirichlet").run()
    field(at, "Dirichlet β").set_value("inf").run()
    assert "Dirichlet β must be a finite number, got inf" in errors(at)
    assert button(at, "Queue run").disabled


def test_the_message_names_the_text_typed_last_not_a_value_before_it(db_url):
    at = page("new_run")
    field(at, "clients n").set_value("7").run()
    assert any("7 clients × 300 rounds" in c.value for c in at.caption)
    field(at, "clients n").set_value("7.5").run()
    assert "clients n must be a whole number, got 7.5" in errors(at)
    assert not summary_shown(at)
    field(at, "clients n").set_value("1.5").run()
    field(at, "clients n").set_value("2.7").run()
    assert "got 2.7" in errors(at) and "1.5" not in errors(at) and "7.5" not in errors(at)


def test_a_switched_off_field_with_unreadable_text_does_not_block_queue(db_url):
    at = page("new_run")
    field(at, "λ ~ Beta(α, β): α").set_value("abc").run()
    assert button(at, "Queue run").disabled
    next(w for w in at.checkbox if w.label == "③ smashed-data mixup").uncheck().run()
    assert field(at, "λ ~ Beta(α, β): α").disabled and not at.error  # mixup is off: α is not used
    button(at, "Queue run").click().run()
    (run,) = runs_in_db(db_url)
    assert not run.config["mixup"]["enabled"]


def test_the_values_typed_are_the_values_queued(db_url):
    at = page("new_run")
    data_box(at).set_value("digits").run()
    for label, typed in (("clients n", "3"), ("rounds T", "9"), ("seed", "2147483647"), ("learning rate η", "5e-4"),
                         ("evaluate every (rounds)", "3"), ("items per client (0: default)", "200")):
        field(at, label).set_value(typed).run()
    assert any("3 clients × 9 rounds × b=64" in c.value for c in at.caption)
    button(at, "Queue run").click().run()
    (run,) = runs_in_db(db_url)
    cfg = run.config
    assert (cfg["num_clients"], cfg["rounds"], cfg["seed"], cfg["eval_every"]) == (3, 9, 2147483647, 3)
    assert cfg["optim"]["lr"] == 5e-4 and cfg["data"]["samples_per_client"] == 200


def test_one_client_one_round_in_the_singular(db_url):
    at = page("new_run")
    next(w for w in at.checkbox if w.label == "③ smashed-data mixup").uncheck().run()
    field(at, "clients n").set_value("1").run()
    field(at, "rounds T").set_value("1").run()
    field(at, "evaluate every (rounds)").set_value("1").run()
    assert any("1 client × 1 round × b=64" in c.value for c in at.caption)


def test_items_per_client_beyond_the_data_is_refused_under_the_data_section(db_url):
    at = page("new_run")
    data_box(at).set_value("digits").run()
    field(at, "items per client (0: default)").set_value("1000000000").run()
    message = "items per client (0: default) must be at most the 1,437 training samples of digits"
    assert message in errors(at) and "got 1,000,000,000" in errors(at)
    assert button(at, "Queue run").disabled and not summary_shown(at)
    drawn = list(in_order(at.main))
    where = {name: next(i for i, e in enumerate(drawn) if test(e)) for name, test in (
        ("data", lambda e: getattr(e, "value", None) == "**Data**"),
        ("scale", lambda e: getattr(e, "value", None) == "**Scale and optimiser**"),
        ("message", lambda e: e.type == "error" and message in str(e.value).replace("\\", "")))}
    assert where["data"] < where["message"] < where["scale"]
    assert runs_in_db(db_url) == []


# --------------------------------------------------------------------------- data that is not here yet


def test_on_a_host_without_data_the_form_opens_on_digits(db_url, no_data):
    at = page("new_run")
    box = data_box(at)
    assert box.value == "digits"
    assert box.options == ["fashion-mnist (not downloaded)", "cifar10 (not downloaded)", "digits (here)",
                           "synthetic (here)"]
    assert not at.error and not button(at, "Queue run").disabled
    button(at, "Queue run").click().run()
    (run,) = runs_in_db(db_url)
    assert run.config["data"]["dataset"] == "digits"


def test_the_form_opens_on_fashion_mnist_when_it_is_here_and_judges_its_size(db_url, tiny_fashion):
    at = page("new_run")
    assert data_box(at).value == "fashion-mnist"
    assert data_box(at).options[0] == "fashion-mnist (here)"
    field(at, "items per client (0: default)").set_value("101").run()  # this copy holds 100 images
    assert "items per client (0: default) must be at most the 100 training samples of Fashion-MNIST" in errors(at)
    field(at, "items per client (0: default)").set_value("100").run()
    assert not at.error and not button(at, "Queue run").disabled


@pytest.mark.parametrize(("dataset", "title"), [("fashion-mnist", "Fashion-MNIST"), ("cifar10", "CIFAR-10")])
def test_a_missing_data_set_blocks_queue_and_offers_to_get_it(db_url, no_data, dataset, title):
    at = page("new_run")
    data_box(at).set_value(dataset).run()
    assert f"data set must be a data set this host has: {title} is in none of its data folders" in errors(at)
    assert button(at, "Queue run").disabled
    assert f"Get {title}" in [b.label for b in at.button]
    assert runs_in_db(db_url) == []


def closed_port() -> int:
    """A loopback port nothing listens on: connecting is refused, as without a network."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_get_without_a_network_says_in_one_line_where_to_put_the_files(db_url, no_data, monkeypatch):
    monkeypatch.setenv(engine_data.MIRROR_ENV_VAR, f"http://127.0.0.1:{closed_port()}/")
    at = page("new_run")
    data_box(at).set_value("fashion-mnist").run()
    button(at, "Get Fashion-MNIST").click().run()
    failed = [e.value.replace("\\", "") for e in at.error if "was not downloaded" in e.value]
    assert len(failed) == 1 and "\n" not in failed[0]
    assert "Fashion-MNIST was not downloaded" in failed[0]
    assert f"in {no_data / 'FashionMNIST' / 'raw'}" in failed[0]  # where to put the files
    assert data_box(at).options[0] == "fashion-mnist (not downloaded)"
    assert button(at, "Queue run").disabled and runs_in_db(db_url) == []


@pytest.fixture
def mirror(tmp_path) -> Iterator[str]:
    """A loopback HTTP server with Fashion-MNIST's distribution files (the real ones: their checksums are
    torchvision's), as a mirror. Its address."""
    if not all((SHARED_FASHION / f"{f}.gz").is_file() for f in FASHION_FILES):
        pytest.skip(f"Fashion-MNIST's .gz files are not in {SHARED_FASHION}")
    served = tmp_path / "mirror"
    served.mkdir()
    for f in FASHION_FILES:
        shutil.copy(SHARED_FASHION / f"{f}.gz", served)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    thread.join()


def test_get_downloads_the_data_set_and_the_list_then_says_here(db_url, no_data, mirror, monkeypatch):
    monkeypatch.setenv(engine_data.MIRROR_ENV_VAR, mirror)
    at = page("new_run")
    data_box(at).set_value("fashion-mnist").run()
    button(at, "Get Fashion-MNIST").click().run()
    assert not at.exception
    box = data_box(at)
    assert box.value == "fashion-mnist" and box.options[0] == "fashion-mnist (here)"  # still the one chosen
    assert not at.error and not button(at, "Queue run").disabled
    assert "Get Fashion-MNIST" not in [b.label for b in at.button]
    raw = no_data / "FashionMNIST" / "raw"
    with gzip.open(raw / "train-labels-idx1-ubyte.gz") as f:
        assert f.read(8)[4:] == (60_000).to_bytes(4, "big")
    button(at, "Queue run").click().run()
    (run,) = runs_in_db(db_url)
    assert run.config["data"]["dataset"] == "fashion-mnist"


# --------------------------------------------------------------------------- the Sweep tab


def sweep_field(at, name: str):
    """A Sweep-tab field by its key (its labels "seed" and "leakage every ..." are the One run tab's too)."""
    return at.text_input(key=f"sweep_{name}") if name != "ns" else field(at, "clients n (comma-separated)")


SWEEP_REFUSED = [  # (field, typed, what the message says)
    ("ns", "-2", "clients n must be between 1 and 1000, got -2 (every row)"),
    ("ns", "5,1.5", "clients n: 1.5 is not a whole number; give whole numbers separated by commas, e.g. 10,20,40"),
    ("ns", "1e3", "clients n: 1e3 is not a whole number"),
    ("rounds", "2.7", "rounds must be a whole number, got 2.7"),
    ("rounds", "9007199254740993", "rounds must be between 1 and 100,000, got 9,007,199,254,740,993 (every row)"),
    ("seed", "99999999999999999999", "seed must be between 0 and 2,147,483,647, got 99,999,999,999,999,999,999"),
    ("eval_every", "1e1", "evaluate every must be a whole number, got 1e1"),
    ("privacy_every", "3", "leakage every (rounds, 0: off) must be a multiple of 'evaluate every' (10)"),
]


@pytest.mark.parametrize(("name", "typed", "message"), SWEEP_REFUSED)
def test_sweep_refuses_what_it_cannot_queue_naming_the_field(db_url, name, typed, message):
    at = page("new_run")
    sweep_field(at, name).set_value(typed).run()
    assert sweep_field(at, name).value == typed
    assert message in errors(at)
    assert parse_whole(typed) is None or f"{typed} is not a whole number" not in errors(at)  # -2 is one
    assert button(at, "Queue sweep").disabled
    assert not any("values of n" in c.value for c in at.caption)
    assert runs_in_db(db_url) == []


def test_sweep_feeds_the_leakage_scatter_and_queues_a_grid_once(db_url):
    at = page("new_run")
    next(w for w in at.multiselect if w.label.startswith("technique combinations")).set_value([8]).run()
    data_box(at, sweep=True).set_value("digits").run()
    for name, typed in (("ns", "3"), ("rounds", "4"), ("eval_every", "2"), ("privacy_every", "4")):
        sweep_field(at, name).set_value(typed).run()
    assert any(c.value.startswith("1 run: 1 combination × 1 value of n (3) · digits · 4 rounds each")
               for c in at.caption)
    button(at, "Queue sweep").click().run()
    (run,) = runs_in_db(db_url)
    assert (run.config["eval_every"], run.config["privacy"]["every"], run.config["rounds"]) == (2, 4, 4)
    assert button(at, "Queue sweep").disabled  # queued: a second click queues nothing
    assert any(f"Queued 1 run: #{run.id}." in s.value for s in at.success)
    sweep_field(at, "seed").set_value("0").run()  # a rerun with the same grid: still queued, still said
    assert button(at, "Queue sweep").disabled and any(f"#{run.id}" in s.value for s in at.success)
    sweep_field(at, "ns").set_value("3,5").run()  # another grid: Queue sweep is on again
    assert not button(at, "Queue sweep").disabled and not at.success
    assert any(c.value.startswith("2 runs: 1 combination × 2 values of n (3, 5)") for c in at.caption)
    button(at, "Queue sweep").click().run()
    assert sorted(r.config["num_clients"] for r in runs_in_db(db_url)) == [3, 3, 5]
    assert any("Queued 2 runs: #2, #3." in s.value for s in at.success)


def test_sweep_on_a_missing_data_set_is_not_queued(db_url, no_data):
    at = page("new_run")
    assert data_box(at, sweep=True).value == "digits"
    data_box(at, sweep=True).set_value("cifar10").run()
    assert "data set must be a data set this host has: CIFAR-10 is in none of its data folders" in errors(at)
    assert "(every row)" in errors(at) and button(at, "Queue sweep").disabled
    assert "Get CIFAR-10" in [b.label for b in at.button]


def test_sweep_says_a_setting_that_does_nothing_once_for_the_grid(db_url):
    at = page("new_run")
    sweep_field(at, "rounds").set_value("5").run()  # evaluate every 10 > 5 rounds: curves of one point
    warned = [w.value for w in at.warning if "evaluating every 10 rounds in a run of 5 rounds" in w.value]
    assert len(warned) == 1 and not button(at, "Queue sweep").disabled
