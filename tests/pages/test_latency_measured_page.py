"""The Latency page's "Measured over the network" section: a networked run trained by a real worker (its
clients in processes of their own) shows its measured round, part by part, beside the Table 4 and bytes models."""

from __future__ import annotations

import pytest

from tests.pages.support import page, train_runs

NETWORKED = {"num_clients": 3, "rounds": 6, "batch_size": 8, "eval_every": 2, "transport": "process",
             "data": {"dataset": "digits", "eval_subset": 32}, "optim": {"name": "adam", "lr": 0.001},
             "local_loss": {"enabled": True, "average_aux": True}, "averaging": {"enabled": True},
             "mixup": {"enabled": True, "num_partners": 1}}


@pytest.fixture
def networked_run(db_url) -> int:
    return train_runs(db_url, [("lfm over tcp", {})], base=NETWORKED)[0]


def test_latency_page_shows_a_networked_runs_measured_round_beside_the_models(networked_run):
    at = page("latency")
    assert not at.exception
    assert at.selectbox[0].options == [next(o for o in at.selectbox[0].options if "lfm over tcp" in o)]
    metrics = {m.label: m.value for m in at.metric}
    assert set(metrics) == {"measured per round", "Table 4 model", "bytes model"}
    assert all(v.endswith(" ms") or v.endswith(" s") for v in metrics.values())
    assert len(at.get("plotly_chart")) == 3  # the model, the bytes, the measured round
    rate = next(w for w in at.number_input if w.label.startswith("uplink rate for the models"))
    assert rate.value > 10  # loopback: what the uploads achieved is far above a real uplink
    before = metrics["Table 4 model"]
    rate.set_value(1.0).run()  # 1 Mbit/s: the model's upload term dominates
    after = {m.label: m.value for m in at.metric}["Table 4 model"]
    assert after != before and after.endswith(" s") and float(after.split()[0]) > 1


def test_latency_page_without_networked_runs_says_how_to_make_one(db_url):
    train_runs(db_url, [("in one process", {})], base={**NETWORKED, "transport": "inprocess"})
    at = page("latency")
    assert not at.exception
    assert any("--transport process" in i.value for i in at.info)
