"""Clients that come and go on the dashboard (issue 29): New run queues ``participation`` as typed and
says it in the summary; Live shows how many clients took part, only for runs where they come and go."""

from __future__ import annotations

from tests.pages.support import button, errors, field, page, runs_in_db, train_runs


def test_clients_that_come_and_go_are_queued_as_typed_and_said_in_the_summary(db_url):
    at = page("new_run")
    field(at, "clients per round C (fraction)").set_value("0.25").run()
    field(at, "dropout p").set_value("0.1").run()
    assert any("10 clients × 300 rounds × b=64 · C = 0.25: 2 clients a round · dropout p = 0.1" in c.value
               for c in at.caption)
    button(at, "Queue run").click().run()
    (run,) = runs_in_db(db_url)
    assert run.config["participation"] == {"fraction": 0.25, "dropout": 0.1, "speed_spread": 0.0, "deadline": 0.0}


def test_a_fraction_or_dropout_out_of_range_is_refused_in_the_forms_words(db_url):
    at = page("new_run")
    field(at, "clients per round C (fraction)").set_value("0").run()
    assert "clients per round C (fraction) must be greater than 0 and at most 1, got 0" in errors(at)
    field(at, "clients per round C (fraction)").set_value("1.0").run()
    field(at, "dropout p").set_value("1").run()
    assert "dropout p must be at least 0 and less than 1, got 1" in errors(at)
    assert button(at, "Queue run").disabled and runs_in_db(db_url) == []


def test_live_shows_how_many_clients_took_part_and_only_when_they_come_and_go(db_url):
    base = {"num_clients": 4, "rounds": 4, "batch_size": 8, "eval_every": 2, "data": {"dataset": "digits",
            "eval_subset": 32}}
    coming, everyone = train_runs(db_url, [("half", {"participation": {"fraction": 0.5}}), ("all", {})], base)
    metrics = {m.label: m.value for m in page("live", coming).metric}
    assert metrics["clients per round"] == "2"
    assert "clients per round" not in {m.label for m in page("live", everyone).metric}


def test_stragglers_and_a_deadline_are_queued_from_the_form(db_url):
    at = page("new_run")
    field(at, "straggler spread σ (0: none)").set_value("1.2").run()
    field(at, "deadline (T_comp, 0: none)").set_value("1.5").run()
    assert any("· stragglers σ = 1.2 · deadline 1.5·T_comp" in c.value for c in at.caption)
    button(at, "Queue run").click().run()
    (run,) = runs_in_db(db_url)
    assert run.config["participation"] == {"fraction": 1.0, "dropout": 0.0, "speed_spread": 1.2, "deadline": 1.5}


def test_the_latency_page_plots_what_a_deadline_buys(db_url):
    import json

    base = {"num_clients": 4, "rounds": 4, "batch_size": 8, "eval_every": 2, "seed": 1,
            "data": {"dataset": "digits", "eval_subset": 32}}
    slow = {"participation": {"speed_spread": 1.0}}
    cut = {"participation": {"speed_spread": 1.0, "deadline": 1.0}}
    waited, deadline, plain = train_runs(db_url, [("waits", slow), ("cut", cut), ("plain", {})], base)
    at = page("latency")
    chart = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
                 if json.loads(c.proto.spec)["layout"]["title"]["text"] == "Accuracy against simulated time")
    lines = {t["name"]: t for t in chart["data"] if t.get("name") and "min-max" not in t["name"]}
    waits, cut_off = f"#{waited} waits · no deadline", f"#{deadline} cut · deadline 1·T_comp"
    assert set(lines) == {waits, cut_off}  # not the plain run
    table = at.dataframe[-1].value.set_index("run")
    assert table.loc[cut_off, "simulated time (s)"] < table.loc[waits, "simulated time (s)"]  # shorter rounds
    assert table.loc[cut_off, "clients late a round"] > 0 == table.loc[waits, "clients late a round"]


def test_the_sweep_queues_its_participation_with_every_run(db_url):
    at = page("new_run")
    field(at, "clients n (comma-separated)").set_value("4").run()
    sweep = [w for w in at.text_input if w.label == "clients per round C (fraction)"][1]
    sweep.set_value("0.5").run()
    button(at, "Queue sweep").click().run()
    runs = runs_in_db(db_url)
    assert runs and {r.config["participation"]["fraction"] for r in runs} == {0.5}


def test_the_walkthrough_greys_an_absent_client_and_says_why(db_url):
    from tests.pages.test_defense_pages import walkthrough_at

    at = walkthrough_at(algo="locfedmix_sl", n="4", data="digits", absent="fraction:0.5", step="1")
    assert not at.exception
    assert next(w for w in at.selectbox if w.label == "clients that come and go").value == "fraction:0.5"
    words = " ".join(m.value for m in at.markdown)
    assert "Absent this round, greyed: client 1, not drawn this round (C = 0.5: 2 of 4 clients); client 3" in words
    svg = " ".join(m.value for m in at.markdown if "<svg" in m.value)
    assert svg.count("absent: not drawn") == 2


def test_a_walkthrough_link_with_an_unknown_absence_says_so_and_shows_every_client(db_url):
    from tests.pages.test_defense_pages import walkthrough_at

    at = walkthrough_at(algo="locfedmix_sl", n="3", data="digits", absent="fraction:2", step="1")
    assert any("absent = fraction:2 in the link is not one the walkthrough shows" in i.value.replace("\\", "")
               for i in at.info)
    assert "Absent this round" not in " ".join(m.value for m in at.markdown)


def test_a_networked_run_that_loses_a_client_goes_on_and_live_and_the_workers_log_say_so(db_url, monkeypatch, caplog):
    """A real worker trains a networked run (on_client_loss = continue); client 1's process is killed with
    SIGKILL during round 2's server step. The run finishes, the worker's log names the loss, and Live
    shows the lost process."""
    import logging
    import os
    import signal

    from engine.network import server as server_module
    from storage import queries
    from storage.db import connect
    from tests.helpers import client_processes

    real, killed = server_module.server_step, []

    def server_step(state, batch):
        if state.round + 1 == 2 and not killed:
            for pid, rank in client_processes().items():  # this process's client with rank 2
                if rank == 2:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
        return real(state, batch)

    monkeypatch.setattr(server_module, "server_step", server_step)
    base = {"num_clients": 3, "rounds": 4, "batch_size": 8, "eval_every": 2, "transport": "process",
            "on_client_loss": "continue", "data": {"dataset": "digits", "eval_subset": 32}}
    with caplog.at_level(logging.WARNING, logger="splitlab.network"):
        (run_id,) = train_runs(db_url, [("lossy", {})], base)
    assert len(killed) == 1
    assert any(r.getMessage().startswith("client 1 (rank 2) closed the connection") and
               "the run goes on with 2 of 3 clients" in r.getMessage() for r in caplog.records)
    with connect(db_url).read() as s:
        events = queries.get_run(s, run_id).summary["client_events"]
    assert [(e["event"], e["round"], e["client"]) for e in events] == [("lost", 2, 1)]
    metrics = {m.label: m.value for m in page("live", run_id).metric}
    assert metrics["clients lost"] == "1"
