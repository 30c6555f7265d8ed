"""A technique registered from outside the form (here, by the test) appears on New run with its own
settings, is queued as shown, and its bad values are refused in the form's words (issue 28, part 4)."""

from __future__ import annotations

import pytest

from engine.techniques import register, unregister
from tests.engine.test_plugin_techniques import ScaleCutGrads
from tests.pages.support import button, errors, field, page, runs_in_db

LABEL = "cut-layer gradient scaling (scalegrad)"
FACTOR = "cut-layer gradient scaling: factor"


@pytest.fixture
def scale_grads():
    register(ScaleCutGrads)
    yield ScaleCutGrads
    unregister(ScaleCutGrads.name)


def box(at, label: str):
    return next(w for w in at.checkbox if w.label == label)


def test_a_registered_technique_is_on_the_form_and_queued_as_shown(db_url, scale_grads):
    at = page("new_run")
    assert not box(at, LABEL).value and field(at, FACTOR).disabled
    box(at, LABEL).check().run()
    assert not field(at, FACTOR).disabled and field(at, FACTOR).value == "1.0"
    field(at, FACTOR).set_value("0.25").run()
    assert any(c.value.startswith("techniques 1,2,3,4p,5,scalegrad ·") for c in at.caption)
    button(at, "Queue run").click().run()
    (run,) = runs_in_db(db_url)
    assert run.config["plugins"] == {"scale_grads": {"enabled": True, "factor": 0.25}}


def test_a_registered_techniques_bad_setting_is_refused_in_the_forms_words(db_url, scale_grads):
    at = page("new_run")
    box(at, LABEL).check().run()
    for typed, said in (("abc", "must be a finite number, got abc"), ("11", "must be between 0 and 10, got 11")):
        field(at, FACTOR).set_value(typed).run()
        assert f"{FACTOR} {said}" in errors(at)
        assert button(at, "Queue run").disabled
    box(at, LABEL).uncheck().run()  # off: its settings are not queued, so they do not block Queue
    assert not button(at, "Queue run").disabled
    button(at, "Queue run").click().run()
    (run,) = runs_in_db(db_url)
    assert "plugins" not in run.config


def test_without_registered_techniques_beyond_the_example_the_form_shows_only_the_example(db_url):
    at = page("new_run")
    assert [w.label for w in at.checkbox if w.label.endswith(")") and "(" in w.label] == [
        "cut-layer gradient clipping (clip)"]
