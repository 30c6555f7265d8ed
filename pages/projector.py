"""Projector mode, for a teacher showing a page on a 1280 x 720 projector: no sidebar, no toolbar and
little padding, so that what the page is about fills the screen. A toggle switches it, and the link
keeps it (``?projector=1``), so that a teacher can bookmark it. The round walkthrough and Live use it.
"""

from __future__ import annotations

import streamlit as st

PARAM = "projector"
ON, OFF = ("1", "true", "on", "yes"), ("0", "false", "off", "no", "")
HELP = ("For a projector (1280 × 720): no sidebar, larger text and pictures, the settings behind one button. "
        "The link keeps it (?projector=1): bookmark it.")

CSS = """<style>
section[data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"], header[data-testid="stHeader"],
[data-testid="stDecoration"] { display: none !important; }
[data-testid="stMainBlockContainer"] { padding: 0.75rem 1.5rem 3rem !important; max-width: none !important; }
[data-testid="stMain"] { margin-left: 0 !important; }
[data-testid="stProgress"] p { font-size: 1.1rem; }
</style>"""


def from_link(key: str) -> None:
    """``st.session_state[key]`` from the link's ``?projector=``, unless this session already has one.
    A value that is neither on nor off says so (the normal view is shown)."""
    if key in st.session_state:
        return
    raw = st.query_params.get(PARAM)
    st.session_state[key] = raw is not None and raw.strip().lower() in ON
    if raw is not None and raw.strip().lower() not in ON + OFF:
        st.info(f"projector = {raw[:40]!r} in the link is neither on nor off (use projector=1 or projector=0): "
                "showing the normal view.")


def toggle(container, key: str) -> bool:
    """The switch, in ``container``; the link follows it."""
    on = container.toggle("projector", key=key, help=HELP)
    keep_in_link(on)
    return on


def keep_in_link(on: bool) -> None:
    if on:
        st.query_params[PARAM] = "1"
    elif PARAM in st.query_params:
        del st.query_params[PARAM]


def style() -> None:
    """Hide the app's chrome for this page run (the style goes with the page)."""
    st.html(CSS)
