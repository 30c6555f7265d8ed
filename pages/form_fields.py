"""Fields of the New run form that show exactly what will be judged.

Numbers are typed into text fields and read here, exactly: a browser's number field holds a
JavaScript double, so it rounds 9007199254740993, truncates 1.5 to 1 in a whole-number field and
keeps its previous value for text it cannot read, while showing the text typed. Here a whole
number is an optional sign and digits (read by Python's ``int``: any size), and a real number
is a decimal or an exponent that is finite; anything else is refused with a message naming the
field and the text typed, and nothing is queued.

The data set comes with whether it is here (found where the worker looks: the folders of
:func:`engine.data.data_dir_candidates`), and a downloadable one that is not here gets a
"Get ..." button with a progress bar.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import streamlit as st

from engine import data as engine_data
from engine.config import ConfigProblem
from pages import common

WHOLE = re.compile(r"[+-]?[0-9]+")
REAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
SHOWN_CHARS = 40  # a longer text is shown cut, with "…"


def shown(text: str) -> str:
    """The text typed, as a message quotes it (cut when long)."""
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "…"


def parse_whole(text: str) -> int | None:
    """'12' -> 12, '-5' -> -5, '99999999999999999999' -> that integer; None for anything else
    ('1.5', '1e3', '', '1,000')."""
    text = text.strip()
    if not WHOLE.fullmatch(text):
        return None
    try:
        return int(text)
    except ValueError:  # more digits than Python reads at once (sys.get_int_max_str_digits)
        return None


def parse_real(text: str) -> float | None:
    """'0.001', '1e-3', '-2', '.5' -> the float; None for anything else, and for values too large to
    hold ('1e999'): a real number that is not finite is refused, never replaced by infinity."""
    text = text.strip()
    if not REAL.fullmatch(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Field:
    """One number field as the user left it: the config path it sets, the text shown, and the value
    read from it (None when it could not be read: ``problem`` then says why)."""

    path: str
    text: str
    value: Any
    problem: ConfigProblem | None = None


def whole_field(container, label: str, path: str, default: int | None, *, allow_empty: bool = False,
                **kwargs) -> Field:
    """A whole-number field. ``allow_empty``: an empty field reads as None (the default) instead of
    being refused. ``kwargs`` go to ``st.text_input`` (help, disabled, key, placeholder)."""
    text = container.text_input(label, "" if default is None else str(default), **kwargs) or ""
    if not text.strip() and allow_empty:
        return Field(path, text, None)
    value = parse_whole(text)
    if value is None:
        typed = text.strip()
        if WHOLE.fullmatch(typed):  # a whole number, of thousands of digits
            return Field(path, text, None, ConfigProblem(path, f"must be a whole number of fewer digits, got one of "
                                                               f"{len(typed.lstrip('+-')):,} digits ({shown(typed)})"))
        said = f"got {shown(typed)}" if typed else "got nothing"
        return Field(path, text, None, ConfigProblem(path, f"must be a whole number, {said}"))
    return Field(path, text, value)


def real_field(container, label: str, path: str, default: float, **kwargs) -> Field:
    """A real-number field (learning rate, α, β): a finite decimal or exponent, read exactly as typed."""
    text = container.text_input(label, repr(float(default)), **kwargs) or ""  # repr: the shortest exact form
    value = parse_real(text)
    if value is None:
        said = f"got {shown(text.strip())}" if text.strip() else "got nothing"
        return Field(path, text, None, ConfigProblem(path, f"must be a finite number, {said}"))
    return Field(path, text, value)


# --------------------------------------------------------------------------- the data set


def here() -> dict[str, bool]:
    """Data set -> whether this host has it where the worker looks."""
    return {name: engine_data.available(name) for name in engine_data.DATASETS}


def dataset_label(name: str, present: dict[str, bool]) -> str:
    """ "fashion-mnist (here)", "cifar10 (not downloaded)"."""
    return f"{name} ({'here' if present.get(name) else 'not downloaded'})"


def default_dataset(preferred: str, present: dict[str, bool]) -> str:
    """The preset's data set when it is here, else the embedded digits (always here)."""
    return preferred if present.get(preferred) else "digits"


def dataset_select(container, preferred: str, present: dict[str, bool], key: str, **kwargs) -> str:
    """The data-set list, each saying whether it is here; opens on one that is, and keeps the one chosen.

    The list is a new widget whenever what is here changes (its key names that), since a browser keeps
    showing the label an option had when it was chosen ("cifar10 (not downloaded)" after the download);
    the new one starts on the data set chosen before."""
    options = list(engine_data.DATASETS)
    chosen = st.session_state.get(f"{key}_chosen")
    start = chosen if chosen in options else default_dataset(preferred, present)
    here_now = "".join("h" if present.get(name) else "m" for name in options)
    value = container.selectbox("data set", options, options.index(start), key=f"{key}_{here_now}",
                                format_func=lambda name: dataset_label(name, present), **kwargs)
    st.session_state[f"{key}_chosen"] = value
    return value


def get_button(dataset: str, key: str) -> None:
    """For a downloadable data set that is not here: a button that downloads it (torchvision's mirrors
    and checksums) with a progress bar. On success the page is drawn again (the list then says "here");
    on failure one line says why and where to put the files instead."""
    info = engine_data.DATASET_INFO.get(dataset)
    if info is None or not info.downloadable:
        return
    failed_key = f"{key}_failed"
    clicked = st.button(f"Get {info.title}", key=key, help=f"download {info.title} ({info.download_bytes / 1e6:.0f} "
                        f"MB, {info.source}) into {engine_data.data_dir_candidates()[0]}; its checksums are verified")
    slot = st.empty()  # the progress bar, then the failure in its place: never both
    if clicked:
        st.session_state.pop(failed_key, None)  # a new try: the last one's failure no longer holds
        bar = slot.progress(0.0, text=f"Downloading {info.title}…")
        try:
            engine_data.get_dataset(dataset, progress=_progress_to(bar, info.title))
        except Exception as err:  # no network, a full disk, a bad checksum: say where the files go instead
            st.session_state[failed_key] = download_failed(dataset, err)
        else:
            st.rerun()
    if st.session_state.get(failed_key):
        slot.error(common.escape_markdown(st.session_state[failed_key]))
    else:
        slot.empty()


def download_failed(dataset: str, err: Exception) -> str:
    """One line: why the download failed, and where to put the files to use the data set without one."""
    from engine.download import DownloadError

    title = engine_data.DATASET_INFO[dataset].title
    if isinstance(err, OSError) and err.strerror:
        reason = f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    else:
        reason = " ".join(str(err).split()) or "it failed"
    if isinstance(err, DownloadError) and err.offline:
        return f"{title} was not downloaded: {reason}."  # the engine's line already says where the files go
    where = engine_data.layout_hint(dataset).replace("<folder>", str(engine_data.data_dir_candidates()[0]))
    return (f"{title} was not downloaded: {reason}. To use it without a download, put its files in place: "
            f"{where} (or set {engine_data.DATA_ENV_VAR} to a folder that has them).")


def _progress_to(bar, title: str):
    """get_dataset's progress(done_bytes, total_bytes) -> the bar, redrawn at most once per percent."""
    last = [-1]

    def progress(done: int, total: int) -> None:
        fraction = min(1.0, max(0.0, done / total)) if total else 0.0
        if int(100 * fraction) != last[0]:
            last[0] = int(100 * fraction)
            bar.progress(fraction, text=f"Downloading {title}: {max(done, 0) / 1e6:.1f} of {total / 1e6:.1f} MB")

    return progress
