"""Fetch files over HTTP(S) with a progress callback, checked against their md5 before they are kept.

:func:`engine.data.get_dataset` plans what to fetch (torchvision's mirrors and checksums) and unpacks
it; this module only moves bytes. A file is written beside its destination as ``<name>.part`` and
renamed into place only once its checksum matches (torchvision's ``check_md5``), so an interrupted or
corrupted download never leaves a file that looks complete.
"""

from __future__ import annotations

import http.client
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.tv_compat import import_torchvision

Progress = Callable[[int, int], None]  # (bytes done, bytes in all), over every file of one download
# What a failed transfer raises (a local disk error, an OSError of another kind, is not one of them).
NETWORK_ERRORS = (urllib.error.URLError, ConnectionError, TimeoutError, socket.timeout, socket.gaierror,
                  http.client.HTTPException, ValueError)
CHUNK_BYTES = 256 * 1024
TIMEOUT_S = 30.0


class DownloadError(RuntimeError):
    """A download that did not complete: ``str(err)`` is one line; ``offline`` is True when no
    server could be reached (no network, or the mirror is down), False for a bad file."""

    def __init__(self, message: str, offline: bool = False) -> None:
        super().__init__(message)
        self.offline = offline


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: the addresses to try in order, where it goes, and its md5."""

    urls: tuple[str, ...]
    dest: Path
    md5: str
    size_hint: int = 0  # expected bytes, used when the server does not say


def fetch_all(files: Sequence[RemoteFile], progress: Progress | None = None) -> None:
    """Fetch every file not already in place with the right md5; ``progress`` gets the running total.

    Raises:
        DownloadError: no address of a file could be read, or what came does not match its md5.
        OSError: the file could not be written here.
    """
    todo = [f for f in files if not _intact(f.dest, f.md5)]
    total = sum(_remote_size(f) for f in todo)
    done = 0

    def advance(count: int) -> None:
        nonlocal done, total
        if not count:
            return
        done += count
        total = max(total, done)
        if progress is not None:
            progress(done, total)

    for remote in todo:
        _fetch_one(remote, advance)


def _intact(path: Path, md5: str) -> bool:
    check_integrity = import_torchvision().datasets.utils.check_integrity
    return check_integrity(str(path), md5)


def _remote_size(remote: RemoteFile) -> int:
    """The size the first answering address announces (HEAD), else the hint; offline: the hint."""
    for url in remote.urls:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=TIMEOUT_S) as answer:
                length = answer.headers.get("Content-Length")
                return int(length) if length and length.isdigit() else remote.size_hint
        except NETWORK_ERRORS:
            continue
    return remote.size_hint


def _fetch_one(remote: RemoteFile, advance: Callable[[int], None]) -> None:
    """Try each address in turn; keep the first download whose md5 matches."""
    part = remote.dest.with_name(remote.dest.name + ".part")
    reasons: list[str] = []
    for url in remote.urls:
        got = 0

        def count(n: int) -> None:
            nonlocal got
            got += n
            advance(n)

        try:
            _stream(url, part, count)
        except NETWORK_ERRORS as err:
            part.unlink(missing_ok=True)
            advance(-got)  # what this address sent does not count
            reasons.append(f"{url}: {_reason(err)}")
            continue
        if not _intact(part, remote.md5):
            actual = import_torchvision().datasets.utils.calculate_md5(str(part))
            part.unlink(missing_ok=True)
            raise DownloadError(f"{remote.dest.name} from {url} does not match its checksum (md5 {actual}, "
                                f"expected {remote.md5}): it was not kept")
        os.replace(part, remote.dest)
        return
    raise DownloadError("could not download " + "; ".join(reasons), offline=True)


def _stream(url: str, path: Path, count: Callable[[int], None]) -> None:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as answer:
        path.parent.mkdir(parents=True, exist_ok=True)  # only once a server answered
        with open(path, "wb") as out:
            while chunk := answer.read(CHUNK_BYTES):
                out.write(chunk)
                count(len(chunk))


def _reason(err: BaseException) -> str:
    """An error as a few words, without its class name ("Connection refused", "HTTP 404 Not Found")."""
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        if not isinstance(err.reason, BaseException):
            return str(err.reason)
        err = err.reason
    if isinstance(err, socket.timeout | TimeoutError):
        return f"no answer within {TIMEOUT_S:g} s"
    if isinstance(err, socket.gaierror):
        return "the host name could not be resolved"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err) or "failed"
