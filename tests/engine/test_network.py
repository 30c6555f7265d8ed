"""The process transport (engine.network): a server and n client processes over torch.distributed (gloo, TCP
on loopback) train exactly what the in-process engine trains, time their rounds, and fail cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from engine.config import config_problems, deep_merge, validate_config
from engine.data import load_dataset
from engine.network.launcher import ForkedClient
from engine.network.server import LATENCY_KEYS, ClientFailed, NetworkOptions
from engine.network.wire import Address, free_port, open_store
from engine.presets import PRESETS, get_preset, get_profile
from engine.trainer import Callbacks, Trainer

ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = ROOT.parent / "shared" / "data"
TIMING_KEYS = {"round_s", "wall_s", *LATENCY_KEYS}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(autouse=True)
def one_thread():
    """The clients compute with one thread each; so does the reference here. (With more threads a sum is
    split differently and rounds differently: a conv bias followed by BatchNorm, whose true gradient is 0,
    then gets different rounding noise, which Adam scales to full-size steps.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def config(preset: str, transport: str, **overrides):
    data = deep_merge(get_profile("demo"), get_preset(preset).overrides())
    data = deep_merge(data, {"num_clients": 3, "rounds": 4, "eval_every": 2, "seed": 1,
                             "data": {"dataset": "digits"}, "transport": transport})
    return validate_config(deep_merge(data, overrides))


def assert_same_history(reference: list[dict], networked: list[dict], tol: float = 1e-5) -> None:
    assert [r["round"] for r in reference] == [r["round"] for r in networked]
    for ref, net in zip(reference, networked):
        assert set(net) - set(ref) == set(LATENCY_KEYS)
        for key, value in ref.items():
            if key not in TIMING_KEYS:
                assert net[key] == pytest.approx(value, abs=tol, rel=tol), f"round {ref['round']}: {key}"


def assert_same_models(a: Trainer, b: Trainer, tol: float = 1e-5) -> None:
    modules = [(a.state.upper, b.state.upper), *zip(a.state.lowers, b.state.lowers),
               *zip(a.state.auxes or [], b.state.auxes or [])]
    for ma, mb in modules:
        for (name, x), y in zip(ma.state_dict().items(), mb.state_dict().values()):
            assert torch.allclose(x.float(), y.float(), atol=tol, rtol=tol), name


def no_client_processes_left(trainer: Trainer) -> bool:
    """Every client process has ended, and the folder of their logs is gone."""
    folder = trainer.transport.log_folder
    return all(proc.poll() is not None for proc in trainer.transport.procs) and not folder.exists()


def networked_presets() -> list:
    """Every preset; one whose config the process transport refuses (the SplitFed schedules) is skipped,
    with the engine's own reason."""
    out = []
    for name in PRESETS:
        data = deep_merge(get_preset(name).overrides(), {"num_clients": 3, "transport": "process"})
        refused = [p.text() for p in config_problems(data)]
        out.append(pytest.param(name, marks=pytest.mark.skip(reason="; ".join(refused))) if refused else name)
    return out


@pytest.mark.parametrize("preset", networked_presets())
def test_every_preset_trains_over_the_network_exactly_as_in_one_process(preset, digits):
    reference = Trainer(config(preset, "inprocess"), digits)
    ref = reference.run()
    networked = Trainer(config(preset, "process"), digits)
    net = networked.run()
    assert_same_history(ref["history"], net["history"])
    assert net["summary"]["final_test_acc"] == pytest.approx(ref["summary"]["final_test_acc"], abs=1e-6)
    assert_same_models(reference, networked)
    assert no_client_processes_left(networked)
    # every round was timed, in parts that add up to no more than the round
    row = net["history"][-1]
    assert all(row[key] >= 0 for key in LATENCY_KEYS) and row["latency_client_s"] > 0
    assert sum(row[key] for key in LATENCY_KEYS) <= row["round_s"] * 1.05


def test_unusual_options_train_the_same_over_the_network(digits):
    """cutmix with a ratio per sample and the mixup gradient sent back, SplitAvg in a phase, the norm local
    loss, averaging every 2 rounds (④' included), iid shards, 4 clients, SGD with momentum."""
    odd = {"num_clients": 4, "rounds": 6, "eval_every": 3, "data": {"partition": "iid"},
           "optim": {"name": "momentum", "lr": 0.01},
           "mixup": {"enabled": True, "variant": "cutmix", "per_sample": True, "grad_to_clients": True,
                     "num_partners": 2, "reduction": "mean"},
           "split_avg": {"enabled": True, "fraction": 0.5, "phase": "last", "phase_fraction": 0.5},
           "local_loss": {"enabled": True, "kind": "norm", "average_aux": True},
           "averaging": {"enabled": True, "interval": 2}}
    ref = Trainer(config("locfedmix_sl", "inprocess", **odd), digits).run()
    net = Trainer(config("locfedmix_sl", "process", **odd), digits).run()
    assert_same_history(ref["history"], net["history"])


def test_a_networked_checkpoint_resumes_in_process_and_over_the_network_alike(digits):
    """Checkpoints are interchangeable: written over the network, resumed over the network or in one process."""
    cfg_net = config("locfedmix_sl", "process", rounds=6)
    first = Trainer(cfg_net, digits)

    class StopAt3(Callbacks):
        def should_stop(self, trainer):
            return trainer.round == 3

    assert first.run(StopAt3())["summary"]["stopped"]
    checkpoint = first.checkpoint_bytes()
    assert no_client_processes_left(first)

    uninterrupted = Trainer(config("locfedmix_sl", "inprocess", rounds=6), digits).run()
    resumed_net = Trainer.from_checkpoint(checkpoint, digits).run()
    here = Trainer.from_checkpoint(checkpoint, digits, in_process=True)
    assert here.transport is None
    resumed_here = here.run()
    assert_same_history(uninterrupted["history"], resumed_net["history"])
    for ref, row in zip(uninterrupted["history"], resumed_here["history"]):
        assert {k: v for k, v in row.items() if k not in TIMING_KEYS} == \
            pytest.approx({k: v for k, v in ref.items() if k not in TIMING_KEYS}, abs=1e-5)


# ---- clients that come and go (cfg.participation) over the network -----------------------------------
COMING_AND_GOING = {
    # a fraction and dropouts, averaging every round with ④' (absent clients fall behind and come back)
    "locfedmix_sl": {"num_clients": 4, "rounds": 6, "participation": {"fraction": 0.5, "dropout": 0.3},
                     "local_loss": {"average_aux": True}, "averaging": {"interval": 1}},
    # Vanilla SL skips the absent clients in its sequence; the lower model goes around the present ones
    "vanilla_sl": {"num_clients": 4, "rounds": 6, "participation": {"dropout": 0.4}},
    # stragglers cut off by a deadline count as absent; SGLR's averaging of the cut-layer gradients
    "sglr": {"num_clients": 4, "rounds": 6, "participation": {"speed_spread": 1.0, "deadline": 1.2}},
}


@pytest.mark.parametrize("preset", list(COMING_AND_GOING))
def test_clients_that_come_and_go_train_over_the_network_exactly_as_in_one_process(preset, digits):
    overrides = COMING_AND_GOING[preset]
    reference = Trainer(config(preset, "inprocess", **overrides), digits)
    ref = reference.run()
    networked = Trainer(config(preset, "process", **overrides), digits)
    net = networked.run()
    present = [r["clients_present"] for r in ref["history"]]
    assert min(present) < 4, "no client was ever absent: the test would not test absence"
    assert_same_history(ref["history"], net["history"])
    assert_same_models(reference, networked)
    assert networked.state.ledger.model_down == reference.state.ledger.model_down
    assert networked.state.behind == reference.state.behind
    assert no_client_processes_left(networked)


def test_a_networked_run_with_absent_clients_resumes_from_a_checkpoint_exactly(digits):
    """The participation draws are part of the checkpoint: a client process started afresh replays them."""
    overrides = COMING_AND_GOING["locfedmix_sl"]
    first = Trainer(config("locfedmix_sl", "process", **overrides), digits)

    class StopAt3(Callbacks):
        def should_stop(self, trainer):
            return trainer.round == 3

    assert first.run(StopAt3())["summary"]["stopped"]
    assert first.state.behind, "no client was behind at the checkpoint: the test would not test the return"
    resumed = Trainer.from_checkpoint(first.checkpoint_bytes(), digits)
    got = resumed.run()
    uninterrupted = Trainer(config("locfedmix_sl", "inprocess", **overrides), digits)
    expected = uninterrupted.run()
    assert_same_history(expected["history"], got["history"])
    assert_same_models(uninterrupted, resumed)


def test_a_networked_runs_round_is_traced_in_one_process(digits):
    from engine.trace import trace_round

    first = Trainer(config("locfedmix_sl", "process", rounds=2), digits)
    first.run()
    checkpoint = first.checkpoint_bytes()
    traced = trace_round(first.cfg, digits, checkpoint)
    assert traced.round == 3 and traced.config.transport == "inprocess"
    fresh = trace_round(first.cfg, digits)
    assert fresh.round == 1


def test_a_three_client_locfedmix_sl_run_learns_fashion_mnist_over_the_network():
    fashion = load_dataset("fashion-mnist", data_dir=SHARED_DATA)
    cfg = config("locfedmix_sl", "process", rounds=60, eval_every=20,
                 data={"dataset": "fashion-mnist", "data_dir": str(SHARED_DATA), "samples_per_client": 2000})
    trainer = Trainer(cfg, fashion)
    result = trainer.run()
    accs = [row["test_acc"] for row in result["history"]]
    assert accs[-1] > 0.55 and accs[-1] > accs[0]  # chance is 0.10
    assert result["summary"]["final_test_acc"] > 0.55
    # the ledger counts what travelled: 3 clients x 64 samples x (6x14x14 floats + a label) per round up,
    # and the server's end of the links did receive that much (and more: model uploads, evaluation pulls)
    smashed = result["summary"]["bytes_smashed_up"]
    assert smashed == 60 * 3 * 64 * (6 * 14 * 14 * 4 + 8)
    assert trainer.transport.link.received > smashed + result["summary"]["bytes_model_up"]
    assert no_client_processes_left(trainer)


DEFENSES = {"noise": {"noise": 0.5}, "nopeek": {"nopeek": 1.0}, "bits": {"bits": 4},
            "all": {"noise": 0.2, "nopeek": 0.5, "bits": 3}}


@pytest.mark.parametrize("defense", list(DEFENSES))
def test_defenses_train_over_the_network_exactly_as_in_one_process(defense, digits):
    """Each client draws its own noise, adds its own NoPeek penalty and sends its own quantised codes:
    the server decodes exactly what the in-process round receives."""
    overrides = {"rounds": 2, "defense": DEFENSES[defense]}
    reference = Trainer(config("locfedmix_sl", "inprocess", **overrides), digits)
    ref = reference.run()
    networked = Trainer(config("locfedmix_sl", "process", **overrides), digits)
    net = networked.run()
    assert_same_history(ref["history"], net["history"])
    assert_same_models(reference, networked)


def test_four_bits_send_eight_times_fewer_smashed_bytes_over_the_network(digits):
    """The server counts the bytes of the tensors it received (codes packed 4 bits each, lo and hi as two
    float32s), and the links carried exactly those bytes, the labels and the clients' reports."""
    sent = {}
    for bits in (0, 4):
        trainer = Trainer(config("parallel_sl", "process", defense={"bits": bits}), digits)
        try:
            state, link = trainer.state, trainer.transport.link
            before_link, before_ledger = link.received, state.ledger.smashed_up
            trainer.transport.run_round(state)
            sent[bits] = state.ledger.smashed_up - before_ledger
            reports = state.num_clients * 3 * 8  # each client's (local loss, forward s, backward s) as float64
            assert link.received - before_link == sent[bits] + reports
        finally:
            trainer.close()
    cfg = config("parallel_sl", "process")
    labels = cfg.num_clients * cfg.batch_size * 8
    ranges = cfg.num_clients * 2 * 4
    assert sent[0] - labels == (sent[4] - labels - ranges) * 8
    assert sent[0] == cfg.num_clients * cfg.batch_size * (6 * 14 * 14 * 4 + 8)


def test_a_noisy_networked_run_resumes_from_a_checkpoint_exactly(digits):
    """The clients' noise streams travel in the checkpoint: pulled from the clients, pushed back on resume."""
    noisy = {"rounds": 4, "defense": {"noise": 0.5}}
    first = Trainer(config("parallel_sl", "process", **noisy), digits)

    class StopAt2(Callbacks):
        def should_stop(self, trainer):
            return trainer.round == 2

    assert first.run(StopAt2())["summary"]["stopped"]
    uninterrupted = Trainer(config("parallel_sl", "inprocess", **noisy), digits).run()
    resumed = Trainer.from_checkpoint(first.checkpoint_bytes(), digits).run()
    assert_same_history(uninterrupted["history"], resumed["history"])


@pytest.mark.parametrize("how", ["killed", "hung"])
def test_a_client_that_dies_or_hangs_fails_the_run_naming_it(how, digits):
    cfg = config("locfedmix_sl", "process", rounds=200, eval_every=2)
    trainer = Trainer(cfg, digits, network=NetworkOptions(timeout_s=3))
    seen = {}

    class Break(Callbacks):
        def on_round(self, tr, losses):
            if tr.round == 3:
                victim = tr.transport.procs[1]
                os.kill(victim.pid, signal.SIGKILL if how == "killed" else signal.SIGSTOP)
                seen["at"] = time.monotonic()

    with pytest.raises(ClientFailed) as err:
        trainer.run(Break())
    noticed = time.monotonic() - seen["at"]
    message = str(err.value)
    assert message.startswith("client 1 (rank 2) ")
    if how == "killed":
        assert "closed the connection" in message and "SIGKILL" in message and noticed < 3
    else:
        assert "sent nothing for 3 s" in message and noticed < 10
    # what happened, not "before joining": it had joined and trained three rounds
    assert re.search(r", in round 4, after it had trained 3 rounds \(\d+ s since the clients joined\)", message)
    assert "before joining" not in message and "pair.cc" not in message
    assert [row["round"] for row in trainer.history] == [2]  # the metrics up to the failure are kept
    assert no_client_processes_left(trainer)


def test_a_client_that_cannot_start_fails_the_start_with_what_it_said(digits, tmp_path, monkeypatch):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'starting...'\necho 'cannot start: out of memory' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("SPLITLAB_CLIENT_LAUNCH", "exec")  # each client a fresh interpreter: this one
    monkeypatch.setattr(sys, "executable", str(fake))
    with pytest.raises(ClientFailed, match=r"^client \d exited with code 3 before joining: cannot start: out of memory$"):
        Trainer(config("parallel_sl", "process"), digits)


def test_a_client_killed_after_it_joined_is_not_reported_as_never_joining(digits, tmp_path, monkeypatch):
    """Client 0 starts, loads its data and says it is ready; client 1 never comes. Killed while it waits
    for client 1, client 0 is reported as what it was: joined, then killed before any round."""
    real = sys.executable
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\ncase \"$*\" in *'--rank 2'*) exec sleep 600;; esac\n"
                    f"echo $$ > {tmp_path}/client.pid\nexec {real} \"$@\"\n")
    fake.chmod(0o755)
    monkeypatch.setenv("SPLITLAB_CLIENT_LAUNCH", "exec")  # each client a fresh interpreter: this one
    monkeypatch.setattr(sys, "executable", str(fake))
    listen = Address("127.0.0.1", free_port())
    killed = threading.Event()

    def kill_client_0_once_it_is_ready():
        store = open_store(listen, 1, timeout_s=120)  # a look at the run's rendezvous, as a client sees it
        store.wait(["data/1"])  # client 0 has loaded its data and is waiting for the others
        os.kill(int((tmp_path / "client.pid").read_text()), signal.SIGKILL)
        killed.set()

    watcher = threading.Thread(target=kill_client_0_once_it_is_ready, daemon=True)
    watcher.start()
    with pytest.raises(ClientFailed) as err:
        Trainer(config("parallel_sl", "process", num_clients=2), digits,
                network=NetworkOptions(listen=listen, join_timeout_s=120))
    assert killed.is_set()
    assert re.fullmatch(r"client 0 had joined and loaded its data, then was killed by SIGKILL while waiting for the "
                        r"other clients, \d+ s after it was started, before any round", str(err.value)), str(err.value)


def test_clients_on_other_data_than_the_server_are_refused(digits):
    other = type(digits)(digits.name, digits.train_x, digits.train_y.flip(0), digits.test_x, digits.test_y,
                         digits.classes)
    with pytest.raises(ClientFailed, match=r"client 0 loaded other training data than the server \(digits "):
        Trainer(config("parallel_sl", "process"), other)


def test_clients_forked_from_the_launcher_train_as_fresh_interpreters_do(digits, monkeypatch):
    """By default the clients are forked from one pre-imported launcher process; SPLITLAB_CLIENT_LAUNCH=exec
    starts each as ``python -m engine client``. The two train the same run bit for bit."""
    forked = Trainer(config("locfedmix_sl", "process"), digits)
    by_fork = forked.run()
    assert forked.transport.procs and all(isinstance(p, ForkedClient) for p in forked.transport.procs)
    monkeypatch.setenv("SPLITLAB_CLIENT_LAUNCH", "exec")
    fresh = Trainer(config("locfedmix_sl", "process"), digits)
    by_exec = fresh.run()
    assert all(isinstance(p, subprocess.Popen) for p in fresh.transport.procs)
    untimed = [[{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in out["history"]]
               for out in (by_fork, by_exec)]
    assert untimed[0] == untimed[1]
    assert_same_models(forked, fresh, tol=0.0)
    assert no_client_processes_left(forked) and no_client_processes_left(fresh)


def test_a_script_without_a_main_guard_runs_a_networked_run_once(tmp_path):
    """multiprocessing would run the parent's main script again in each child it starts; the launcher's
    clients must not (a script that trains without ``if __name__ == "__main__"`` would start itself again)."""
    script = tmp_path / "train.py"
    script.write_text(
        "from engine.config import deep_merge, validate_config\n"
        "from engine.presets import get_preset, get_profile\n"
        "from engine.trainer import Trainer\n"
        "print('script started', flush=True)\n"
        "data = deep_merge(get_profile('demo'), get_preset('parallel_sl').overrides())\n"
        "cfg = validate_config(deep_merge(data, {'num_clients': 2, 'rounds': 2, 'eval_every': 2,\n"
        "                                        'data': {'dataset': 'digits'}, 'transport': 'process'}))\n"
        "out = Trainer(cfg).run()\n"
        "print('trained', len(out['history']), flush=True)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["script started", "trained 1"], done.stdout


def test_a_bad_client_launch_setting_is_one_line(digits, monkeypatch):
    monkeypatch.setenv("SPLITLAB_CLIENT_LAUNCH", "thread")
    with pytest.raises(ClientFailed, match=r"^the clients cannot be started: SPLITLAB_CLIENT_LAUNCH must be 'fork' or "
                                           r"'exec', got 'thread'$"):
        Trainer(config("parallel_sl", "process"), digits)


def _engine(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "engine", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


def test_serve_and_client_train_as_separate_commands_and_clients_exit_when_the_server_dies():
    port = free_port()
    server = _engine("serve", "--preset", "splitfed", "--dataset", "digits", "--clients", "2", "--rounds", "100000",
                     "--eval-every", "20", "--listen", f"127.0.0.1:{port}")
    clients = [_engine("client", "--server", f"127.0.0.1:{port}", "--rank", str(r)) for r in (1, 2)]
    try:
        lines = []
        for line in server.stdout:  # training goes on: evaluation lines arrive
            lines.append(line)
            if line.startswith("round 40/"):
                break
        assert any("clients joined the server" in line for line in lines)
        server.kill()
        outs = [c.communicate(timeout=60)[0] for c in clients]
    finally:
        for p in (server, *clients):
            if p.poll() is None:
                p.kill()
    for i, (client, out) in enumerate(zip(clients, outs)):
        assert client.returncode == 1
        assert out.strip().splitlines()[-1].startswith(f"client {i}: the server closed the connection while")


def test_a_client_with_a_rank_the_server_does_not_run_is_refused():
    port = free_port()
    server = _engine("serve", "--preset", "parallel_sl", "--dataset", "digits", "--clients", "2", "--rounds", "5",
                     "--listen", f"127.0.0.1:{port}", "--join-timeout", "60")
    try:
        time.sleep(0.5)
        out = _engine("client", "--server", f"127.0.0.1:{port}", "--rank", "3", "--timeout", "30").communicate(timeout=60)[0]
        assert out.strip().splitlines()[-1] == \
            f"client 2: rank 3 is not a client of this run: the server at 127.0.0.1:{port} runs 2 clients (ranks 1 to 2)"
    finally:
        server.kill()
        server.communicate()


@pytest.mark.parametrize("args, message", [
    (["client", "--server", "nohost", "--rank", "1"], "error: --server expected HOST:PORT"),
    (["client", "--server", "127.0.0.1:29999", "--rank", "0"], "error: --rank must be 1 or more"),
    (["client", "--server", "127.0.0.1:1", "--rank", "1", "--timeout", "1"],
     "client 0: no SplitLab server answered at 127.0.0.1:1 within 1 s"),
    (["run", "--transport", "tcp"], "error: --transport must be 'inprocess' or 'process', got 'tcp'"),
    (["serve", "--listen", "foo:bar"], "error: --listen expected HOST:PORT"),
])
def test_bad_network_flags_are_one_line(args, message):
    out, _ = _engine(*args).communicate(timeout=60)
    assert out.strip().splitlines() and out.strip().splitlines()[-1].startswith(message), out
