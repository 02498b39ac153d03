"""Methods of "Potts relaxations and soft self-labeling" (CVPR 2025): gradient descent on the
weakly supervised loss (4), and self-labeling with soft or hard pseudo-labels, loss (6) + App. B.

Both read batch["image"] (N, 3, H, W) normalised, batch["rgb"] (N, 3, H, W) colours on 0-255 and
batch["scribble"] (N, H, W). The seed term is pCE at full resolution; the unlabelled and Potts terms
live on the grid of the network's logits (stride 4 for SmallSegNet and DeepLabV3+), where scribbles
are pooled with :func:`~scribbleseg.potts.solver.labels_to_grid` and colours by averaging.

Dense neighbourhood (DN) on a coarser grid: the paper evaluates DN at full resolution through
bilateral filtering (a lattice approximation). We evaluate it exactly, but on the logits grid
average-pooled to at most ``dense_size`` x ``dense_size`` cells (16 x 16 = stride 8 on a 128 x 128
image): 200 solver steps with the exact 1024 x 1024 kernel of the stride-4 grid cost about 2 s per
batch of 16 on 2 CPU cores, on 256 cells about 0.1 s. Predictions are pooled by averaging
probabilities; pseudo-labels solved on the coarse grid are upsampled bilinearly and the seeds reset.

Args (dataclass fields; paper defaults from App. C):
    relaxation: Potts relaxation (Tables 1-2): "BL", "Q", "NQ", "CCE", "CD", "LQ".
    neighbourhood: "grid" (NN, 4 neighbours) or "dense" (DN, bilateral).
    eta, lam: weights eta, lambda. sigma_rgb, sigma_xy: affinity bandwidths (0-255 colours, input pixels).
    dense_size: side of the DN grid (see above).
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
import torch.nn.functional as F

from scribbleseg.constants import IGNORE_INDEX
from scribbleseg.losses import partial_cross_entropy
from scribbleseg.potts.losses import entropy_term, potts_term, self_labeling_term
from scribbleseg.potts.relaxations import check_name
from scribbleseg.models.base import upsample
from scribbleseg.potts.neighbourhood import dense_affinities, grid_affinities, pool_colours
from scribbleseg.data.grid import labels_to_grid
from scribbleseg.potts.solver import SolverConfig, harden, seed_onehot, solve


def neighbourhood_grid(size: tuple[int, int], neighbourhood: str, dense_size: int) -> tuple[int, int]:
    """The grid the Potts term lives on: the logits grid, or for DN at most dense_size x dense_size."""
    if neighbourhood == "dense" and size[0] * size[1] > dense_size ** 2:
        return (min(size[0], dense_size), min(size[1], dense_size))
    return size


def affinities(rgb: torch.Tensor, size: tuple[int, int], neighbourhood: str, sigma_rgb: float, sigma_xy: float):
    """Affinities on the (h, w) logits grid of input colours rgb (N, 3, H, W)."""
    grid = pool_colours(rgb, size)                                    # (N, 3, h, w)
    if neighbourhood == "grid":
        return grid_affinities(grid, sigma_rgb)                       # (N, 2, h, w)
    if neighbourhood == "dense":
        return dense_affinities(grid, sigma_rgb, sigma_xy, stride=rgb.shape[-1] / size[1])  # (N, M, M)
    raise ValueError(f"neighbourhood must be 'grid' (NN) or 'dense' (DN), got {neighbourhood!r}")


def _forward(model, batch):
    logits = model(batch["image"])["logits"]                          # (N, K, h, w)
    ce = partial_cross_entropy(upsample(logits, batch["scribble"].shape[-2:]), batch["scribble"])
    seeds = labels_to_grid(batch["scribble"], tuple(logits.shape[-2:]), logits.shape[1])  # (N, h, w)
    return logits, ce, seeds


@dataclasses.dataclass(frozen=True)
class PottsGD:
    """Loss (4) minimised directly by SGD; ("BL", "dense") is the DenseCRF loss of Tang et al.

    Returns {"ce", "entropy", "potts"} (entropy only when eta > 0).
    """

    relaxation: str = "BL"
    neighbourhood: str = "dense"
    eta: float = 0.0
    lam: float = 1.0
    sigma_rgb: float = 9.0
    sigma_xy: float = 100.0
    dense_size: int = 16

    NAME: ClassVar[str] = "scribbleseg.methods.potts.PottsGD"  # the cache key's name (stable across moves)

    def __post_init__(self):
        check_name(self.relaxation)

    def losses(self, model: torch.nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        logits, ce, seeds = _forward(model, batch)
        sigma = torch.softmax(logits.float(), 1)
        size = neighbourhood_grid(tuple(logits.shape[-2:]), self.neighbourhood, self.dense_size)
        w = affinities(batch["rgb"], size, self.neighbourhood, self.sigma_rgb, self.sigma_xy)
        out = {"ce": ce, "potts": self.lam * potts_term(F.adaptive_avg_pool2d(sigma, size), w, self.relaxation)}
        if self.eta > 0:
            out["entropy"] = self.eta * entropy_term(sigma, seeds == IGNORE_INDEX)
        return out                                  # (4) L_ws = seeds' CE + eta H(sigma) + lambda P, summed by the loop


@dataclasses.dataclass(frozen=True)
class SelfLabeling:
    """Loss (6), alternating per mini-batch: solve the pseudo-labels y for the current predictions
    (App. B, network fixed), then one SGD step of the network on pCE + eta * mean H(sigma, y).

    Extra args: cross_entropy ("CE", "RCE", "CCE" or "Q"); hard: train on argmax(y) (App. A) instead of
    y; steps, lr, optimizer: the solver's; entropy: weight of an extra entropy term on the network
    (Sec. 3.1 adds one for H_Q + P_Q, whose pseudo-labels are overly soft).

    Returns {"ce", "self"} (+ "entropy").
    """

    relaxation: str = "CD"
    cross_entropy: str = "CCE"
    neighbourhood: str = "grid"
    hard: bool = False
    eta: float = 0.3
    lam: float = 6.0
    steps: int = 200
    lr: float = 0.075
    optimizer: str = "adam"
    sigma_rgb: float = 9.0
    sigma_xy: float = 100.0
    entropy: float = 0.0
    dense_size: int = 16

    def solver(self) -> SolverConfig:
        return SolverConfig(self.relaxation, self.cross_entropy, self.eta, self.lam, self.steps, self.lr, self.optimizer)

    NAME: ClassVar[str] = "scribbleseg.methods.potts.SelfLabeling"  # the cache key's name (stable across moves)

    def __post_init__(self):
        self.solver()  # validates the names

    def pseudo_labels(self, logits: torch.Tensor, scribble: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
        """y (N, K, h, w) for logits (N, K, h, w), scribbles (N, H, W) and colours rgb (N, 3, H, W)."""
        logits = logits.detach().float()
        size, k = tuple(logits.shape[-2:]), logits.shape[1]
        coarse = neighbourhood_grid(size, self.neighbourhood, self.dense_size)
        l0 = F.adaptive_avg_pool2d(logits, coarse)                                   # (N, K, h', w')
        sigma = F.adaptive_avg_pool2d(torch.softmax(logits, 1), coarse)              # pooled probabilities
        w = affinities(rgb, coarse, self.neighbourhood, self.sigma_rgb, self.sigma_xy)
        y = solve(l0, sigma, labels_to_grid(scribble, coarse, k), w, self.solver())
        if coarse != size:  # DN: back to the logits grid, seeds reset
            onehot, seeded = seed_onehot(labels_to_grid(scribble, size, k), k)
            y = torch.where(seeded, onehot, F.interpolate(y, size=size, mode="bilinear", align_corners=False))
        return harden(y) if self.hard else y

    def losses(self, model: torch.nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        logits, ce, seeds = _forward(model, batch)
        y = self.pseudo_labels(logits, batch["scribble"], batch["rgb"])
        log_sigma = torch.log_softmax(logits.float(), 1)
        sigma, unlabelled = log_sigma.exp(), seeds == IGNORE_INDEX
        out = {"ce": ce, "self": self.eta * self_labeling_term(sigma, y, unlabelled, self.cross_entropy, log_sigma)}
        if self.entropy > 0:
            out["entropy"] = self.entropy * entropy_term(sigma, unlabelled)
        return out                                  # (6) L_self = seeds' CE + eta H(sigma, y), summed by the loop
