"""A shaped uplink (engine.network.shaping): with the server in a network namespace behind a veth pair whose
client end is rate-limited by tc's token bucket, the measured upload time of a networked run follows the rate."""

from __future__ import annotations

import subprocess

import pytest

from engine.network.shaping import run_over, shaped_uplink, unavailable
from tests.engine.test_network import config

WHY_NOT = unavailable()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=f"traffic shaping not possible here: {WHY_NOT}")

SAMPLE_BYTES = 6 * 14 * 14 * 4 + 8  # Fashion-MNIST smashed at the paper's cut (float32) and its int64 label


@pytest.mark.parametrize("mbit", [10, 100])
def test_the_measured_upload_time_follows_the_uplink_rate(mbit, tmp_path):
    n, b = 3, 64
    cfg = config("parallel_sl", "process", num_clients=n, rounds=5, eval_every=5,
                 data={"dataset": "fashion-mnist", "samples_per_client": 1000})
    with shaped_uplink("sltest") as link:
        link.set_rate(mbit)
        result = run_over(link, cfg, str(tmp_path / "run.json"))
    assert "sltest" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    row = result["history"][-1]
    expected = n * b * SAMPLE_BYTES * 8 / (mbit * 1e6)  # every client's smashed data through one shared uplink
    assert row["latency_upload_s"] == pytest.approx(expected, rel=0.20)
    # the rest of the round is small next to the shaped upload at 10 Mbit/s
    if mbit == 10:
        assert row["latency_upload_s"] > 0.8 * row["round_s"]
