"""Ten viewers on the real app: what each session receives, counted from Streamlit's own protocol.

The Live page's design: a small ``@st.fragment(run_every=2)`` shows progress and checks the latest
evaluated round of each shown run; the four charts are drawn outside it and redrawn (a full
``st.rerun()``) only when a new evaluation row exists. So a viewer receives the charts once per new
evaluation, and none while nothing changes. These tests count deliveries, never time: speed goals
live in ``python -m tests.load.viewers``.

One app and one worker serve the module. The worker first trains a short run (10 rounds) that
ends finished, for the result page; its time per round sets how often the long run evaluates, so
that its evaluations come about ``EVAL_INTERVAL_S`` apart however fast the machine is (well
apart from the fragment's 2 s). The Live viewers watch the long run, which the tests cancel once
they have seen it train.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import pytest
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

from tests.load.streamlit_session import StreamlitSession, close_sessions, open_sessions
from tests.load.viewers import HOST, Lab

VIEWERS = 10
CHARTS_PER_RUN = 4  # test accuracy, test loss, training-loss terms, communication
COMMON_FLAGS = ("--preset", "parallel_sl", "--profile", "demo", "--dataset", "digits", "--clients", "4")
RESULT_RUN = (*COMMON_FLAGS, "--rounds", "10", "--eval-every", "5", "--name", "load-result")
LIVE_RUN = (*COMMON_FLAGS, "--rounds", "100000", "--name", "load-live")  # --eval-every from the short run
EVAL_INTERVAL_S = 8      # the long run's evaluations, this far apart at the short run's pace (viewers slow it)
TRAINING_WINDOW_S = 15   # (c): how long the viewers are watched while the run trains
QUIET_WINDOW_S = 6       # (b): how long they are watched once nothing changes
WAIT_S = 90              # the most any single step waits (a page to load, a run to end)


@dataclass(frozen=True)
class Runs:
    result: int  # trained first, finished
    live: int    # trains until a test cancels it


class Viewers:
    """Sessions on an event loop in a thread of their own, so they stay open from test to test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="viewers", daemon=True)
        self.thread.start()
        self.sessions: list[StreamlitSession] = []

    def call(self, coro: Coroutine, timeout: float = 2 * WAIT_S) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def open(self, port: int, page: str, query: str, count: int = VIEWERS) -> list[StreamlitSession]:
        self.sessions = self.call(open_sessions(HOST, port, page, query, count, timeout=WAIT_S))
        return self.sessions

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.call(close_sessions(self.sessions), timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


def has_charts(count: int) -> Callable[[StreamlitSession], bool]:
    """``count`` charts have arrived, or a problem has (then waiting longer is pointless)."""
    return lambda session: session.stats.elements()["plotly_chart"] >= count or bool(session.stats.problems)


async def wait_all(sessions: list[StreamlitSession], predicate: Callable[[StreamlitSession], bool],
                   timeout: float) -> list[bool]:
    """Whether each session came to satisfy ``predicate`` within ``timeout`` s (a run may be cut
    short by the next one, as in a browser, so the first finished run need not hold everything)."""
    return list(await asyncio.gather(*(s.wait_until(predicate, timeout) for s in sessions)))


def fragment_runs(session: StreamlitSession, since: float, until: float = float("inf")) -> int:
    """Fragment runs that started in [since, until)."""
    return session.stats.runs_started(since, until, fragment=True)


def run_endings(session: StreamlitSession) -> list[str]:
    """How each run of the page ended, for failure messages."""
    return [r.status for r in session.stats.run_ends]


def problems(sessions: list[StreamlitSession]) -> list[str]:
    return [f"{s.name}: {p}" for s in sessions for p in s.stats.problems]


def charts_between(sessions: list[StreamlitSession], since: float, until: float) -> dict[str, int]:
    return {s.name: s.stats.elements(since, until)["plotly_chart"] for s in sessions}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The app and a worker; yields once the short run has finished and the long one has its
    first evaluation row."""
    with Lab(tmp_path_factory.mktemp("load")) as lab:
        result = lab.submit(*RESULT_RUN)
        lab.start_worker()
        lab.start_app()
        lab.wait_for_app()
        assert lab.wait_for_end(result, WAIT_S), "the short run did not end"
        round_s = statistics.fmean(row["round_s"] for row in lab.history(result))
        eval_every = min(max(math.ceil(EVAL_INTERVAL_S / round_s), 5), 5000)
        runs_ = Runs(result, lab.submit(*LIVE_RUN, "--eval-every", str(eval_every)))
        lab.wait_for_rows(runs_.live, rows=1)
        yield lab, runs_


@pytest.fixture(scope="module")
def live(lab):
    """Ten viewers on ``/live?run=ID``, opened while the run trains and kept open after it ends."""
    lab_, runs_ = lab
    viewers = Viewers()
    try:
        viewers.open(lab_.port, "live", f"run={runs_.live}")
        yield viewers
    finally:
        viewers.close()


def test_every_live_viewer_gets_the_page_with_its_charts(live):
    got_charts = live.call(wait_all(live.sessions, has_charts(CHARTS_PER_RUN), WAIT_S))
    assert problems(live.sessions) == []
    assert all(got_charts), {s.name: (dict(s.stats.elements()), run_endings(s)) for s in live.sessions}


def test_live_viewers_get_charts_only_for_new_evaluations_while_training(lab, live):
    lab_, runs_ = lab
    rows_before, t0 = len(lab_.history(runs_.live)), time.monotonic()
    time.sleep(TRAINING_WINDOW_S)
    rows_after, t1 = len(lab_.history(runs_.live)), time.monotonic()
    assert not lab_.run_info(runs_.live).status.is_terminal, "the run ended in the window: it proves nothing"
    assert problems(live.sessions) == []
    allowed = (rows_after - rows_before + 1) * CHARTS_PER_RUN
    charts = charts_between(live.sessions, t0, t1)
    assert max(charts.values()) <= allowed, (
        f"{rows_after - rows_before} new evaluation rows in {t1 - t0:.0f} s allow {allowed} charts a viewer; "
        f"received {charts}")


def test_live_viewers_get_no_charts_once_the_run_has_ended(lab, live):
    lab_, runs_ = lab
    lab_.cancel(runs_.live)
    assert lab_.wait_for_end(runs_.live, WAIT_S), "the run did not stop when cancelled"
    live.call(settle(live.sessions, time.monotonic()))
    t0 = time.monotonic()
    time.sleep(QUIET_WINDOW_S)
    t1 = time.monotonic()
    assert problems(live.sessions) == []
    charts = charts_between(live.sessions, t0, t1)
    assert sum(charts.values()) == 0, f"plotly charts sent while nothing changed, per viewer: {charts}"
    alive = {s.name: fragment_runs(s, t0, t1) for s in live.sessions}
    assert min(alive.values()) >= 1, f"the live fragment stopped rerunning: fragment runs per viewer {alive}"


async def settle(sessions: list[StreamlitSession], since: float) -> None:
    """Let every viewer see the end. The Live fragment runs every 2 s (at least) and redraws at most
    every 6 s (pages/live.py: MIN_REDRAW_S): by the fourth fragment run after the end 8 s have passed,
    so the throttle is over; the fifth sees past the 2 s read cache and may trigger the last full run,
    which is over when the sixth starts. (Waiting for the third only, a redraw still throttled
    landed in the quiet window on a loaded CPU: 4 charts a viewer.)"""
    await wait_all(sessions, lambda viewer: fragment_runs(viewer, since) >= 6, WAIT_S / 2)


def test_every_result_page_viewer_gets_the_charts(lab, live):
    lab_, runs_ = lab
    live.close()  # the Live viewers leave first: the result page's viewers have the server alone
    viewers = Viewers()
    try:
        sessions = viewers.open(lab_.port, "run", f"run={runs_.result}")
        got_charts = viewers.call(wait_all(sessions, has_charts(CHARTS_PER_RUN), WAIT_S))
        assert problems(sessions) == []
        assert all(got_charts), {s.name: (dict(s.stats.elements()), run_endings(s)) for s in sessions}
    finally:
        viewers.close()


def test_session_counts_a_chart_sent_by_reference_as_delivered():
    """The server sends a chart the browser holds as a ref_hash: still one chart delivered."""
    session = StreamlitSession(HOST, 1, "live", "run=1")
    chart = ForwardMsg(hash="abc")
    chart.metadata.cacheable = True
    chart.delta.new_element.plotly_chart.spec = "{}"
    session._handle(chart.SerializeToString())
    session._handle(ForwardMsg(ref_hash="abc").SerializeToString())
    session._handle(ForwardMsg(ref_hash="unknown").SerializeToString())
    assert session.stats.elements()["plotly_chart"] == 2
    assert [d.cached for d in session.stats.deliveries] == [False, True]
    assert session.stats.problems == ["cache miss for ref_hash unknown"]
