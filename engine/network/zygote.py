"""What the client launcher (multiprocessing's fork server, :mod:`engine.network.launcher`) imports once,
so that each client it forks starts warm: the client's settings before torch loads, then the client and
the compiler front end the first optimiser pulls in. Nothing else imports it."""

import os

from engine.network.launcher import client_threads

os.environ["OMP_NUM_THREADS"] = client_threads()
os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")  # gloo's failed-connection traces: see engine/__main__.py

import torch._dynamo  # noqa: E402, F401

import engine.network.client  # noqa: E402, F401
