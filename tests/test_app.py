"""The dashboard's entry page renders with the engine's presets and latency model."""

from streamlit.testing.v1 import AppTest

from engine.presets import PRESETS


def test_app_renders_presets_and_latency_plot():
    at = AppTest.from_file("../app.py", default_timeout=60).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["preset"]) == list(PRESETS)
    assert at.number_input[1].value == 1  # T_c
    at.number_input[1].set_value(10_000).run()
    assert not at.exception
