"""What an honest-but-curious server can learn about a client's images from its smashed data.

Every measurement is deterministic for a seed, and never touches the run's random generators or
models (the lower model is put in eval mode while measured and given back in the mode it was in):
training is the same with and without it. The attacker (He, Zhang and Lee, ACSAC 2019) owns
auxiliary images of its own (the last :data:`AUX_IMAGES` images of the test split, which no client
holds) and is scored on :data:`TARGET_IMAGES` of the client's training images, which it never saw:

* **Black-box** ("inverse network"): a decoder from smashed data to images at the input's full
  resolution (:class:`InversionDecoder`, learned upsampling only), trained with Adam on the
  attacker's images until its loss on a held-out part of them stops improving (early stopping
  with patience; ``privacy.attack_steps`` caps the steps; the best checkpoint is kept).
* **White-box** (their "regularised maximum likelihood", rMLE): a server that holds the lower model
  (it averages the lower models in ⑤) optimises the image itself, x = sigmoid(z), so that the lower
  model maps it to the observed smashed data, plus a total-variation prior whose weight it picks on
  its own images (:func:`choose_tv_weight`). It starts from the attacker's mean image.
* **Hybrid**: the same optimisation started from the black-box reconstruction.
* **Data mean**: every image guessed as the mean of the attacker's own images, using nothing of the
  smashed data: the floor any server reaches. Where a defense leaves the other attacks below it,
  the headline is this floor, not a figure beneath what a server gets for free.

The headline is the strongest attack that applies (highest PSNR). Reported per attack: the pooled
MSE over the target images, PSNR = 10 log10(1 / MSE) (so the two always agree) and the standard
SSIM (Wang et al. 2004; :func:`ssim`, scikit-image's ``structural_similarity`` with Gaussian
weights). Beside the attack:

* **Distance correlation** between raw inputs and smashed data on a fixed batch (Szekely et al.
  2007; the leakage measure of NoPeek, Vepakomma et al. 2020): the square root of the bias-corrected
  squared distance correlation (Szekely and Rizzo 2014), clipped at 0: about 0 for independent
  samples, 1 for a similarity transform.
* **Mutual information** I(x; s) by the Kraskov-Stoegbauer-Grassberger estimator (KSG, 2004,
  estimator 1) on the first :data:`MI_DIMS` principal components of each side. A deterministic
  lower model makes the true I(x; s) infinite for continuous x; the estimate measures how much of
  the inputs' main directions of variation the smashed data still resolve at the sample's scale,
  and is bounded by about log(N). Comparable between runs because N, k and the dimensions are fixed.

A run attacks up to ``privacy.clients`` distinct lower models (identical ones, as after averaging,
count once) and reports the mean over them and the worst client. Label leakage is not measured: in
these protocols the server computes the loss, so it holds the labels.

On a CPU that computes bfloat16 natively (AMX or AVX-512 BF16) the attacker's two long loops, the
decoder's training and the white-box optimisation, run in bfloat16 mixed precision
(:func:`attack_precision`): 2 to 2.7 times faster per measurement, and no weaker (within 0.3 dB, as
often above as below, on the study's trained models, docs/privacy.md). Everything scored stays float32.
"""

from __future__ import annotations

import copy
import functools
import math
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

SEED_PRIVACY = 5  # one more stream after engine.state's SEED_* offsets
AUX_IMAGES = 5000          # attacker's auxiliary data: the last images of the test split
TARGET_IMAGES = 256        # client training images the attack is scored on
DCOR_SAMPLES = 512         # inputs in the distance-correlation batch
MI_SAMPLES = 1000          # inputs in the mutual-information sample
MI_DIMS = 4                # principal components kept of x and of s
KSG_K = 3                  # neighbours in the KSG estimator
ATTACKS = ("blackbox", "whitebox", "hybrid", "mean")
LEAK_KEYS = ("leak_mse", "leak_psnr", "leak_ssim", "leak_dcor", "leak_mi")  # the headline
# per attack (None where it does not apply), the worst client, and the attacker's budget as used
LEAK_EXTRA_KEYS = (*(f"leak_{m}_{a}" for a in ATTACKS for m in ("psnr", "ssim")), "leak_psnr_worst",
                   "leak_ssim_worst", "leak_client_worst", "leak_clients", "leak_attack_steps", "leak_whitebox_steps")


@dataclass(frozen=True)
class AttackBudget:
    """What the attacker may spend, the same for every run so that runs compare.

    ``privacy.attack_steps`` sets ``steps``, the cap on the decoder's training; ``privacy.budget =
    fast`` gives :meth:`weaker`'s figures."""

    steps: int = 2000              # cap on the black-box decoder's Adam steps
    batch_size: int = 64
    lr: float = 2e-3
    check_every: int = 50          # steps between two looks at the held-out loss
    patience: int = 4              # looks without a new best before the decoder stops
    holdout: int = 500             # attacker's images held out from the decoder's training
    inversion_steps: int = 300     # white-box and hybrid: Adam steps on the images
    inversion_lr: float = 0.1
    tv_weights: tuple[float, ...] = (0.0, 0.003, 0.01, 0.03)  # the prior weights tried
    tv_images: int = 16            # held-out attacker images the prior's weight is chosen on

    def weaker(self) -> AttackBudget:
        """The fast budget: at most 300 decoder steps, 100 image steps, two prior weights tried on 8 images."""
        return replace(self, steps=min(self.steps, 300), check_every=25, inversion_steps=100,
                       tv_weights=(0.0, 0.01), tv_images=8)


DEFAULT_BUDGET = AttackBudget()


# Seconds of one measurement, per attacked client, on one CPU core (LeNet-5, 28x28 images, cut 1 or 2),
# measured on SplitLab's development machine (2 cores, AVX-512 with AMX bfloat16), idle, 2026-12-07, on
# the privacy study's trained LocFedMix-SL and Parallel SL models (docs/privacy.md): the low end is a
# black-box-only measurement at cut 1, the high end the hybrid at cut 2. Where the CPU has native
# bfloat16 the attacker's loops run in it (attack_precision); elsewhere the float32 figures apply. A
# GPU, more cores or a smaller model change them; a run's own figure is its leak_s.
MEASURE_SECONDS = {"strong": (14, 35), "fast": (3, 8)}
MEASURE_SECONDS_FLOAT32 = {"strong": (36, 73), "fast": (6, 15)}


def measure_seconds(budget: str) -> tuple[int, int]:
    """The seconds of one measurement of one client with ``budget`` on a CPU like this one (native
    bfloat16 or not)."""
    return (MEASURE_SECONDS if bfloat16_native() else MEASURE_SECONDS_FLOAT32)[budget]


def measurements(rounds: int, every: int) -> int:
    """How many times a run of ``rounds`` rounds measures leakage: every ``every`` rounds and at the
    end (0: never), as :meth:`engine.trainer.Trainer.privacy_due` schedules them."""
    return 0 if not every else rounds // every + (rounds % every != 0)


def attack_budget(privacy_cfg) -> AttackBudget:
    """The budget a run's ``privacy`` section asks for."""
    budget = AttackBudget(steps=privacy_cfg.attack_steps)
    return budget.weaker() if privacy_cfg.budget == "fast" else budget


# ---- the black-box decoder ------------------------------------------------------------------
def _upsampling(smashed: tuple[int, ...], out_hw: tuple[int, int]) -> int:
    """How many x2 sub-pixel stages (0-2) rebuild ``out_hw``: the most that divide the image size and,
    for a map, leave a base no smaller than the smashed map."""
    for stages in (2, 1):
        f = 2 ** stages
        if out_hw[0] % f or out_hw[1] % f:
            continue
        if len(smashed) == 1 or (out_hw[0] // f >= smashed[1] and out_hw[1] // f >= smashed[2]):
            return stages
    return 0


class InversionDecoder(nn.Module):
    """The attacker's inverse network, smashed data -> image in [0, 1] at the input's exact size.

    Learned upsampling only, no interpolation: the smashed map is brought to a base of 1/2 or 1/4
    of the image size by a transposed convolution (a convolution where it is larger), vector smashed
    data (cuts after a fully connected layer) by a two-layer perceptron; two 3x3 convolutions work
    at the base, then each x2 stage is a convolution and a sub-pixel shuffle (ESPCN, Shi et al.
    2016), the last one straight to the image's channels. ``width``: channels at the base (32 for a
    base of 14x14 or more, 48 below).
    """

    def __init__(self, smashed: tuple[int, ...], in_shape: tuple[int, int, int], width: int | None = None):
        super().__init__()
        out_hw = tuple(in_shape[1:])
        stages = _upsampling(smashed, out_hw)
        self.base = (out_hw[0] >> stages, out_hw[1] >> stages)
        self.width = width = width or (32 if self.base[0] * self.base[1] >= 196 else 48)
        if len(smashed) == 1:
            self.entry = nn.Sequential(nn.Linear(smashed[0], 256), nn.ReLU(),
                                       nn.Linear(256, width * self.base[0] * self.base[1]), nn.ReLU())
        else:
            grow = (self.base[0] - smashed[1], self.base[1] - smashed[2])
            if grow == (0, 0):
                resize = nn.Conv2d(smashed[0], width, 3, padding=1)
            elif min(grow) >= 0:
                resize = nn.ConvTranspose2d(smashed[0], width, (grow[0] + 1, grow[1] + 1))
            else:  # a map larger than the image (an identity-like lower model on a small image)
                resize = nn.Conv2d(smashed[0], width, (1 - grow[0], 1 - grow[1]))
            self.entry = nn.Sequential(resize, nn.ReLU())
        layers: list[nn.Module] = [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                   nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        channels = width
        for stage in range(stages):
            if stage == stages - 1:  # the last stage gives the image
                layers += [nn.Conv2d(channels, 4 * in_shape[0], 3, padding=1), nn.PixelShuffle(2)]
            else:
                layers += [nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.PixelShuffle(2), nn.ReLU(),
                           nn.Conv2d(channels // 2, channels // 2, 3, padding=1), nn.ReLU()]
                channels //= 2
        if stages == 0:
            layers.append(nn.Conv2d(channels, in_shape[0], 3, padding=1))
        self.decode = nn.Sequential(*layers)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        h = self.entry(s)
        if h.dim() == 2:
            h = h.view(-1, self.width, *self.base)
        return torch.sigmoid(self.decode(h))


# ---- image quality ------------------------------------------------------------------------------
SSIM_SIGMA, SSIM_TAPS = 1.5, 11  # Wang et al.'s Gaussian window (scikit-image: gaussian_weights=True)


def ssim(recon: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image SSIM (Wang, Bovik, Sheikh and Simoncelli 2004) of [N, C, H, W] images: an 11-tap
    Gaussian window of sigma 1.5, K1 = 0.01, K2 = 0.03, population covariances, the mean of the
    SSIM map over the positions where the window fits (and over channels). The same figure as
    scikit-image's ``structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1)`` (tested)."""
    x, y = recon.double().cpu(), target.double().cpu()
    n, c, h, w = x.shape
    if h < SSIM_TAPS or w < SSIM_TAPS:
        raise ValueError(f"SSIM needs images of at least {SSIM_TAPS}x{SSIM_TAPS} pixels, got {h}x{w}")
    k = torch.arange(SSIM_TAPS, dtype=torch.float64) - SSIM_TAPS // 2
    g = torch.exp(-k ** 2 / (2 * SSIM_SIGMA ** 2))
    g = g / g.sum()

    def blur(a: torch.Tensor) -> torch.Tensor:
        a = F.conv2d(a.reshape(n * c, 1, h, w), g.view(1, 1, -1, 1))
        return F.conv2d(a, g.view(1, 1, 1, -1))

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.reshape(n, c, -1).mean(dim=(1, 2)).float()


def image_quality(recon: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image PSNR (dB, 10 log10(1 / MSE) of each image) and SSIM (:func:`ssim`) of
    reconstructions against targets, both [N, C, H, W] in [0, 1]."""
    recon, target = recon.float().cpu(), target.float().cpu()
    mse = (recon - target).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return -10 * torch.log10(mse), ssim(recon, target)


def psnr_of(mse: float) -> float:
    """PSNR (dB) of images in [0, 1] whose mean squared error is ``mse``."""
    return -10 * math.log10(max(mse, 1e-10))


# ---- dependence measures ------------------------------------------------------------------------
def distance_correlation_sq(x: torch.Tensor, z: torch.Tensor) -> float:
    """The bias-corrected squared distance correlation of two paired samples (rows are samples).

    Szekely and Rizzo (2014): U-centred distance matrices make dCor^2 unbiased, so independent
    samples give about 0 (and it can dip slightly below 0) while x with itself, or with a similarity
    transform of itself, gives 1. Needs at least 4 samples.
    """
    n = len(x)
    if n < 4:
        raise ValueError(f"distance correlation needs at least 4 samples, got {n}")

    def u_centred(a: torch.Tensor) -> torch.Tensor:
        d = torch.cdist(a, a)
        u = (d - d.sum(0, keepdim=True) / (n - 2) - d.sum(1, keepdim=True) / (n - 2)
             + d.sum() / ((n - 1) * (n - 2)))
        return u.fill_diagonal_(0.0)

    a = u_centred(x.flatten(1).double())
    b = u_centred(z.flatten(1).double())
    xy, xx, zz = (a * b).sum(), (a * a).sum(), (b * b).sum()
    return float(xy / torch.sqrt(xx * zz)) if xx > 0 and zz > 0 else 0.0


def distance_correlation(x: torch.Tensor, z: torch.Tensor) -> float:
    """Distance correlation as usually quoted: the square root of the bias-corrected squared
    distance correlation (:func:`distance_correlation_sq`), clipped at 0. 0 for independence
    (up to sampling noise), 1 for a similarity transform."""
    return math.sqrt(max(distance_correlation_sq(x, z), 0.0))


def ksg_mutual_information(x: np.ndarray, z: np.ndarray, k: int = KSG_K) -> float:
    """I(x; z) in nats by KSG estimator 1 (max-norm; Kraskov et al. 2004, eq. 8).

    ``x`` [N, dx] and ``z`` [N, dz]. Unbiased for independent samples and accurate for moderate
    dependence; it underestimates strong dependence in high dimensions (tests state how much).
    """
    from scipy.spatial import cKDTree  # here, not at the top: every worker and app imports this module
    from scipy.special import digamma

    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    z = np.asarray(z, dtype=np.float64).reshape(len(z), -1)
    n = len(x)
    joint = np.hstack([x, z])
    # distance to the k-th neighbour in the joint space (the point itself is the 0-th)
    eps = cKDTree(joint).query(joint, k=k + 1, p=np.inf)[0][:, -1]
    # neighbours strictly closer than eps in each marginal, the point itself excluded
    radius = np.nextafter(eps, 0)
    nx = cKDTree(x).query_ball_point(x, radius, p=np.inf, return_length=True) - 1
    nz = cKDTree(z).query_ball_point(z, radius, p=np.inf, return_length=True) - 1
    return float(max(0.0, digamma(k) + digamma(n) - np.mean(digamma(nx + 1) + digamma(nz + 1))))


def principal_components(a: torch.Tensor, dims: int) -> np.ndarray:
    """The first ``dims`` principal-component scores of the rows of ``a``, each scaled to unit variance."""
    a = a.flatten(1).double()
    a = a - a.mean(0)
    u, s, _ = torch.linalg.svd(a.float(), full_matrices=False)
    dims = min(dims, int((s > s[0] * 1e-9).sum()) if s.numel() and s[0] > 0 else 0)
    if dims == 0:
        return np.zeros((len(a), 1))
    scores = u[:, :dims] * math.sqrt(len(a) - 1)  # unit variance per component
    return scores.numpy()


def mutual_information(x: torch.Tensor, z: torch.Tensor, dims: int = MI_DIMS, k: int = KSG_K,
                       seed: int = 0) -> float:
    """KSG estimate of I(x; z) on the first ``dims`` principal components of each side (nats).

    A tiny, seeded jitter (1e-10 of unit variance) breaks the ties that identical rows would cause.
    """
    rng = np.random.default_rng(seed)
    px = principal_components(x, dims)
    pz = principal_components(z, dims)
    px = px + 1e-10 * rng.standard_normal(px.shape)
    pz = pz + 1e-10 * rng.standard_normal(pz.shape)
    return ksg_mutual_information(px, pz, k)


# ---- the attacks -----------------------------------------------------------------------------
@contextmanager
def evaluating(module: nn.Module):
    """``module`` in eval mode for the block, then every submodule back in the mode it was in."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


@contextmanager
def native_convolutions():
    """PyTorch's own convolutions instead of oneDNN's for the block: 1.6-2.5x faster for the gradient
    of a few-channel convolution with respect to its input (the white-box attack's step), same maths."""
    enabled = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = enabled


BFLOAT16 = True  # False: the attacker's loops always in float32 (the reference for attack_precision's claim)


@functools.cache
def _cpu_computes_bfloat16() -> bool:
    """This CPU's oneDNN computes bfloat16 in hardware (asked once: it cannot change while running)."""
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def bfloat16_native(device: torch.device | str = "cpu") -> bool:
    """Whether the attacker's loops run in bfloat16 on ``device``: a CPU whose oneDNN computes it in
    hardware (elsewhere autocast would emulate it, slower than float32), and :data:`BFLOAT16`."""
    return BFLOAT16 and torch.device(device).type == "cpu" and _cpu_computes_bfloat16()


def attack_precision(device: torch.device):
    """bfloat16 autocast for a forward pass of the attacker's loops where :func:`bfloat16_native`, else
    nothing: parameters, optimiser state and every loss stay float32 (mixed precision)."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if bfloat16_native(device) else nullcontext()


@torch.no_grad()
def smash(lower: nn.Module, x: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    """The lower model's output for every row of ``x``, in eval mode (no gradient; the model, its
    mode and its buffers are left as they were)."""
    with evaluating(lower):
        return torch.cat([lower(x[i:i + batch]) for i in range(0, len(x), batch)])


def train_inversion(smashed: torch.Tensor, images: torch.Tensor, in_shape: tuple[int, int, int],
                    budget: AttackBudget = DEFAULT_BUDGET, seed: int = 0) -> tuple[InversionDecoder, int]:
    """The attacker's decoder, trained with Adam on (smashed, image) pairs it owns, and the steps it took.

    The last ``budget.holdout`` pairs (a fifth where there are fewer than five times as many) are held
    out: every ``check_every`` steps their loss is measured, and training stops after ``patience``
    looks without improvement or at ``budget.steps``; the decoder returned is the one with the lowest
    held-out loss."""
    held = min(budget.holdout, len(images) // 5)
    train_s, train_x = smashed[:len(images) - held], images[:len(images) - held]
    held_s, held_x = smashed[len(images) - held:], images[len(images) - held:]
    with torch.random.fork_rng(devices=[]):  # the run's global generator is left exactly as it was
        torch.manual_seed(seed)
        decoder = InversionDecoder(tuple(smashed.shape[1:]), in_shape).to(smashed.device)
    layout = torch.channels_last if bfloat16_native(smashed.device) and smashed.dim() == 4 else None
    if layout:  # oneDNN's bfloat16 convolutions are fastest on channels-last maps (1.3-2x here)
        decoder, train_s = decoder.to(memory_format=layout), train_s.contiguous(memory_format=layout)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(decoder.parameters(), lr=budget.lr)
    best, best_state, since, step = math.inf, copy.deepcopy(decoder.state_dict()), 0, 0
    while step < budget.steps:
        step += 1
        idx = torch.randint(len(train_x), (budget.batch_size,), generator=gen).to(smashed.device)
        with attack_precision(smashed.device):
            recon = decoder(train_s[idx])
        loss = F.mse_loss(recon.float(), train_x[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if held and (step % budget.check_every == 0 or step == budget.steps):
            with torch.no_grad():
                held_loss = sum(float(F.mse_loss(decoder(held_s[i:i + 256]), held_x[i:i + 256], reduction="sum"))
                                for i in range(0, held, 256))
            if held_loss < best:
                best, best_state, since = held_loss, copy.deepcopy(decoder.state_dict()), 0
            else:
                since += 1
                if since >= budget.patience:
                    break
    if held:
        decoder.load_state_dict(best_state)
    return decoder.to(memory_format=torch.contiguous_format).eval(), step


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation of each image [N, C, H, W]: the mean absolute difference of neighbours."""
    return ((x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
            + (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1))


def invert_whitebox(lower: nn.Module, observed: torch.Tensor, start: torch.Tensor, tv_weight: torch.Tensor | float,
                    budget: AttackBudget = DEFAULT_BUDGET, scale: float = 1.0) -> torch.Tensor:
    """He et al.'s rMLE: the images x = sigmoid(z) in [0, 1] that minimise, each on its own,
    mean((lower(x) - observed)^2) / scale + tv_weight * TV(x), by Adam from ``start``.

    ``tv_weight`` is one weight or one per image; ``scale`` (the attacker's mean squared smashed
    value) makes the weights mean the same at every cut. Images do not interact: each row's result
    is the one it would get alone. Only the images are optimised: the lower model is untouched.
    The lower model's passes run in :func:`attack_precision` (bfloat16 through oneDNN where the CPU
    has it, else float32 through PyTorch's own convolutions)."""
    weight = torch.as_tensor(tv_weight, dtype=start.dtype, device=start.device).expand(len(start))
    z = torch.logit(start.detach().clamp(1e-3, 1 - 1e-3)).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=budget.inversion_lr)
    convolutions = nullcontext() if bfloat16_native(start.device) else native_convolutions()
    with evaluating(lower), convolutions, torch.enable_grad():
        for _ in range(budget.inversion_steps):
            x = torch.sigmoid(z)
            with attack_precision(start.device):
                smashed = lower(x)
            fit = (smashed.float() - observed).pow(2).flatten(1).mean(1) / scale
            loss = (fit + weight * total_variation(x)).sum()
            (z.grad,) = torch.autograd.grad(loss, z)
            opt.step()
    return torch.sigmoid(z).detach()


def choose_tv_weight(lower: nn.Module, images: torch.Tensor, starts: dict[str, torch.Tensor],
                     budget: AttackBudget, scale: float, received: nn.Module | None = None) -> dict[str, float]:
    """For each start (white-box: the mean image; hybrid: the decoder's output), the prior weight of
    ``budget.tv_weights`` whose reconstructions of the attacker's own ``images`` have the lowest MSE
    (the best PSNR). One batched optimisation: every (start, weight, image) is its own row.
    ``received``: what the server receives of ``lower``'s output (its defenses), default ``lower``."""
    weights = torch.tensor(budget.tv_weights, dtype=images.dtype, device=images.device)
    k, m = len(images), len(weights)
    observed = smash(received or lower, images)
    rows_start = torch.cat([start.repeat(m, 1, 1, 1) for start in starts.values()])
    rows_weight = weights.repeat_interleave(k).repeat(len(starts))
    recon = invert_whitebox(lower, observed.repeat(m * len(starts), *[1] * (observed.dim() - 1)),
                            rows_start, rows_weight, budget, scale)
    err = (recon - images.repeat(m * len(starts), 1, 1, 1)).pow(2).flatten(1).mean(1).view(len(starts), m, k)
    best = err.mean(2).argmin(1)
    return {name: float(weights[best[i]]) for i, name in enumerate(starts)}


def white_box_attacks(lower: nn.Module, decoder: nn.Module, aux_x: torch.Tensor, s_aux: torch.Tensor,
                      observed: torch.Tensor, blackbox: torch.Tensor, budget: AttackBudget,
                      received: nn.Module | None = None) -> dict[str, tuple[torch.Tensor, float]]:
    """The white-box attack (from the attacker's mean image) and the hybrid (from the black-box
    reconstructions ``blackbox``) of the smashed data ``observed``, each with the prior weight chosen
    on held-out attacker images (those the decoder never trained on). The attacker optimises through
    the clean ``lower`` model (it knows the model, not the noise drawn), matching what it
    ``received`` (noise, quantisation: the maximum-likelihood fit under Gaussian noise)."""
    view = received or lower
    scale = float(s_aux.pow(2).mean().clamp_min(1e-12))
    held = min(budget.holdout, len(aux_x) // 5)
    tv_x = aux_x[len(aux_x) - held:][:budget.tv_images] if held else aux_x[:budget.tv_images]
    mean_image = aux_x.mean(0, keepdim=True)
    with torch.no_grad():
        starts = {"whitebox": mean_image.expand_as(tv_x), "hybrid": decoder(smash(view, tv_x))}
    weights = choose_tv_weight(lower, tv_x, starts, budget, scale, received)
    out = {}
    for name, start in (("whitebox", mean_image.expand_as(blackbox)), ("hybrid", blackbox)):
        out[name] = invert_whitebox(lower, observed, start, weights[name], budget, scale), weights[name]
    return out


@dataclass
class AttackResult:
    """One attack on one client: pooled MSE and mean SSIM over the target images, and its view of the shown ones."""

    mse: float
    ssim: float
    shown: np.ndarray | None = None        # reconstruction of the shown images [k, C, H, W]
    shown_psnr: np.ndarray | None = None
    shown_ssim: np.ndarray | None = None
    tv_weight: float | None = None         # white-box and hybrid: the prior's weight chosen

    @property
    def psnr(self) -> float:
        return psnr_of(self.mse)


def _score(recon: torch.Tensor, target: torch.Tensor, shown: torch.Tensor | None, tv_weight: float | None = None
           ) -> AttackResult:
    """An attack's figures: ``recon`` holds its reconstructions of ``target`` and then of ``shown``."""
    k = len(target)
    mse = float(F.mse_loss(recon[:k], target))
    result = AttackResult(mse, float(ssim(recon[:k], target).mean()), tv_weight=tv_weight)
    if shown is not None:
        sp, ss = image_quality(recon[k:], shown)
        result.shown, result.shown_psnr, result.shown_ssim = recon[k:].cpu().numpy(), sp.numpy(), ss.numpy()
    return result


@dataclass
class ClientLeakage:
    """One measurement of one client's lower model: each attack that applies, its strongest, dCor and MI."""

    client: int
    attacks: dict[str, AttackResult]
    dcor: float | None  # None: fewer than 4 client images
    mi: float | None    # None: fewer than 2k client images
    attack_steps: int = 0      # black-box: the decoder's steps actually taken
    whitebox_steps: int = 0    # white-box and hybrid: the image steps (0: not applied)

    @property
    def strongest(self) -> str:
        return max(self.attacks, key=lambda name: self.attacks[name].psnr)

    @property
    def mse(self) -> float:
        return self.attacks[self.strongest].mse

    @property
    def psnr(self) -> float:
        return self.attacks[self.strongest].psnr

    @property
    def ssim(self) -> float:
        return self.attacks[self.strongest].ssim

    @property
    def shown_reconstruction(self) -> np.ndarray | None:
        return self.attacks[self.strongest].shown

    @property
    def shown_psnr(self) -> np.ndarray | None:
        return self.attacks[self.strongest].shown_psnr

    @property
    def shown_ssim(self) -> np.ndarray | None:
        return self.attacks[self.strongest].shown_ssim

    def metrics(self) -> dict[str, float | None]:
        return LeakageReport([self]).metrics()


def measure(lower: nn.Module, aux_x: torch.Tensor, target_x: torch.Tensor, shown_x: torch.Tensor | None = None,
            budget: AttackBudget = DEFAULT_BUDGET, seed: int = 0, client: int = 0,
            white_box: bool = False, received: nn.Module | None = None) -> ClientLeakage:
    """Attack ``lower`` (the attacker owns ``aux_x``; scored on ``target_x``), and the dCor and MI on ``target_x``.

    ``target_x`` holds client images the attacker never saw: the first :data:`TARGET_IMAGES` are
    attacked, the first :data:`DCOR_SAMPLES` (or all) give the distance correlation and the first
    :data:`MI_SAMPLES` the MI estimate. ``white_box``: the server holds ``lower``, so the white-box
    and hybrid attacks apply too. ``shown_x`` (optional): images whose reconstructions are kept.
    ``received`` (optional): ``lower`` as the server sees it, through the run's defenses
    (:class:`engine.techniques.ServerView`); every attack and dependence measure reads its output.
    """
    in_shape = tuple(aux_x.shape[1:])
    view = received or lower
    s_aux = smash(view, aux_x)
    decoder, steps = train_inversion(s_aux, aux_x, in_shape, budget, seed)
    target = target_x[:TARGET_IMAGES]
    attacked = target if shown_x is None else torch.cat([target, shown_x])  # shown images ride along
    s_target = smash(view, target_x)
    observed = smash(view, attacked)
    with torch.no_grad():
        blackbox = decoder(observed)
    attacks = {"blackbox": _score(blackbox, target, shown_x),
               "mean": _score(aux_x.mean(0, keepdim=True).expand_as(blackbox), target, shown_x)}
    if white_box:
        found = white_box_attacks(lower, decoder, aux_x, s_aux, observed, blackbox, budget, received)
        attacks.update({name: _score(recon, target, shown_x, weight) for name, (recon, weight) in found.items()})
    with torch.no_grad():
        # a client with a handful of images gets no dependence estimate (None) rather than a meaningless one
        n = len(target_x)
        dcor = distance_correlation(target_x[:DCOR_SAMPLES], s_target[:DCOR_SAMPLES]) if n >= 4 else None
        mi = mutual_information(target_x[:MI_SAMPLES], s_target[:MI_SAMPLES], seed=seed) if n > 2 * KSG_K else None
    return ClientLeakage(client, attacks, dcor, mi, steps, budget.inversion_steps if white_box else 0)


@dataclass
class LeakageReport:
    """One measurement of a run: one :class:`ClientLeakage` per distinct lower model attacked. The
    headline is the attack strongest on average; the first client's reconstructions are shown."""

    clients: list[ClientLeakage]
    seconds: float = 0.0  # how long the measurement took (set by the trainer: reported as leak_s)

    @property
    def client(self) -> int:
        return self.clients[0].client

    @property
    def shown_reconstruction(self) -> np.ndarray | None:
        return self.clients[0].shown_reconstruction

    @property
    def shown_psnr(self) -> np.ndarray | None:
        return self.clients[0].shown_psnr

    @property
    def shown_ssim(self) -> np.ndarray | None:
        return self.clients[0].shown_ssim

    def attack_mse(self, name: str) -> float:
        """The attack's MSE, averaged over the attacked clients (each pooled over its target images)."""
        return float(np.mean([c.attacks[name].mse for c in self.clients]))

    @property
    def strongest(self) -> str:
        return min(self.clients[0].attacks, key=self.attack_mse)

    def metrics(self) -> dict[str, float | int | None]:
        """The history row's figures: :data:`LEAK_KEYS` (the strongest attack, mean over clients) and
        :data:`LEAK_EXTRA_KEYS`."""
        head = self.strongest
        mse = self.attack_mse(head)
        dcors = [c.dcor for c in self.clients if c.dcor is not None]
        mis = [c.mi for c in self.clients if c.mi is not None]
        out = {"leak_mse": mse, "leak_psnr": psnr_of(mse),
               "leak_ssim": float(np.mean([c.attacks[head].ssim for c in self.clients])),
               "leak_dcor": float(np.mean(dcors)) if dcors else None, "leak_mi": float(np.mean(mis)) if mis else None}
        for name in ATTACKS:
            applies = name in self.clients[0].attacks
            out[f"leak_psnr_{name}"] = psnr_of(self.attack_mse(name)) if applies else None
            out[f"leak_ssim_{name}"] = float(np.mean([c.attacks[name].ssim for c in self.clients])) if applies else None
        worst = min(self.clients, key=lambda c: c.attacks[head].mse)
        out.update(leak_psnr_worst=worst.attacks[head].psnr, leak_ssim_worst=worst.attacks[head].ssim,
                   leak_client_worst=worst.client, leak_clients=len(self.clients),
                   leak_attack_steps=max(c.attack_steps for c in self.clients),
                   leak_whitebox_steps=max(c.whitebox_steps for c in self.clients))
        return out


# ---- inside a run ----------------------------------------------------------------------------
def same_model(a: nn.Module, b: nn.Module) -> bool:
    """Whether two lower models hold the same parameters and buffers (as after averaging)."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def distinct_clients(lowers: list[nn.Module], candidates: list[int], limit: int) -> list[int]:
    """Up to ``limit`` of ``candidates`` (in order) whose lower models differ from every one taken before."""
    chosen: list[int] = []
    for c in candidates:
        if len(chosen) == limit:
            break
        if not any(same_model(lowers[c], lowers[o]) for o in chosen):
            chosen.append(c)
    return chosen


def server_holds_lower_models(cfg) -> bool:
    """Whether the white-box attacks apply: the server holds the lower models when it runs ⑤'s averaging,
    or when it relays Vanilla SL's one lower model from client to client (the ledger counts that handoff
    as passing through the server), unless ``privacy.averaging_at_server`` says that runs elsewhere."""
    return (cfg.averaging.enabled or cfg.schedule == "sequential") and cfg.privacy.averaging_at_server


def measure_client(state, client: int, num_shown: int = 4) -> ClientLeakage:
    """Measure the leakage of one client's current lower model in a run (``state``: a TrainState).

    Attacker's data: the last :data:`AUX_IMAGES` test images, never the shown ones. Scored on the client's own training
    images (the first of its index list, fixed for the run); shown: the first ``num_shown`` test
    images, the ones the InfoPro snapshots show. The attacker's seed depends on the run's seed only,
    so every measurement of a run starts the attacker from the same point.
    """
    data, device = state.dataset, state.device
    # the last test images, never the shown ones (small data sets have fewer than AUX_IMAGES + num_shown)
    aux = data.test_x[max(num_shown, len(data.test_x) - AUX_IMAGES):].to(device)
    own = torch.as_tensor(state.clients[client].indices[:max(TARGET_IMAGES, DCOR_SAMPLES, MI_SAMPLES)])
    target = data.train_x[own].to(device)
    shown = data.test_x[:num_shown].to(device)
    seed = state.cfg.seed * 7919 + SEED_PRIVACY
    from engine.techniques import ServerView  # what the server receives: through the run's defenses

    lower = state.lowers[client]
    received = ServerView(lower, state.cfg, seed=seed)
    if not received.techniques:
        received = None
    return measure(lower, aux, target, shown, budget=attack_budget(state.cfg.privacy), seed=seed,
                   client=client, white_box=server_holds_lower_models(state.cfg), received=received)


def measure_run(state, candidates: list[int]) -> LeakageReport:
    """Attack up to ``privacy.clients`` distinct lower models among ``candidates`` (the first is always attacked)."""
    clients = distinct_clients(state.lowers, candidates, state.cfg.privacy.clients)
    return LeakageReport([measure_client(state, c) for c in clients])


def attach_to_snapshot(snapshot: dict, report: LeakageReport | ClientLeakage) -> dict:
    """Add the attacker's view to a :func:`engine.evaluate.reconstruction_snapshot` of the same round:
    the first attacked client's strongest reconstruction of the shown images with their PSNR/SSIM,
    and the PSNR/SSIM of the client's own InfoPro reconstruction of them, for that client's entry."""
    entry = snapshot["clients"].setdefault(report.client, {})
    entry["attack"] = report.shown_reconstruction
    entry["attack_psnr"], entry["attack_ssim"] = report.shown_psnr, report.shown_ssim
    if entry.get("reconstruction") is not None:
        psnr, ssim_ = image_quality(torch.as_tensor(entry["reconstruction"]), torch.as_tensor(snapshot["inputs"]))
        entry["psnr"], entry["ssim"] = psnr.numpy(), ssim_.numpy()
    return snapshot
