"""The New run form and the Sweep tab set the privacy attacker (issue 27): its budget (strong, or the
weaker fast one), how many clients it attacks, and whether the server runs the averaging (and so
may attack white-box). What the fields show is what is queued, and the form says what measuring
will cost before the run is queued, counting the measurements as the trainer schedules them.
"""

from __future__ import annotations

import pytest

from engine.config import validate_config
from engine.privacy import MEASURE_SECONDS, MEASURE_SECONDS_FLOAT32, bfloat16_native, measurements
from engine.trainer import Trainer
from pages.new_run import duration
from tests.pages.support import button, errors, field, page, runs_in_db

EVERY = "leakage every (rounds, 0: off)"


def select(at, label: str, index: int = 0):
    return [w for w in at.selectbox if w.label == label][index]


def box(at, label: str, index: int = 0):
    return [w for w in at.checkbox if w.label == label][index]


def cost_lines(at) -> list[str]:
    return [c.value for c in at.caption if c.value.startswith("Leakage will be measured")]


@pytest.mark.parametrize("rounds,every", [(300, 100), (300, 200), (10, 10), (7, 2), (5, 0), (1, 1)])
def test_measurements_counts_the_rounds_the_trainer_measures(rounds, every):
    cfg = validate_config({"rounds": rounds, "eval_every": 1, "privacy": {"every": every},
                           "data": {"dataset": "synthetic"}, "num_clients": 2})
    trainer = Trainer.__new__(Trainer)  # privacy_due reads only the config
    trainer.cfg = cfg
    assert measurements(rounds, every) == sum(trainer.privacy_due(t) for t in range(1, rounds + 1))


def test_the_attacker_fields_are_greyed_while_leakage_is_off_and_queued_as_shown(db_url):
    at = page("new_run")
    assert select(at, "attacker's budget").disabled and field(at, "clients attacked (at most)").disabled
    assert box(at, "server holds models").disabled
    assert not cost_lines(at)
    field(at, EVERY).set_value("100").run()
    assert not select(at, "attacker's budget").disabled
    select(at, "attacker's budget").set_value("fast").run()
    field(at, "clients attacked (at most)").set_value("3").run()
    box(at, "server holds models").uncheck().run()
    assert any("leakage measured every 100 rounds by the fast attacker" in c.value for c in at.caption)
    button(at, "Queue run").click().run()
    (run,) = runs_in_db(db_url)
    assert run.config["privacy"] == {"every": 100, "attack_steps": 2000, "budget": "fast", "clients": 3,
                                     "averaging_at_server": False}


def test_the_form_states_the_cost_of_measuring_before_queueing(db_url):
    at = page("new_run")  # the preset's 300 rounds
    field(at, EVERY).set_value("100").run()
    (line,) = cost_lines(at)
    seconds = MEASURE_SECONDS if bfloat16_native() else MEASURE_SECONDS_FLOAT32  # this CPU's precision
    low, high = seconds["strong"]
    assert line.startswith("Leakage will be measured 3 times (every 100 rounds, the last at round 300).")
    assert f"{low}–{high} s" in line and f"about {duration(3 * low)} to {duration(3 * high)} added" in line
    assert "up to 2× that where the 2 attacked clients' lower models differ" in line
    assert ("a CPU with native bfloat16" if bfloat16_native() else "no native bfloat16") in line
    field(at, EVERY).set_value("200").run()
    select(at, "attacker's budget").set_value("fast").run()
    field(at, "clients attacked (at most)").set_value("1").run()
    (line,) = cost_lines(at)
    low, high = seconds["fast"]
    assert line.startswith("Leakage will be measured 2 times (every 200 rounds and at the end, round 300).")
    assert f"about {duration(2 * low)} to {duration(2 * high)} added to the run." in line and "up to" not in line
    assert "weaker" in line


def test_an_out_of_range_interval_gets_its_message_and_no_cost_line(db_url):
    """Seen in Chromium: with -3 typed, the line said "measured -100 times ... about -1400 s"."""
    at = page("new_run")
    for typed in ("-3", "99999999999999999999", "1.5"):
        field(at, EVERY).set_value(typed).run()
        assert cost_lines(at) == [], typed
        assert any("leakage every" in e.value for e in at.error), typed
    field(at, EVERY).set_value("100").run()
    assert len(cost_lines(at)) == 1 and not at.error


def test_durations_are_written_in_seconds_minutes_or_hours():
    assert [duration(s) for s in (42, 119, 120, 390, 7199, 7200)] == ["42 s", "119 s", "2.0 min", "6.5 min",
                                                                        "120.0 min", "2.0 h"]


def test_an_unreadable_number_of_attacked_clients_blocks_queue(db_url):
    at = page("new_run")
    field(at, EVERY).set_value("100").run()
    for typed, said in (("1.5", "must be a whole number, got 1.5"), ("0", "must be between 1 and"),
                        ("99999999999999999999", "must be between 1 and")):
        field(at, "clients attacked (at most)").set_value(typed).run()
        assert f"clients attacked (at most) {said}" in errors(at)
        assert button(at, "Queue run").disabled
    assert runs_in_db(db_url) == []


def test_the_sweep_queues_its_attacker_with_every_run(db_url):
    at = page("new_run")
    field(at, "clients n (comma-separated)").set_value("4").run()
    sweep_every = [w for w in at.text_input if w.label == EVERY][1]
    sweep_every.set_value("20").run()
    select(at, "attacker's budget", 1).set_value("fast").run()
    button(at, "Queue sweep").click().run()
    runs = runs_in_db(db_url)
    assert runs and {(r.config["privacy"]["every"], r.config["privacy"]["budget"]) for r in runs} == {(20, "fast")}
