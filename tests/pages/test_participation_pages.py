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
    assert run.config["participation"] == {"fraction": 0.25, "dropout": 0.1}


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
    assert metrics["clients taking part"] == "2 a round"
    assert "clients taking part" not in {m.label for m in page("live", everyone).metric}
