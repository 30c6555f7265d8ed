"""What an honest-but-curious server can learn about a client's images from its smashed data.

Three measurements of one client's lower model, each deterministic for a seed:

* **Inversion attack** (He, Zhang and Lee, ACSAC 2019, the black-box "inverse network"): the server
  trains a decoder from smashed data back to images on auxiliary data of its own (the last
  :data:`AUX_IMAGES` images of the test split, which no client holds), with a fixed budget
  (:class:`AttackBudget`), then decodes the smashed data of client images it never trained on.
  Reported as MSE, PSNR (dB) and SSIM of the reconstructions (torchmetrics' implementations).
* **Distance correlation** between raw inputs and smashed data on a fixed batch (Szekely et al.
  2007; the leakage measure of NoPeek, Vepakomma et al. 2020), in its bias-corrected squared form
  (Szekely and Rizzo 2014): about 0 for independent samples, 1 for a similarity transform.
* **Mutual information** I(x; s) by the Kraskov-Stoegbauer-Grassberger estimator (KSG, 2004,
  estimator 1) on the first :data:`MI_DIMS` principal components of each side. A deterministic
  lower model makes the true I(x; s) infinite for continuous x; the estimate measures how much of
  the inputs' main directions of variation the smashed data still resolve at the sample's scale,
  and is bounded by about log(N). Comparable between runs because N, k and the dimensions are fixed.

Label leakage is not measured: in these protocols the server computes the loss, so it holds the
labels. Measuring never touches the run's random generators or models: training is the same with
and without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree
from scipy.special import digamma
from torch import nn
from torch.nn import functional as F

SEED_PRIVACY = 5  # one more stream after engine.state's SEED_* offsets
AUX_IMAGES = 5000          # attacker's auxiliary data: the last images of the test split
TARGET_IMAGES = 256        # client training images the attack is scored on
DCOR_SAMPLES = 512         # inputs in the distance-correlation batch
MI_SAMPLES = 1000          # inputs in the mutual-information sample
MI_DIMS = 4                # principal components kept of x and of s
KSG_K = 3                  # neighbours in the KSG estimator
LEAK_KEYS = ("leak_mse", "leak_psnr", "leak_ssim", "leak_dcor", "leak_mi")


@dataclass(frozen=True)
class AttackBudget:
    """The attacker's fixed training budget, the same for every run so that runs compare (a run's
    ``privacy.attack_steps`` sets the steps; 200 by default)."""

    steps: int = 200
    batch_size: int = 64
    lr: float = 4e-3


DEFAULT_BUDGET = AttackBudget()


class InversionDecoder(nn.Module):
    """The attacker's inverse network, smashed data -> image in [0, 1].

    Stronger than the clients' InfoPro decoder (one 12-channel convolution after bilinear
    upsampling): three convolutions (32 channels) at the smashed data's own resolution and a
    learned sub-pixel upsampling (ESPCN's pixel shuffle, x2), then bilinear resizing to the image
    size where the cut's map is smaller than half of it. Vector smashed data (cuts after a fully
    connected layer) first go through a two-layer perceptron to a 32x7x7 map.
    """

    def __init__(self, smashed: tuple[int, ...], in_shape: tuple[int, int, int]):
        super().__init__()
        self.out_hw = tuple(in_shape[1:])
        if len(smashed) == 1:
            self.project = nn.Sequential(nn.Linear(smashed[0], 256), nn.ReLU(), nn.Linear(256, 32 * 7 * 7), nn.ReLU())
            channels = 32
        else:
            self.project = None
            channels = smashed[0]
        self.decode = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 4 * in_shape[0], 3, padding=1), nn.PixelShuffle(2),
        )

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        if self.project is not None:
            s = self.project(s).view(-1, 32, 7, 7)
        h = self.decode(s)
        if tuple(h.shape[-2:]) != self.out_hw:
            h = F.interpolate(h, size=self.out_hw, mode="bilinear", align_corners=False)
        return torch.sigmoid(h)


# ---- the three measures ---------------------------------------------------------------------
def image_quality(recon: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image PSNR (dB) and SSIM of reconstructions against targets, both [N, C, H, W] in [0, 1]."""
    from engine.tv_compat import import_torchvision

    import_torchvision()  # torchmetrics imports torchvision, which needs the CPU-torch shim here
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    recon, target = recon.float().cpu(), target.float().cpu()
    psnr = peak_signal_noise_ratio(recon, target, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(recon, target, data_range=1.0, reduction="none")
    return psnr, ssim


def distance_correlation(x: torch.Tensor, z: torch.Tensor) -> float:
    """Bias-corrected squared distance correlation of two paired samples (rows are samples, any shape each).

    Szekely and Rizzo (2014): U-centred distance matrices make the estimate unbiased, so independent
    samples give about 0 (the plain sample dCor of two independent 500-sample, 20-dimensional
    Gaussians is about 0.37) while x with itself, or with a similarity transform of itself, gives 1.
    It can dip slightly below 0 for independent data. Needs at least 4 samples.
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


def ksg_mutual_information(x: np.ndarray, z: np.ndarray, k: int = KSG_K) -> float:
    """I(x; z) in nats by KSG estimator 1 (max-norm; Kraskov et al. 2004, eq. 8).

    ``x`` [N, dx] and ``z`` [N, dz]. Unbiased for independent samples and accurate for moderate
    dependence; it underestimates strong dependence in high dimensions (tests state how much).
    """
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


# ---- the attack -----------------------------------------------------------------------------
@torch.no_grad()
def smash(lower: nn.Module, x: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    """The lower model's output for every row of ``x`` (no gradient; the model is not changed)."""
    return torch.cat([lower(x[i:i + batch]) for i in range(0, len(x), batch)])


def train_inversion(smashed: torch.Tensor, images: torch.Tensor, in_shape: tuple[int, int, int],
                    budget: AttackBudget = DEFAULT_BUDGET, seed: int = 0) -> InversionDecoder:
    """The attacker's decoder, trained with Adam on (smashed, image) pairs it owns."""
    with torch.random.fork_rng(devices=[]):  # the run's global generator is left exactly as it was
        torch.manual_seed(seed)
        decoder = InversionDecoder(tuple(smashed.shape[1:]), in_shape).to(smashed.device)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(decoder.parameters(), lr=budget.lr)
    for _ in range(budget.steps):
        idx = torch.randint(len(images), (budget.batch_size,), generator=gen).to(smashed.device)
        loss = F.mse_loss(decoder(smashed[idx]), images[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return decoder.eval()


@dataclass
class LeakageReport:
    """One measurement of one client's lower model: the metrics and the attacker's view of the shown images."""

    client: int
    mse: float
    psnr: float
    ssim: float
    dcor: float | None  # None: fewer than 4 client images
    mi: float | None    # None: fewer than 2k client images
    shown_reconstruction: np.ndarray | None = None   # attacker's reconstruction of the shown images [k, C, H, W]
    shown_psnr: np.ndarray | None = None
    shown_ssim: np.ndarray | None = None
    seconds: float = 0.0  # how long the measurement took (set by the trainer: reported as leak_s)

    def metrics(self) -> dict[str, float | None]:
        return {"leak_mse": self.mse, "leak_psnr": self.psnr, "leak_ssim": self.ssim,
                "leak_dcor": self.dcor, "leak_mi": self.mi}


def measure(lower: nn.Module, aux_x: torch.Tensor, target_x: torch.Tensor, shown_x: torch.Tensor | None = None,
            budget: AttackBudget = DEFAULT_BUDGET, seed: int = 0, client: int = 0) -> LeakageReport:
    """Attack ``lower`` (train on ``aux_x``, score on ``target_x``), and the dCor and MI on ``target_x``-like data.

    ``target_x`` holds client images the attacker never saw; the first :data:`DCOR_SAMPLES` of them
    (or all) give the distance correlation and the first :data:`MI_SAMPLES` the MI estimate.
    ``shown_x`` (optional): images whose reconstructions are kept for display.
    """
    in_shape = tuple(aux_x.shape[1:])
    decoder = train_inversion(smash(lower, aux_x), aux_x, in_shape, budget, seed)
    with torch.no_grad():
        s_target = smash(lower, target_x)
        recon = decoder(s_target[:TARGET_IMAGES])
        target = target_x[:TARGET_IMAGES]
        psnr, ssim = image_quality(recon, target)
        mse = float(F.mse_loss(recon, target))
        # a client with a handful of images gets no dependence estimate (None) rather than a meaningless one
        n = len(target_x)
        dcor = distance_correlation(target_x[:DCOR_SAMPLES], s_target[:DCOR_SAMPLES]) if n >= 4 else None
        mi = mutual_information(target_x[:MI_SAMPLES], s_target[:MI_SAMPLES], seed=seed) if n > 2 * KSG_K else None
        report = LeakageReport(client, mse, float(psnr.mean()), float(ssim.mean()), dcor, mi)
        if shown_x is not None:
            shown = decoder(smash(lower, shown_x))
            report.shown_reconstruction = shown.cpu().numpy()
            sp, ss = image_quality(shown, shown_x)
            report.shown_psnr, report.shown_ssim = sp.numpy(), ss.numpy()
    return report


def measure_client(state, client: int, num_shown: int = 4) -> LeakageReport:
    """Measure the leakage of one client's current lower model in a run (``state``: a TrainState).

    Attacker's data: the last :data:`AUX_IMAGES` test images, never the shown ones. Scored on the client's own training
    images (the first of its index list, fixed for the run); shown: the first ``num_shown`` test
    images, the ones the InfoPro snapshots show. The decoder's seed depends on the run's seed only,
    so every measurement of a run starts the attacker from the same point.
    """
    data, device = state.dataset, state.device
    # the last test images, never the shown ones (small data sets have fewer than AUX_IMAGES + num_shown)
    aux = data.test_x[max(num_shown, len(data.test_x) - AUX_IMAGES):].to(device)
    own = torch.as_tensor(state.clients[client].indices[:max(TARGET_IMAGES, DCOR_SAMPLES, MI_SAMPLES)])
    target = data.train_x[own].to(device)
    shown = data.test_x[:num_shown].to(device)
    seed = state.cfg.seed * 7919 + SEED_PRIVACY
    budget = AttackBudget(steps=state.cfg.privacy.attack_steps)
    return measure(state.lowers[client], aux, target, shown, budget=budget, seed=seed, client=client)


def attach_to_snapshot(snapshot: dict, report: LeakageReport) -> dict:
    """Add the attacker's view to a :func:`engine.evaluate.reconstruction_snapshot` of the same round:
    its reconstruction of the shown images with their PSNR/SSIM, and the PSNR/SSIM of the client's own
    InfoPro reconstruction of them, for the attacked client's entry."""
    entry = snapshot["clients"].setdefault(report.client, {})
    entry["attack"] = report.shown_reconstruction
    entry["attack_psnr"], entry["attack_ssim"] = report.shown_psnr, report.shown_ssim
    if entry.get("reconstruction") is not None:
        psnr, ssim = image_quality(torch.as_tensor(entry["reconstruction"]), torch.as_tensor(snapshot["inputs"]))
        entry["psnr"], entry["ssim"] = psnr.numpy(), ssim.numpy()
    return snapshot
