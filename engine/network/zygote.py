"""What the client launcher (multiprocessing's fork server, :mod:`engine.network.launcher`) imports once,
so that each client it forks starts warm: the client's settings before torch loads, then the client, the
compiler front end the first optimiser pulls in, and scikit-learn's digits. Nothing else imports it."""

import os

from engine.network.launcher import client_threads

os.environ["OMP_NUM_THREADS"] = client_threads()
os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")  # gloo's failed-connection traces: see engine/__main__.py

import sklearn.datasets  # noqa: E402, F401
import sklearn.model_selection  # noqa: E402, F401
import torch._dynamo  # noqa: E402, F401

import engine.network.client  # noqa: E402, F401
