"""Small shared test data, and this process's networked-run clients as an outsider sees them."""

import os
from pathlib import Path

import torch

from engine.data import Dataset


def tiny_dataset(seed: int = 0, n: int = 96) -> Dataset:
    """96 random 1x16x16 images in 4 classes: enough for a LeNet-5 round, fast to train on."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 16, 16, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    return Dataset("synthetic", x, y, x[:16], y[:16], ("a", "b", "c", "d"))


def client_processes() -> dict[int, int]:
    """This process's networked-run client processes, pid -> rank, read from /proc: its children running
    ``python -m engine client --rank R`` and the children of its client launcher (named ``splitlab-cl-R``)."""
    table = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            name = (proc / "comm").read_text().strip()
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        table[int(proc.name)] = (ppid, cmd, name)
    me, clients = os.getpid(), {}
    for pid, (ppid, cmd, name) in table.items():
        if ppid == me and b"engine" in cmd and b"client" in cmd and b"--rank" in cmd:
            clients[pid] = int(cmd[cmd.index(b"--rank") + 1])
        elif name.startswith("splitlab-cl-") and table.get(ppid, (None,))[0] == me:
            clients[pid] = int(name.removeprefix("splitlab-cl-"))
    return clients
