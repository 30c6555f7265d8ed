"""Messages between the server (rank 0) and the clients (ranks 1..n) over torch.distributed (gloo, TCP).

Tensors of known shape (smashed data, labels, gradients) travel as they are; anything else (model
states, optimiser states, data cursors) is pickled into a byte tensor behind its length. Every receive
waits with a timeout, and a peer that dies or stays silent becomes a :class:`PeerLost` naming it:
gloo reports a closed connection at once, and a timed-out receive leaves that connection unusable,
so either ends the run.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import os
import socket
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

SERVER = 0

# Commands, server -> client: an int64 tensor [op, round, step, flags]
STEP, AVERAGE, PULL, PUSH, STOP, GLOBAL, REGROUP, REJOIN = 1, 2, 3, 4, 5, 6, 7, 8
OP_NAMES = {STEP: "a training step", AVERAGE: "averaging", PULL: "sending its state", PUSH: "loading a state",
            STOP: "stopping", GLOBAL: "the global model", REGROUP: "a new process group",
            REJOIN: "the model it rejoins with"}
GRADS_FOLLOW, BATON, FULL = 1, 2, 4  # flags: ② gradients come back; Vanilla SL's model travels; full state


class PeerLost(RuntimeError):
    """The process on the other end of a link died or stopped answering (``timed_out``: gloo's timeout ran
    out, which closes every connection of this process, not only that peer's)."""

    def __init__(self, message: str, timed_out: bool = False):
        super().__init__(message)
        self.timed_out = timed_out


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> "Address":
        """'HOST:PORT' (HOST may be a name, an IPv4 address or [IPv6]); a bad value is a ValueError."""
        host, sep, port = text.strip().rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected HOST:PORT with a port between 1 and 65535, got {text!r}")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the store binds it a moment later)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def peer_name(rank: int) -> str:
    return "the server" if rank == SERVER else f"client {rank - 1} (rank {rank})"


def open_store(address: Address, rank: int, timeout_s: float, world_size: int | None = None) -> dist.TCPStore:
    """The run's rendezvous: the server (rank 0) hosts it at ``address``, the clients connect to it
    (retrying until ``timeout_s``). The server publishes the config there, the clients say they are ready."""
    timeout = datetime.timedelta(seconds=timeout_s)
    if rank == SERVER:
        return dist.TCPStore(address.host, address.port, world_size, is_master=True, timeout=timeout,
                             wait_for_workers=False)
    try:
        return dist.TCPStore(address.host, address.port, is_master=False, timeout=timeout)
    except (RuntimeError, TimeoutError):
        raise PeerLost(f"no SplitLab server answered at {address} within {timeout_s:g} s") from None


def join(store: dist.TCPStore, rank: int, world_size: int, timeout_s: float, generation: int = 0) -> None:
    """Join the run's process group (gloo over TCP); keep ``store`` alive as long as the group. A group is
    formed again (``generation`` 1, 2, ...) when a lost client rejoins: gloo cannot add a process to a
    running group, so the server and every live client leave the old one and form a new one."""
    group_store = dist.PrefixStore(f"generation/{generation}/", store) if generation else store
    dist.init_process_group("gloo", store=group_store, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))


def disconnect() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class Link:
    """One process's end of the run's links, with the timeout every receive waits at most."""

    def __init__(self, timeout_s: float):
        self.timeout = datetime.timedelta(seconds=timeout_s)
        self.sent = 0      # bytes handed to the transport (payloads, not TCP headers)
        self.received = 0
        self.ranks: dict[int, int] = {}  # a peer's rank in the current process group, where it differs
        self.waiting: tuple[int, float, str] | None = None  # (peer, since, what) while a wait is under way

    def _wait(self, work, peer: int, what: str) -> None:
        self.waiting = (peer, time.monotonic(), what)
        try:
            work.wait(self.timeout)
        except RuntimeError as err:
            closed = _closed(err)
            timed_out = not closed and "timed out" in str(err).lower()
            reason = "closed the connection" if closed \
                else f"sent nothing for {self.timeout.total_seconds():g} s" if timed_out else _first_line(err)
            raise PeerLost(f"{peer_name(peer)} {reason} while {what}", timed_out=timed_out) from None
        finally:
            self.waiting = None

    def send(self, tensor: torch.Tensor, peer: int, what: str) -> None:
        self.isend(tensor, peer, what).wait()

    def isend(self, tensor: torch.Tensor, peer: int, what: str) -> "_Pending":
        tensor = tensor.detach().contiguous()
        self.sent += tensor.numel() * tensor.element_size()
        try:
            return _Pending(dist.isend(tensor, self.ranks.get(peer, peer)), tensor, self, peer, what)
        except RuntimeError as err:
            raise _not_posted(peer, what, err) from None

    def irecv(self, shape: tuple[int, ...], dtype: torch.dtype, peer: int, what: str) -> "_Pending":
        buf = torch.empty(shape, dtype=dtype)
        self.received += buf.numel() * buf.element_size()
        try:
            return _Pending(dist.irecv(buf, self.ranks.get(peer, peer)), buf, self, peer, what)
        except RuntimeError as err:
            raise _not_posted(peer, what, err) from None

    def recv(self, shape: tuple[int, ...], dtype: torch.dtype, peer: int, what: str) -> torch.Tensor:
        return self.irecv(shape, dtype, peer, what).wait()

    def send_object(self, obj: object, peer: int, what: str) -> None:
        buf = io.BytesIO()
        torch.save(obj, buf)
        data = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
        self.send(torch.tensor([data.numel()], dtype=torch.int64), peer, what)
        self.send(data, peer, what)

    def recv_object(self, peer: int, what: str) -> object:
        size = int(self.recv((1,), torch.int64, peer, what)[0])
        data = self.recv((size,), torch.uint8, peer, what)
        return torch.load(io.BytesIO(data.numpy().tobytes()), weights_only=False)

    def command(self, peer: int, op: int, round_: int = 0, step: int = 0, flags: int = 0) -> None:
        self.send(torch.tensor([op, round_, step, flags], dtype=torch.int64), peer, f"receiving {OP_NAMES[op]}")


@dataclass
class _Pending:
    """A posted exchange with ``peer``: ``what`` it is for names it if the peer is lost."""

    work: object
    tensor: torch.Tensor
    link: Link
    peer: int
    what: str

    def wait(self) -> torch.Tensor:
        self.link._wait(self.work, self.peer, self.what)
        return self.tensor


def _closed(err: RuntimeError) -> bool:
    """gloo's error says the peer's connection closed (the peer died or hung up)."""
    return any(w in str(err).lower() for w in ("closed", "reset", "read error", "broken pipe"))


def _not_posted(peer: int, what: str, err: RuntimeError) -> PeerLost:
    """An exchange that could not even be posted: its peer's connection had already closed (said as a
    wait on it says it), or another reason in gloo's words."""
    if _closed(err):
        return PeerLost(f"{peer_name(peer)} closed the connection while {what}")
    return PeerLost(f"{peer_name(peer)} cannot be reached ({_first_line(err)})")


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__


def data_fingerprint(dataset) -> str:
    """Names a data set's training labels and shapes: server and clients must train on the same data."""
    digest = hashlib.sha1(dataset.train_y.numpy().tobytes()).hexdigest()[:12]
    return f"{dataset.name} {tuple(dataset.train_x.shape)} labels {digest}"


def limit_threads() -> None:
    """One compute thread per process unless told otherwise: n client processes share the cores."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)
