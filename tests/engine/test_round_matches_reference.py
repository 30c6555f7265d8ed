"""One engine round equals a plain per-client computation written from ALGORITHMS.md.

The reference below loops over clients one by one, takes every gradient with its own
``torch.autograd.grad`` call and updates weights by hand with plain SGD. It shares nothing
with the engine but the initial weights and the random draws (batches, partners, lambda,
active clients), which are captured while the engine runs.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn import functional as F

from engine.config import validate_config
from engine.presets import deep_merge, techniques_to_config
from engine.round import run_round
from engine.state import TrainState
from engine.techniques.mixup import Mixup
from engine.techniques.split_avg import SplitAvg
from tests.helpers import tiny_dataset

LR = 0.05
TOL = 1e-6


def make_config(techniques: str, **overrides):
    base = {"num_clients": 3, "batch_size": 4, "rounds": 5, "seed": 3, "data": {"dataset": "synthetic"},
            "optim": {"name": "sgd", "lr": LR}}
    return validate_config(deep_merge(deep_merge(base, techniques_to_config(techniques)), overrides))


class Recorder:
    """Captures the random draws the engine makes, so the reference can use the same ones."""

    def __init__(self, state: TrainState, monkeypatch):
        self.batches, self.mixups, self.actives = [], [], []
        next_batches, draw, draw_active = state.next_batches, Mixup.draw, SplitAvg.draw_active

        def rec_batches(clients):
            x, y = next_batches(clients)
            self.batches.append((list(clients), x.clone(), y.clone()))
            return x, y

        def rec_draw(tech, st, k, b):
            out = draw(tech, st, k, b)
            self.mixups.append(out)
            return out

        def rec_active(tech, st, k):
            out = draw_active(tech, st, k)
            self.actives.append(out)
            return out

        monkeypatch.setattr(state, "next_batches", rec_batches)
        monkeypatch.setattr(Mixup, "draw", rec_draw)
        monkeypatch.setattr(SplitAvg, "draw_active", rec_active)


def soft_ce(logits, target):
    return -(target * F.log_softmax(logits, -1)).sum(-1).mean()


def sgd(params, grads, lr):
    with torch.no_grad():
        for p, g in zip(params, grads):
            if g is not None:
                p -= lr * g


def reference_mixup_loss(cfg, upper, s_server, onehot, i, mix, detach):
    """L~_i: client i's smashed data mixed with each partner's, pair by pair."""
    partners, lams = mix
    terms = []
    for p_idx, partner in enumerate(partners[i]):
        lam = torch.as_tensor(lams[i][p_idx], dtype=torch.float32)
        lam_s = lam.view(-1, 1, 1, 1) if lam.dim() == 1 else lam
        lam_y = lam.view(-1, 1) if lam.dim() == 1 else lam
        src_i, src_p = s_server[i], s_server[partner]
        if detach:
            src_i, src_p = src_i.detach(), src_p.detach()
        mixed = lam_s * src_i + (1 - lam_s) * src_p
        target = lam_y * onehot[i] + (1 - lam_y) * onehot[partner]
        terms.append(soft_ce(upper(mixed), target))
    return sum(terms) / (len(terms) if cfg.mixup.reduction == "mean" else 1)


def reference_parallel_step(cfg, upper, lowers, auxes, delta, x, y, mix, active, num_classes):
    """ALGORITHMS.md, literally: per-client losses, per-client gradients, SGD by hand."""
    n = len(lowers)
    s = [lowers[i](x[i]) for i in range(n)]
    s_server = [si.detach().requires_grad_(True) for si in s]
    onehot = [F.one_hot(y[i], num_classes).float() for i in range(n)]
    mixing = cfg.mixup.enabled and cfg.mixup.num_partners > 0
    detach = not cfg.mixup.grad_to_clients
    own = [F.cross_entropy(upper(s_server[i]), y[i]) for i in range(n)]
    mixed = [reference_mixup_loss(cfg, upper, s_server, onehot, i, mix, detach) if mixing else 0 for i in range(n)]
    ws = list(upper.parameters())
    server_grad = [torch.zeros_like(p) for p in ws]
    for i in range(n):  # server: sum_i delta_i grad_ws (L_i + L~_i)
        g = torch.autograd.grad(delta[i] * (own[i] + mixed[i]), ws, retain_graph=True)
        server_grad = [a + b for a, b in zip(server_grad, g)]
    if detach:  # client i receives dL_i/ds_i
        cut = [torch.autograd.grad(own[i], s_server[i], retain_graph=True)[0] for i in range(n)]
    else:  # the whole objective's gradient w.r.t. s_i, on L_i's scale
        obj = sum(delta[i] * (own[i] + mixed[i]) for i in range(n))
        grads = torch.autograd.grad(obj, s_server, retain_graph=True)
        cut = [grads[i] / delta[i] for i in range(n)]
    if active is not None:
        mean = torch.stack([cut[a] for a in active]).mean(0)
        cut = [mean if i in active else cut[i] for i in range(n)]
    # clients: lower -= lr * (J^T cut_i + grad of the local loss); aux -= lr * grad of the local loss
    client_updates = []
    for i in range(n):
        params = list(lowers[i].parameters())
        g = [torch.zeros_like(p) for p in params]
        if cfg.global_backward:
            g = list(torch.autograd.grad(s[i], params, grad_outputs=cut[i], retain_graph=True))
        aux_g = None
        if cfg.local_loss.enabled:
            local = cfg.local_loss.weight * auxes[i].loss(s[i], x[i], y[i])
            aux_params = list(auxes[i].parameters())
            lg = torch.autograd.grad(local, params + aux_params, retain_graph=True, allow_unused=True)
            g = [a + (b if b is not None else 0) for a, b in zip(g, lg[:len(params)])]
            aux_g = lg[len(params):]
        client_updates.append((params, g, aux_g))
    sgd(ws, server_grad, cfg.server_lr)
    for i, (params, g, aux_g) in enumerate(client_updates):
        sgd(params, g, cfg.optim.lr)
        if aux_g is not None:
            sgd(list(auxes[i].parameters()), aux_g, cfg.optim.lr)


def reference_average(models, delta):
    with torch.no_grad():
        states = [m.state_dict() for m in models]
        for key in states[0]:
            if states[0][key].is_floating_point():
                avg = sum(delta[i] * states[i][key] for i in range(len(models)))
                for s in states:
                    s[key].copy_(avg)


def run_engine_and_reference(cfg, monkeypatch, rounds: int = 1):
    state = TrainState(cfg, tiny_dataset())
    upper = copy.deepcopy(state.upper)
    lowers = [copy.deepcopy(m) for m in state.lowers]
    auxes = [copy.deepcopy(a) for a in state.auxes] if state.auxes else None
    delta = state.weights.clone()
    rec = Recorder(state, monkeypatch)
    for _ in range(rounds):
        run_round(state)
    for t in range(1, rounds + 1):
        _, x, y = rec.batches[t - 1]
        mix = rec.mixups[t - 1] if rec.mixups else None
        active = rec.actives[t - 1] if rec.actives else None
        reference_parallel_step(cfg, upper, lowers, auxes, delta, x, y, mix, active, state.num_classes)
        if cfg.averaging.enabled and t % cfg.averaging.interval == 0:
            reference_average(lowers, delta)
            if cfg.local_loss.enabled and cfg.local_loss.average_aux:
                reference_average(auxes, delta)
    return state, upper, lowers, auxes


def assert_same_weights(engine_modules, ref_modules, tol: float = TOL):
    for em, rm in zip(engine_modules, ref_modules, strict=True):
        for (name, a), b in zip(em.state_dict().items(), rm.state_dict().values(), strict=True):
            if a.is_floating_point():
                assert torch.allclose(a, b, atol=tol, rtol=0), f"{name}: max diff {(a - b).abs().max():.3g}"


CASES = {
    "parallel_sl ②": ("1,2", {}),
    "mixup ③ sum": ("1,2,3", {"mixup": {"num_partners": 2}}),
    "mixup ③ mean, per-sample lambda, Beta(2,5)": (
        "1,2,3", {"mixup": {"num_partners": 1, "reduction": "mean", "per_sample": True, "alpha": 2.0, "beta": 5.0}}),
    "mixup ③ gradient to clients": ("1,2,3", {"mixup": {"num_partners": 2, "grad_to_clients": True}}),
    "local loss ④ infopro": ("1,2,4", {}),
    "local loss ④ classifier": ("1,2,4", {"local_loss": {"kind": "classifier"}}),
    "local loss ④ norm": ("1,2,4", {"local_loss": {"kind": "norm", "norm_theta": 0.5}}),
    "averaging ⑤": ("1,2,5", {}),
    "averaging ⑤ every 2 rounds": ("1,2,5", {"averaging": {"interval": 2}}),
    "④' + ⑤ (aux averaged, BatchNorm included)": ("1,2,4p,5", {}),
    "LocSplitFed: no ②, classifier, ⑤": ("1,4p,5", {"local_loss": {"kind": "classifier"}}),
    "LocFedMix-SL": ("1,2,3,4p,5", {"mixup": {"num_partners": 2}}),
    "SplitLr": ("1,2,splitlr", {"split_lr": {"alpha": 1.0}}),
    "SplitAvg phi=2/3": ("1,2,splitavg", {"split_avg": {"fraction": 0.67}}),
    "SGLR (SplitLr + SplitAvg)": ("1,2,splitlr,splitavg", {}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_rounds_match_plain_per_client_computation(name, monkeypatch):
    techniques, overrides = CASES[name]
    cfg = make_config(techniques, **overrides)
    state, upper, lowers, auxes = run_engine_and_reference(cfg, monkeypatch, rounds=3)
    assert_same_weights([state.upper], [upper])
    assert_same_weights(state.lowers, lowers)
    if auxes:
        assert_same_weights(state.auxes, auxes)


def test_the_reference_detects_a_wrong_learning_rate(monkeypatch):
    """The comparison is sharp: a 1 % different server step is caught."""
    cfg = make_config("1,2,3", mixup={"num_partners": 2})
    state, upper, lowers, _ = run_engine_and_reference(cfg, monkeypatch, rounds=1)
    with torch.no_grad():
        for p, q in zip(upper.parameters(), state.upper.parameters()):
            p.copy_(q + 0.01 * LR * torch.sign(q))
    with pytest.raises(AssertionError):
        assert_same_weights([state.upper], [upper])


def test_vanilla_sl_matches_sequential_reference(monkeypatch):
    """① alone: each client in turn takes a full step with the one circulating lower model."""
    cfg = make_config("1")
    state = TrainState(cfg, tiny_dataset())
    upper, lower = copy.deepcopy(state.upper), copy.deepcopy(state.lowers[0])
    rec = Recorder(state, monkeypatch)
    run_round(state)
    run_round(state)
    assert len(rec.batches) == 2 * cfg.num_clients
    for _, x, y in rec.batches:
        s = lower(x[0])
        loss = F.cross_entropy(upper(s), y[0])
        gs = torch.autograd.grad(loss, list(upper.parameters()) + list(lower.parameters()))
        sgd(list(upper.parameters()) + list(lower.parameters()), gs, LR)
    assert [c for c, _, _ in rec.batches] == [[0], [1], [2]] * 2
    assert_same_weights([state.upper, state.lowers[0]], [upper, lower])
    assert all(m is state.lowers[0] for m in state.lowers)
