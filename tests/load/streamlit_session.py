"""A headless Streamlit session: the browser's side of ``/_stcore/stream``, without a browser.

What the browser does (Streamlit 1.67, read from its frontend bundle and ``web/server/starlette``):

1. ``GET /_stcore/health``. The answer sets the ``_streamlit_xsrf`` cookie.
2. Opens ``ws://HOST:PORT/_stcore/stream`` with the subprotocols ``streamlit, <xsrf cookie>``
   (``PLACEHOLDER_AUTH_TOKEN`` when there is no cookie; a third entry resumes an old session).
   The server accepts the first entry, checks the second only to read a login cookie, and
   connects a new session. It runs nothing yet.
3. Sends ``BackMsg.rerun_script``: a ``ClientState`` with the URL's query string (``run=3``),
   ``page_script_hash=""`` and ``page_name`` taken from the path (``live``) on a first load; after
   that the page's ``page_script_hash``: ``new_session`` carries the main script's, and with
   ``st.navigation`` the ``navigation`` message that follows names the page that ran. A first load
   is matched by ``page_name`` (the page's ``url_path``).
4. Receives one ``ForwardMsg`` per binary frame: ``new_session`` when a full run starts, deltas
   (``new_element``, ``add_block``), ``auto_rerun`` / ``stop_auto_rerun`` and ``script_finished``.
5. ``@st.fragment(run_every=2)`` sends ``auto_rerun {interval: 2, fragment_id}``. The browser then
   sends ``rerun_script`` with that ``fragment_id`` and ``is_auto_rerun=True`` every ``interval``
   seconds (``setInterval``; a second ``auto_rerun`` for the same fragment and interval changes
   nothing) until ``stop_auto_rerun`` names the fragment.
6. Message cache: a ``new_element`` delta of at least ``global.minCachedMessageSize`` (10 kB) comes
   with ``metadata.cacheable``; the browser keeps it by ``hash`` and lists the hashes it holds in
   every ``rerun_script`` (``cached_message_hashes``). For a message the browser holds, the server
   sends only ``ref_hash``, which the browser replaces with the cached message. Entries older than
   ``max_cached_message_age`` runs (from ``new_session.config``) are dropped after each run.

A delivered element counts once whether it came whole or as a ``ref_hash``; ``Delivery.cached``
tells which. Counting is all this client does with a message, so a few dozen sessions share
one event loop cheaply.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ClientState_pb2 import ClientState, ContextInfo
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

XSRF_COOKIE = "_streamlit_xsrf"
NO_XSRF_TOKEN = "PLACEHOLDER_AUTH_TOKEN"  # what the browser sends without a cookie
DEFAULT_MAX_CACHED_AGE = 2  # global.maxCachedMessageAge; new_session.config overrides it
FINISHED = ForwardMsg.ScriptFinishedStatus
EARLY_FOR_RERUN = FINISHED.Value("FINISHED_EARLY_FOR_RERUN")


@dataclass(frozen=True)
class Delivery:
    """One delta the session received: an element (``plotly_chart``) or a block (``block``)."""

    t: float            # time.monotonic() on arrival
    element: str
    fragment_id: str    # "" outside a fragment
    cached: bool        # it came as a ref_hash to the session's cache


@dataclass(frozen=True)
class RunEnd:
    """A ``script_finished``: one full run or one fragment run of the page."""

    t: float
    status: str         # FINISHED_SUCCESSFULLY, FINISHED_FRAGMENT_RUN_SUCCESSFULLY, ...
    fragment_ids: tuple[str, ...]


@dataclass
class SessionStats:
    """Everything a session received, with arrival times."""

    messages: int = 0
    bytes: int = 0
    message_types: Counter = field(default_factory=Counter)  # ForwardMsg types: delta, auto_rerun, ...
    deliveries: list[Delivery] = field(default_factory=list)
    run_ends: list[RunEnd] = field(default_factory=list)
    run_starts: list[tuple[float, bool]] = field(default_factory=list)  # (arrival, is a fragment run): new_session
    problems: list[str] = field(default_factory=list)  # exception elements, page not found, cache misses
    byte_log: list[tuple[float, int]] = field(default_factory=list)  # (arrival, size) of every message

    def elements(self, since: float = float("-inf"), until: float = float("inf")) -> Counter:
        """Deliveries by element type within [since, until)."""
        return Counter(d.element for d in self.deliveries if since <= d.t < until)

    def bytes_between(self, since: float, until: float) -> int:
        return sum(size for t, size in self.byte_log if since <= t < until)

    def runs_started(self, since: float, until: float, fragment: bool) -> int:
        return sum(1 for t, is_fragment in self.run_starts if since <= t < until and is_fragment == fragment)

    def summary(self, since: float = float("-inf"), until: float = float("inf")) -> dict:
        """A JSON-friendly digest of what arrived within [since, until)."""
        return {"messages": sum(1 for t, _ in self.byte_log if since <= t < until),
                "bytes": self.bytes_between(since, until),
                "elements": dict(self.elements(since, until)),
                "cached_elements": dict(Counter(d.element for d in self.deliveries
                                                if d.cached and since <= d.t < until)),
                "full_runs_started": self.runs_started(since, until, fragment=False),
                "fragment_runs_started": self.runs_started(since, until, fragment=True),
                "runs_ended": dict(Counter(r.status for r in self.run_ends if since <= r.t < until)),
                "problems": list(self.problems)}


@dataclass
class _CacheEntry:
    element: str
    fragment_id: str
    run_count: int


class StreamlitSession:
    """One browser tab on ``http://host:port/<page>?<query>``, held open until :meth:`close`.

    In a coroutine: ``s = StreamlitSession("127.0.0.1", 8501, "live", "run=3")``, ``await s.open()``,
    ``await s.wait_until(StreamlitSession.page_loaded, 30)``, then read ``s.stats``.
    """

    def __init__(self, host: str, port: int, page: str = "", query: str = "", name: str = "session"):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"load tests stay on the loopback interface, not {host!r}")
        self.host, self.port, self.page, self.query, self.name = host, port, page.strip("/"), query, name
        self.stats = SessionStats()
        self.session_id = ""
        self._page_hash = ""        # from new_session, then navigation; "" until the first run
        self._cache: dict[str, _CacheEntry] = {}
        self._run_count = 0
        self._max_cached_age = DEFAULT_MAX_CACHED_AGE
        self._auto_reruns: dict[str, tuple[float, asyncio.Task]] = {}
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task | None = None
        self._changed = asyncio.Event()
        self._closing = False

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/{self.page}" + (f"?{self.query}" if self.query else "")

    async def open(self, timeout: float = 30) -> None:
        """Connect as the browser does and ask for the page; returns once the request is sent."""
        xsrf = await asyncio.to_thread(_xsrf_cookie, f"{self.base_url}/_stcore/health", timeout)
        headers = {"Origin": self.base_url}
        if xsrf:
            headers["Cookie"] = f"{XSRF_COOKIE}={xsrf}"
        self._ws = await connect(f"ws://{self.host}:{self.port}/_stcore/stream",
                                 subprotocols=["streamlit", xsrf or NO_XSRF_TOKEN], additional_headers=headers,
                                 max_size=None, open_timeout=timeout, compression=None)
        self._reader = asyncio.create_task(self._read(), name=f"{self.name}-reader")
        await self._send_rerun()

    async def close(self) -> None:
        self._closing = True
        for _, task in self._auto_reruns.values():
            task.cancel()
        self._auto_reruns.clear()
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    async def wait_until(self, predicate: Callable[[StreamlitSession], bool], timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until ``predicate(self)`` holds after some message; report whether it did."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            left = deadline - time.monotonic()
            if left <= 0 or self._reader is None or self._reader.done():
                return predicate(self)
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                pass
        return True

    def page_loaded(self) -> bool:
        """A run of the page has ended. Usually the first full run; but when the server is
        overloaded and a fragment run starts as the full run ends, Streamlit can drop the full
        run's ``script_finished`` (its last deltas too), and the fragment run's is the first."""
        return bool(self.stats.run_ends)

    # -- sending -------------------------------------------------------------------------------

    async def _send_rerun(self, fragment_id: str = "", auto: bool = False) -> None:
        state = ClientState(query_string=self.query, page_script_hash=self._page_hash,
                            page_name="" if self._page_hash else self.page, fragment_id=fragment_id,
                            is_auto_rerun=auto, cached_message_hashes=list(self._cache),
                            context_info=ContextInfo(timezone="UTC", timezone_offset=0, locale="en-US",
                                                     url=self.url, is_embedded=False, color_scheme="light"))
        state.widget_states.SetInParent()
        msg = BackMsg()
        msg.rerun_script.CopyFrom(state)
        if self._ws is not None:
            await self._ws.send(msg.SerializeToString())

    async def _auto_rerun(self, fragment_id: str, interval: float) -> None:
        """The browser's ``setInterval``: ask for the fragment every ``interval`` seconds."""
        while not self._closing:
            await asyncio.sleep(interval)
            try:
                await self._send_rerun(fragment_id, auto=True)
            except ConnectionClosed:
                return

    # -- receiving -----------------------------------------------------------------------------

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for data in self._ws:
                self._handle(data if isinstance(data, bytes) else data.encode())
                self._changed.set()
            if not self._closing:
                self.stats.problems.append("the server closed the connection")
        except ConnectionClosed as err:
            if not self._closing:
                self.stats.problems.append(f"connection lost: {err}")
        except Exception as err:  # noqa: BLE001 (a message this client cannot read: say so, stop reading)
            self.stats.problems.append(f"client error: {err!r}")
        finally:
            self._changed.set()

    def _handle(self, data: bytes) -> None:
        now = time.monotonic()
        msg = ForwardMsg()
        msg.ParseFromString(data)
        kind = msg.WhichOneof("type") or "none"
        stats = self.stats
        stats.messages += 1
        stats.bytes += len(data)
        stats.byte_log.append((now, len(data)))
        stats.message_types[kind] += 1
        if kind == "delta":
            self._on_delta(msg, now)
        elif kind == "ref_hash":
            self._on_ref(msg, now)
        elif kind == "new_session":
            stats.run_starts.append((now, bool(msg.metadata.run.fragment_ids)))
            self._page_hash = msg.new_session.page_script_hash or self._page_hash
            self.session_id = msg.new_session.initialize.session_id or self.session_id
            self._max_cached_age = msg.new_session.config.max_cached_message_age or self._max_cached_age
        elif kind == "navigation":  # with st.navigation: the page that ran (new_session names app.py)
            self._page_hash = msg.navigation.page_script_hash or self._page_hash
        elif kind == "auto_rerun":
            self._on_auto_rerun(msg.auto_rerun.fragment_id, msg.auto_rerun.interval)
        elif kind == "stop_auto_rerun":
            for fragment_id in msg.stop_auto_rerun.fragment_ids:
                entry = self._auto_reruns.pop(fragment_id, None)
                if entry:
                    entry[1].cancel()
        elif kind == "script_finished":
            self._on_finished(msg, now)
        elif kind == "page_not_found":
            stats.problems.append(f"page not found: {msg.page_not_found.page_name!r}")
        elif kind == "session_event" and msg.session_event.WhichOneof("type") == "script_compilation_exception":
            exc = msg.session_event.script_compilation_exception
            stats.problems.append(f"script compilation error: {exc.type}: {exc.message}")

    def _on_delta(self, msg: ForwardMsg, now: float) -> None:
        delta = msg.delta
        which = delta.WhichOneof("type")
        if which == "new_element":
            element = delta.new_element.WhichOneof("type") or "empty"
            if element == "exception":
                exc = delta.new_element.exception
                self.stats.problems.append(f"exception element: {exc.type}: {exc.message}")
        else:
            element = "block" if which == "add_block" else (which or "none")
        if msg.metadata.cacheable and msg.hash:
            self._remember(msg.hash, element, delta.fragment_id)
        self.stats.deliveries.append(Delivery(now, element, delta.fragment_id, cached=False))

    def _on_ref(self, msg: ForwardMsg, now: float) -> None:
        entry = self._cache.get(msg.ref_hash)
        if entry is None:
            self.stats.problems.append(f"cache miss for ref_hash {msg.ref_hash}")
            return
        entry.run_count = self._run_count
        self.stats.deliveries.append(Delivery(now, entry.element, entry.fragment_id, cached=True))

    def _remember(self, hash_: str, element: str, fragment_id: str) -> None:
        entry = self._cache.get(hash_)
        if entry is None:
            self._cache[hash_] = _CacheEntry(element, fragment_id, self._run_count)
        else:
            entry.run_count = self._run_count

    def _on_auto_rerun(self, fragment_id: str, interval: float) -> None:
        if not fragment_id or interval <= 0:
            return
        current = self._auto_reruns.get(fragment_id)
        if current and current[0] == interval:
            return
        if current:
            current[1].cancel()
        task = asyncio.create_task(self._auto_rerun(fragment_id, interval), name=f"{self.name}-auto-{fragment_id}")
        self._auto_reruns[fragment_id] = (interval, task)

    def _on_finished(self, msg: ForwardMsg, now: float) -> None:
        status = msg.script_finished
        fragment_ids = tuple(msg.metadata.run.fragment_ids)
        self.stats.run_ends.append(RunEnd(now, FINISHED.Name(status), fragment_ids))
        if status != EARLY_FOR_RERUN and msg.metadata.HasField("run"):
            self._age_cache(fragment_ids)

    def _age_cache(self, fragment_ids: tuple[str, ...]) -> None:
        """After a run, drop entries unused for more than ``max_cached_message_age`` runs (the
        browser's rule; after a fragment run only that fragment's entries age out)."""
        self._run_count += 1
        for hash_, entry in list(self._cache.items()):
            if fragment_ids and entry.fragment_id not in fragment_ids:
                continue
            if self._run_count - entry.run_count > self._max_cached_age:
                del self._cache[hash_]


def _xsrf_cookie(health_url: str, timeout: float) -> str:
    """The XSRF cookie the health check sets ("" when XSRF protection is off)."""
    with urllib.request.urlopen(health_url, timeout=timeout) as response:
        for header in response.headers.get_all("Set-Cookie") or []:
            morsel = SimpleCookie(header).get(XSRF_COOKIE)
            if morsel is not None:
                return morsel.value
    return ""


async def open_sessions(host: str, port: int, page: str, query: str, count: int,
                        timeout: float = 60) -> list[StreamlitSession]:
    """``count`` sessions on one page, each asked for the page; waits until every page has loaded
    (:meth:`StreamlitSession.page_loaded`) or ``timeout`` passes. A session that cannot connect raises."""
    sessions = [StreamlitSession(host, port, page, query, name=f"viewer-{i}") for i in range(count)]
    try:
        await asyncio.gather(*(s.open(timeout) for s in sessions))
        await asyncio.gather(*(s.wait_until(StreamlitSession.page_loaded, timeout) for s in sessions))
    except BaseException:
        await close_sessions(sessions)
        raise
    return sessions


async def close_sessions(sessions: list[StreamlitSession]) -> None:
    await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
