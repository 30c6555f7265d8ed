"""A shaped uplink for networked runs: Linux traffic control on a veth pair into a network namespace.

The server runs inside a namespace of its own; the clients stay outside and reach it over a veth
pair created for the purpose (``10.77.0.1`` outside, ``10.77.0.2`` inside). A token bucket (``tc
qdisc ... tbf``) on the outside end limits everything the clients send to the server: one uplink
shared by all clients, as in the paper's latency model. The downlink is left unshaped, as Table 4
ignores it. Nothing touches the machine's own interfaces; everything is removed on exit.

Needs root, ``ip`` and ``tc`` (Debian's ``iproute2``) and a kernel with network namespaces and the
``tbf`` queueing discipline; :func:`unavailable` says what is missing. (``netem`` delays would
need the ``sch_netem`` module, which this machine's kernel lacks: only rates are shaped.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

MTU_BYTES = 1500
TBF_LATENCY = "400ms"  # how long a packet may queue in the bucket before it is dropped


@dataclass(frozen=True)
class ShapedUplink:
    namespace: str        # the server's network namespace
    outside: str          # the clients' end of the veth pair (shaped)
    inside: str           # the server's end
    client_address: str   # 10.77.0.1
    server_address: str   # 10.77.0.2

    def server_command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the server's namespace, gloo bound to its end of the pair."""
        return ["ip", "netns", "exec", self.namespace, "env", f"GLOO_SOCKET_IFNAME={self.inside}", *argv]

    def client_env(self) -> dict[str, str]:
        return {"GLOO_SOCKET_IFNAME": self.outside}

    def set_rate(self, mbit_per_s: float) -> None:
        """Limit the uplink to ``mbit_per_s`` (a token bucket: burst of one timer tick, at least 2 MTUs)."""
        burst = max(2 * MTU_BYTES, int(mbit_per_s * 1e6 / 8 / 250))
        _ip("tc", "qdisc", "replace", "dev", self.outside, "root", "tbf", "rate", f"{mbit_per_s:g}mbit",
            "burst", str(burst), "latency", TBF_LATENCY)


def _ip(*argv: str) -> str:
    done = subprocess.run(list(argv), capture_output=True, text=True)
    if done.returncode:
        raise OSError(f"`{' '.join(argv)}` failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout


def unavailable() -> str | None:
    """Why shaping cannot run here (None when it can): tried for real, then undone."""
    if os.geteuid() != 0:
        return "traffic shaping needs root (network namespaces and tc)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (Debian: apt-get install iproute2)"
    try:
        with shaped_uplink(f"slp{os.getpid() % 1000000:06d}") as link:  # its own name: test workers probe at once
            link.set_rate(10)
    except OSError as err:
        return f"this machine does not allow it: {err}"
    return None


@contextmanager
def shaped_uplink(name: str = "splitlab") -> Iterator[ShapedUplink]:
    """A namespace ``name`` joined to this one by a veth pair; everything is removed afterwards."""
    link = ShapedUplink(name, f"{name[:9]}-c", f"{name[:9]}-s", "10.77.0.1", "10.77.0.2")
    _cleanup(link)
    try:
        _ip("ip", "netns", "add", link.namespace)
        _ip("ip", "link", "add", link.outside, "type", "veth", "peer", "name", link.inside)
        _ip("ip", "link", "set", link.inside, "netns", link.namespace)
        _ip("ip", "addr", "add", f"{link.client_address}/24", "dev", link.outside)
        _ip("ip", "link", "set", link.outside, "up")
        inside = ["ip", "netns", "exec", link.namespace]
        _ip(*inside, "ip", "addr", "add", f"{link.server_address}/24", "dev", link.inside)
        _ip(*inside, "ip", "link", "set", link.inside, "up")
        _ip(*inside, "ip", "link", "set", "lo", "up")
        yield link
    finally:
        _cleanup(link)


def _cleanup(link: ShapedUplink) -> None:
    subprocess.run(["ip", "link", "del", link.outside], capture_output=True)
    subprocess.run(["ip", "netns", "del", link.namespace], capture_output=True)


SERVER_PORT = 29500  # the namespace is new: nothing else listens there


def run_over(link: ShapedUplink, cfg, out_json: str, timeout_s: float = 600.0) -> dict:
    """Train ``cfg`` with its server inside ``link``'s namespace and its clients outside; the result
    dict (as ``engine run --out`` writes it). Raises RuntimeError with the server's last line on failure."""
    import json
    import sys
    import tempfile
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": root, "TORCH_CPP_LOG_LEVEL": "FATAL", "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory(prefix="splitlab-shaped-") as tmp:
        config_file = Path(tmp) / "config.json"
        config_file.write_text(cfg.model_dump_json())
        address = f"{link.server_address}:{SERVER_PORT}"
        server = subprocess.Popen(link.server_command(
            [sys.executable, "-m", "engine", "serve", "--config", str(config_file), "--listen", address,
             "--out", out_json]), env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        clients = [subprocess.Popen([sys.executable, "-m", "engine", "client", "--server", address, "--rank", str(r),
                                     "--timeout", "120"], env={**env, **link.client_env()}, cwd=root,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                   for r in range(1, cfg.num_clients + 1)]
        try:
            _, err = server.communicate(timeout=timeout_s)
        finally:
            for p in (server, *clients):
                if p.poll() is None:
                    p.kill()
                p.wait()
        if server.returncode:
            last = err.strip().splitlines()[-1] if err.strip() else f"exit code {server.returncode}"
            raise RuntimeError(f"the shaped run failed: {last}")
        return json.loads(Path(out_json).read_text())
