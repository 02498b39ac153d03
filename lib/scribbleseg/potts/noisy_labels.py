"""Robustness of the cross-entropies (7)-(9) to label uncertainty: the experiment of Fig. 3(d).

Potts relaxations and soft self-labeling (CVPR 2025), Sec. 2.2, Eq. 7-9 and Fig. 3: a classifier is
trained on a fully labelled set where a fraction eta of the training labels was replaced by a random
label, with the soft targets

    yhat = eta * u + (1 - eta) * y          (Fig. 3 caption, after label smoothing [29])

(u uniform over the K classes, y the one-hot of the observed, possibly corrupted, label) and one of

    standard  H_CE (yhat, sigma) = -sum_k yhat^k ln sigma^k     (7)
    reverse   H_RCE(yhat, sigma) = -sum_k sigma^k ln yhat^k     (8)
    collision H_CCE(yhat, sigma) = -ln sum_k sigma^k yhat^k     (9)

(:func:`scribbleseg.potts.soft_cross_entropy.soft_cross_entropy`); the plot is the clean test accuracy
against eta. The paper uses ResNet-18 on the Natural Scenes dataset; here a small hand-written CNN on
Fashion-MNIST (the dataset we have offline), see :class:`SmallCNN`.

Every run is deterministic from ``cfg.seed`` (subset, corruption, initialisation and batch order) and
is cached as ``<cache_root>/noisy_labels/<stable_hash(config)>.json`` by :func:`run_cached`.
"""
from __future__ import annotations

import dataclasses
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scribbleseg.files import stable_hash
from scribbleseg.potts.soft_cross_entropy import soft_cross_entropy
from scribbleseg.train import fit_epoch
from scribbleseg.data.fashion import load_fashion_mnist
from scribbleseg.experiment import cache_root
from scribbleseg.files import UnreadableFile, atomic_write_json, read_json

LOSSES = ("CE", "RCE", "CCE")  # paper Eq. (7), (8), (9)
NUM_CLASSES = 10
CACHE_VERSION = 1  # bump when a code change invalidates cached runs (the key does not hash the code)
_MEAN, _STD = 0.286, 0.353  # Fashion-MNIST train pixel mean / std (of x / 255)


def check_loss(name: str) -> str:
    """Return ``name`` if it is one of Fig. 3's losses, else raise ValueError naming the choices."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r} for the label-noise experiment; choose one of {LOSSES} "
                         "(paper Eq. 7 standard, Eq. 8 reverse, Eq. 9 collision cross-entropy)")
    return name


def corrupt_labels(labels: np.ndarray, eta: float, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Replace the labels of exactly ``round(eta * N)`` samples, chosen at random, by a random label.

    Following the paper ("replaced by a random label"), the new label is uniform over all K classes,
    so it equals the true one with probability 1/K: about ``round(eta * N) * (K - 1) / K`` labels
    actually change. The rng first draws the replaced indices, then their labels.

    Args:
        labels: (N,) integer class labels in [0, K). eta: fraction of samples to redraw, in [0, 1].
        num_classes: K. rng: numpy Generator (consumed).
    Returns:
        (N,) int64 observed labels (a new array; ``labels`` is not modified).
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    n = len(labels)
    idx = rng.choice(n, size=int(round(eta * n)), replace=False)  # the round(eta N) redrawn samples
    observed = np.asarray(labels, dtype=np.int64).copy()
    observed[idx] = rng.integers(0, num_classes, size=len(idx))  # uniform over all K classes
    return observed


def soft_targets(observed: torch.Tensor, eta: float, num_classes: int) -> torch.Tensor:
    """yhat = eta * u + (1 - eta) * onehot(observed) (Fig. 3 caption).

    Args: observed (N,) integer labels (possibly corrupted); eta: mixing weight; num_classes: K.
    Returns: (N, K) float32 distributions; rows sum to 1.
    """
    y = F.one_hot(torch.as_tensor(observed, dtype=torch.long), num_classes).float()  # (N, K)
    return eta / num_classes + (1.0 - eta) * y  # eta * u + (1 - eta) * y, u^k = 1/K


class SmallCNN(nn.Module):
    """Three strided 3x3/5x5 conv layers + global pooling + a linear classifier (about 24 k parameters).

    Hand-written because the inputs are 28x28 grey images and torchvision's ResNet-18 (11 M parameters,
    made for 224x224 RGB) is far too slow to train 45 times on 2 CPU cores; this net trains at
    about 9000 images/s on one thread.

    Shapes: (N, 1, 28, 28) -> (N, 16, 14, 14) -> (N, 32, 7, 7) -> (N, 64, 4, 4) -> logits (N, K).
    """

    def __init__(self, num_classes: int = NUM_CLASSES, width: int = 16):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(1, w, 5, 2, 2), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            nn.Conv2d(w, 2 * w, 3, 2, 1), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True),
            nn.Conv2d(2 * w, 4 * w, 3, 2, 1), nn.BatchNorm2d(4 * w), nn.ReLU(inplace=True))
        self.head = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


@dataclasses.dataclass(frozen=True)
class NoisyLabelConfig:
    """One run of Fig. 3(d).

    Attributes:
        loss: "CE" (7), "RCE" (8) or "CCE" (9). eta: label-noise fraction and target mixing weight.
        seed: seeds the training subset, the corruption, the initialisation and the batch order.
        n_train: training images (a random subset of the 60000; 0 = all). n_test: clean test images
        (the first n_test of the 10000; 0 = all). epochs, batch_size, lr: Adam training. width: SmallCNN.
    """

    loss: str = "CCE"
    eta: float = 0.0
    seed: int = 0
    n_train: int = 10000
    n_test: int = 0
    epochs: int = 5
    batch_size: int = 128
    lr: float = 0.003
    width: int = 16


@lru_cache(maxsize=2)
def _split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST ``split`` as normalised (N, 1, 28, 28) float32 images and (N,) int64 labels."""

    images, labels = load_fashion_mnist(split)
    x = (torch.from_numpy(images.astype(np.float32) / 255.0) - _MEAN) / _STD
    return x[:, None], torch.from_numpy(labels.astype(np.int64))


def training_set(cfg: NoisyLabelConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images (n, 1, 28, 28), clean labels (n,), observed labels (n,)) of ``cfg``'s training run."""
    x, y = _split("train")
    n = cfg.n_train or len(y)
    idx = torch.from_numpy(np.random.default_rng([cfg.seed, 0]).permutation(len(y))[:n])
    observed = corrupt_labels(y[idx].numpy(), cfg.eta, NUM_CLASSES, np.random.default_rng([cfg.seed, 1]))
    return x[idx], y[idx], torch.from_numpy(observed)


def train_classifier(cfg: NoisyLabelConfig, images: torch.Tensor, observed: torch.Tensor,
                     log=None) -> tuple[SmallCNN, list[dict]]:
    """Train a SmallCNN with H_cfg.loss(yhat, sigma) on soft targets yhat of the observed labels.

    Adam with a cosine learning-rate decay; the batch order of epoch e comes from (seed, e).

    Args:
        cfg: the run. images: (n, 1, 28, 28) float. observed: (n,) int64 (possibly corrupted) labels.
        log: optional print-like callable, one line per epoch.
    Returns:
        (model in eval mode, history: one {"epoch", "loss", "seconds"} per epoch).
    """
    check_loss(cfg.loss)
    torch.manual_seed(cfg.seed)
    model = SmallCNN(NUM_CLASSES, cfg.width)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs * -(-len(images) // cfg.batch_size))
    yhat = soft_targets(observed, cfg.eta, NUM_CLASSES)  # (n, K)
    history = []
    for epoch in range(cfg.epochs):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
        parts = order.split(cfg.batch_size)

        def loss(m, b):
            logits = m(images[b])  # (B, K)
            sigma, log_sigma = logits.softmax(1), logits.log_softmax(1)
            # mean over the batch of H(yhat, sigma): Eq. (7) CE, (8) RCE or (9) CCE
            return {"loss": soft_cross_entropy(sigma, yhat[b], cfg.loss, dim=1, log_sigma=log_sigma).mean()}

        steps = fit_epoch(model, opt, parts, loss, sched)
        total = sum(h["loss"] * len(b) for h, b in zip(steps, parts))
        history.append({"epoch": epoch, "loss": total / len(images), "seconds": time.perf_counter() - start})
        if log is not None:
            log(f"  {cfg.loss} eta={cfg.eta} seed={cfg.seed} epoch {epoch + 1}/{cfg.epochs}: "
                f"loss {history[-1]['loss']:.4f} ({history[-1]['seconds']:.1f}s)")
    return model.eval(), history


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Accuracy in [0, 1] of argmax predictions; images (N, 1, 28, 28), labels (N,)."""
    model.eval()  # BatchNorm: running statistics
    correct = sum((model(images[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]).sum().item()
                  for i in range(0, len(images), batch_size))
    return correct / len(images)


def cache_path(cfg: NoisyLabelConfig, root: Path | None = None) -> Path:
    """``<cache_root>/noisy_labels/<stable_hash({version, config})>.json``."""

    key = stable_hash({"version": CACHE_VERSION, **dataclasses.asdict(cfg)}, 16)
    return Path(root or cache_root()) / "noisy_labels" / f"{key}.json"


def run_cached(cfg: NoisyLabelConfig, root: Path | None = None, log=None) -> dict:
    """Train and test ``cfg`` once; later calls read the JSON cache.

    Returns: {"config", "accuracy" (clean test, in [0, 1]), "noisy_fraction" (observed != clean),
    "history", "seconds" (training), "cached" (bool)}.
    """
    path = cache_path(cfg, root)
    if path.exists():
        try:
            return {**read_json(path), "cached": True}
        except UnreadableFile as e:  # a truncated cache file: the run is unfinished, trained again
            (log or print)(f"{e}: training this run again")
    images, clean, observed = training_set(cfg)
    model, history = train_classifier(cfg, images, observed, log=log)
    x_test, y_test = _split("test")
    n_test = cfg.n_test or len(y_test)
    out = {"config": dataclasses.asdict(cfg), "accuracy": evaluate(model, x_test[:n_test], y_test[:n_test]),
           "noisy_fraction": float((observed != clean).float().mean()),
           "history": history, "seconds": sum(h["seconds"] for h in history)}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, out, indent=1)  # an interrupted run leaves no half-written result
    return {**out, "cached": False}
