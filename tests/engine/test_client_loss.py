"""A networked run that survives a lost client (``on_client_loss = continue``): a client process killed
with SIGKILL mid-round, or one that hangs, is left out and the run finishes without it; the loss is
recorded in the history, the summary and the log; a process started again with the lost rank rejoins with
the global lower model; no process is left behind."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine.config import ConfigError, deep_merge, validate_config
from engine.data import load_dataset
from engine.network import server as server_module
from engine.network.server import ClientFailed, NetworkOptions
from engine.presets import get_preset, get_profile
from engine.trainer import Callbacks, Trainer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def config(preset: str = "locfedmix_sl", **overrides):
    data = deep_merge(get_profile("demo"), get_preset(preset).overrides())
    data = deep_merge(data, {"num_clients": 3, "rounds": 10, "eval_every": 2, "seed": 1, "transport": "process",
                             "on_client_loss": "continue", "data": {"dataset": "digits"}})
    return validate_config(deep_merge(data, overrides))


def strike_mid_round(monkeypatch, trainer_box: dict, round_: int, client: int, sig: int) -> dict:
    """Send ``sig`` to client ``client``'s process during the server step of round ``round_``: its smashed
    data have arrived, its cut-layer gradient and its report have not."""
    real, seen = server_module.server_step, {}

    def server_step(state, batch):
        if state.round + 1 == round_ and "at" not in seen and client in batch.clients:
            os.kill(trainer_box["trainer"].transport.procs[client].pid, sig)
            seen["at"] = time.monotonic()
        return real(state, batch)

    monkeypatch.setattr(server_module, "server_step", server_step)
    return seen


def processes_gone(trainer: Trainer) -> bool:
    return all(p.poll() is not None for p in trainer.transport.procs) and not trainer.transport.log_folder.exists()


@pytest.mark.parametrize("preset", ["locfedmix_sl", "vanilla_sl"])
def test_a_client_killed_mid_round_is_left_out_and_the_run_finishes(preset, digits, monkeypatch, caplog):
    box = {}
    seen = strike_mid_round(monkeypatch, box, round_=4, client=1, sig=signal.SIGKILL)
    trainer = box["trainer"] = Trainer(config(preset), digits, network=NetworkOptions(timeout_s=20))

    class Noticed(Callbacks):
        def on_round(self, tr, losses):
            if tr.transport.lost and "noticed" not in seen:
                seen["noticed"] = time.monotonic()

    with caplog.at_level(logging.WARNING, logger="splitlab.network"):
        result = trainer.run(Noticed())
    summary, history = result["summary"], result["history"]
    assert seen and summary["rounds_done"] == 10 and not summary["stopped"]
    [event] = summary["client_events"]
    assert event["event"] == "lost" and event["round"] == 4 and event["client"] == 1
    assert event["reason"].startswith("client 1 (rank 2) closed the connection")
    assert "was killed by SIGKILL" in event["reason"] and "in round 4, after it had trained 3 rounds" in event["reason"]
    # noticed in the round it happened, at once (the connection closed), not after the 20 s timeout
    assert seen["noticed"] - seen["at"] < 10
    assert [row["clients_lost"] for row in history] == [0, 1, 1, 1, 1]
    assert any("the run goes on with 2 of 3 clients" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)
    # the two live clients kept training: their lower models moved after the loss, the lost one's did not
    assert summary["final_test_acc"] > 0.3
    assert processes_gone(trainer)


def test_a_client_that_hangs_mid_round_is_stopped_by_the_server_and_left_out(digits, monkeypatch):
    box = {}
    seen = strike_mid_round(monkeypatch, box, round_=3, client=2, sig=signal.SIGSTOP)
    trainer = box["trainer"] = Trainer(config(rounds=6), digits, network=NetworkOptions(timeout_s=3))
    result = trainer.run()
    noticed = result["summary"]["client_events"][0]
    assert seen and result["summary"]["rounds_done"] == 6
    assert noticed["round"] == 3 and noticed["client"] == 2
    assert noticed["reason"].startswith("client 2 (rank 3) sent nothing for 3 s while ")
    assert noticed["reason"].endswith("the server stopped its process")
    assert trainer.transport.procs[2].returncode == -signal.SIGKILL  # stopped, not left hanging
    assert [row["clients_lost"] for row in result["history"]] == [0, 1, 1]
    assert processes_gone(trainer)


def test_a_client_started_again_with_the_lost_rank_rejoins_with_the_global_model(digits):
    """Killed after round 2; a new `engine client` process with its rank joins; from the next round on it
    trains again, starting from the global lower model (⑤ every round: at the end all lower models agree)."""
    cfg = config(rounds=8, eval_every=1, averaging={"interval": 1})
    trainer = Trainer(cfg, digits, network=NetworkOptions(timeout_s=20))
    address = trainer.transport.address
    started: dict[str, subprocess.Popen] = {}

    class KillThenRestart(Callbacks):
        def on_round(self, tr, losses):
            if tr.round == 2:
                os.kill(tr.transport.procs[1].pid, signal.SIGKILL)
                tr.transport.procs[1].wait()
            if tr.round == 3:  # lost in round 3; a new process claims rank 2 before round 4 begins
                env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
                started["again"] = subprocess.Popen(
                    [sys.executable, "-m", "engine", "client", "--server", str(address), "--rank", "2"],
                    cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                deadline = time.monotonic() + 120
                while not tr.transport.store.check(["rejoin/2"]):
                    assert time.monotonic() < deadline and started["again"].poll() is None
                    time.sleep(0.1)

    try:
        result = trainer.run(KillThenRestart())
        out, _ = started["again"].communicate(timeout=60)
    finally:
        if "again" in started and started["again"].poll() is None:
            started["again"].kill()
    events = result["summary"]["client_events"]
    assert [(e["event"], e["round"], e["client"]) for e in events] == [("lost", 3, 1), ("rejoined", 4, 1)]
    assert "rejoining the run" in out and started["again"].returncode == 0, out  # it stopped when the run ended
    assert [row["clients_lost"] for row in result["history"]] == [0, 0, 1, 0, 0, 0, 0, 0]
    assert result["summary"]["rounds_done"] == 8
    # averaged every round with everyone back: the three lower models are one model at the end
    lowers = [torch.cat([p.flatten() for p in m.parameters()]) for m in trainer.state.lowers]
    assert torch.equal(lowers[0], lowers[1]) and torch.equal(lowers[1], lowers[2])
    assert processes_gone(trainer)


def test_a_process_claiming_a_live_clients_rank_is_refused(digits):
    trainer = Trainer(config(rounds=2), digits)
    try:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        extra = subprocess.run([sys.executable, "-m", "engine", "client", "--server", str(trainer.transport.address),
                                "--rank", "2", "--timeout", "20"], cwd=ROOT, env=env, capture_output=True,
                               text=True, timeout=120, check=False)
        assert extra.returncode == 1
        assert "another client already joined the server at" in extra.stderr and "as rank 2" in extra.stderr
        assert trainer.run()["summary"]["rounds_done"] == 2  # the run itself is untouched
    finally:
        trainer.close(failed=True)


def test_by_default_a_lost_client_still_ends_the_run(digits, monkeypatch):
    box = {}
    strike_mid_round(monkeypatch, box, round_=2, client=0, sig=signal.SIGKILL)
    trainer = box["trainer"] = Trainer(config(on_client_loss="fail", rounds=4), digits)
    with pytest.raises(ClientFailed, match=r"^client 0 \(rank 1\) closed the connection.*, in round 2, ") as err:
        trainer.run()
    assert "pair.cc" not in str(err.value) and "SIGKILL" in str(err.value)
    assert processes_gone(trainer)


def test_continue_applies_to_networked_runs_only():
    with pytest.raises(ConfigError) as err:
        config(transport="inprocess")
    assert err.value.text() == ("on_client_loss continue applies to networked runs (transport process): in one "
                                "process no client can be lost")


def test_the_command_line_flag_sets_it_and_names_bad_values(capsys):
    from engine.cli import main

    assert main(["run", "--dataset", "digits", "--on-client-loss", "sometimes"]) == 2
    assert "--on-client-loss: invalid choice: 'sometimes'" in capsys.readouterr().err
    assert main(["run", "--dataset", "digits", "--on-client-loss", "continue", "--rounds", "1"]) == 2
    assert "error: --on-client-loss continue applies to networked runs" in capsys.readouterr().err


def test_a_hung_client_the_server_did_not_start_still_ends_the_run_saying_why(digits, monkeypatch):
    """Clients started elsewhere (`engine serve`): the server cannot stop a hung one, and gloo's timeout
    closes every connection of the server, so the run ends (rather than going on with nobody)."""
    from engine.network.wire import Address, free_port

    address = Address("127.0.0.1", free_port())
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    clients = [subprocess.Popen([sys.executable, "-m", "engine", "client", "--server", str(address), "--rank", str(r),
                                 "--timeout", "60"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL) for r in (1, 2, 3)]
    try:
        real = server_module.server_step

        def server_step(state, batch):
            if state.round + 1 == 3 and clients[2].poll() is None:
                os.kill(clients[2].pid, signal.SIGSTOP)
            return real(state, batch)

        monkeypatch.setattr(server_module, "server_step", server_step)
        trainer = Trainer(config(rounds=6), digits,
                          network=NetworkOptions(listen=address, spawn=False, timeout_s=3, join_timeout_s=120))
        with pytest.raises(ClientFailed) as err:
            trainer.run()
        message = str(err.value)
        assert message.startswith("client 2 (rank 3) sent nothing for 3 s while ")
        assert "in round 3" in message and message.endswith("so the run ends")
        assert [row["round"] for row in trainer.history] == [2]
    finally:
        for proc in clients:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
