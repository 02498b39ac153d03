"""Hand-sized examples for the walkthrough of "Potts relaxations and soft self-labeling" (CVPR 2025),
``notebooks/potts/00_walkthrough``: the two losses of the paper written with its sums, and a tiny image
with two strokes for the pseudo-label solver.

    (3)  -sum_{i in S} ln sigma_i^{ybar_i}                                                 (seeds' NLL)
    (4)  L_ws(sigma)      = (3) + eta sum_{i not in S} H(sigma_i)     + lambda sum_{ij in N} w_ij P(sigma_i, sigma_j)
    (6)  L_self(sigma, y) = (3) + eta sum_{i not in S} H(sigma_i, y_i) + lambda sum_{ij in N} w_ij P(y_i, y_j)

The training methods (:mod:`scribbleseg.potts.method`) use means instead of sums so that the weights do
not depend on the image size; the solver (:func:`scribbleseg.potts.solver.energy`) keeps the sums of the
y-part of (6). Here every term is the paper's sum, per image, so that a student can check it by hand.

Shapes: sigma, y (N, K, H, W) distributions over dim 1; seeds (N, H, W) long with IGNORE_INDEX off S;
w (N, 2, H, W) grid affinities of :func:`~scribbleseg.potts.neighbourhood.grid_affinities`.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from scribbleseg.constants import IGNORE_INDEX
from scribbleseg.potts.neighbourhood import grid_affinities, grid_pairwise
from scribbleseg.potts.soft_cross_entropy import EPS, soft_cross_entropy


def seed_nll(sigma: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """Eq. (3): -sum_{i in S} ln sigma_i^{ybar_i} per image, (N,). ln takes sigma + EPS (EPS = 1e-6)."""
    seeded = seeds != IGNORE_INDEX
    picked = sigma.gather(1, seeds.masked_fill(~seeded, 0)[:, None])[:, 0]   # sigma_i^{ybar_i}, (N, H, W)
    return -(torch.log(picked + EPS) * seeded).flatten(1).sum(1)             # (3)


def weakly_supervised_loss(sigma: torch.Tensor, seeds: torch.Tensor, w: torch.Tensor, eta: float, lam: float,
                           relaxation: str) -> dict[str, torch.Tensor]:
    """Loss (4) with the paper's sums, term by term.

    Args:
        sigma: (N, K, H, W) predictions. seeds: (N, H, W) labels on S, IGNORE_INDEX elsewhere.
        w: (N, 2, H, W) grid affinities. eta, lam: the weights eta and lambda. relaxation: P (Tables 1-2).

    Returns:
        {"nll": (3), "entropy": eta sum_{i not in S} H(sigma_i), "potts": lambda sum w_ij P(sigma_i, sigma_j),
        "total": their sum}, each (N,).
    """
    six = self_labeling_loss(sigma, sigma, seeds, w, eta, lam, relaxation, "CE")  # (4) = (6) at y = sigma:
    return {"nll": six["nll"], "entropy": six["unary"],                     # H(sigma_i) = H_CE(sigma_i, sigma_i)
            "potts": six["potts"], "total": six["total"]}


def self_labeling_loss(sigma: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor, w: torch.Tensor, eta: float,
                       lam: float, relaxation: str, cross_entropy: str) -> dict[str, torch.Tensor]:
    """Loss (6) with the paper's sums, term by term.

    Args:
        sigma: (N, K, H, W) predictions. y: (N, K, H, W) pseudo-labels (one-hot ybar_i on S).
        seeds, w, eta, lam, relaxation: as in :func:`weakly_supervised_loss`.
        cross_entropy: H of the unary term, "CE" (7), "RCE" (8), "CCE" (9) or "Q".

    Returns:
        {"nll": (3), "unary": eta sum_{i not in S} H(sigma_i, y_i), "potts": lambda sum w_ij P(y_i, y_j),
        "total": their sum}, each (N,). unary + potts is the solver's energy E(y).
    """
    unlabelled = seeds == IGNORE_INDEX
    h = soft_cross_entropy(sigma, y, cross_entropy)                          # H(sigma_i, y_i), (N, H, W)
    out = {"nll": seed_nll(sigma, seeds),
           "unary": eta * (h * unlabelled).flatten(1).sum(1),               # eta sum_{i not in S} H(sigma_i, y_i)
           "potts": lam * grid_pairwise(y, w, relaxation)}                  # lambda sum w_ij P(y_i, y_j)
    out["total"] = out["nll"] + out["unary"] + out["potts"]                 # (6)
    return out


def collision_frequency(sigma: np.ndarray, y: np.ndarray, n: int, seed: int = 0) -> float:
    """Fraction of n draws C ~ sigma, T ~ y (independent) with C = T: a Monte-Carlo estimate of
    Pr(C = T) = sigma^T y, the "collision" probability behind H_CCE = -ln sigma^T y (Eq. 9).

    Args:
        sigma, y: (K,) distributions. n: number of draws. seed: numpy seed (the same numbers every run).
    """
    rng = np.random.default_rng(seed)
    c = rng.choice(len(sigma), size=n, p=sigma)
    t = rng.choice(len(y), size=n, p=y)
    return float((c == t).mean())


@dataclasses.dataclass(frozen=True)
class TwoStrokes:
    """A tiny K = 2 pseudo-labelling problem (App. B): a dark left part and a brighter right part, one
    vertical stroke of seeds in each, and a prediction sigma that prefers class 0 everywhere.

    Attributes:
        rgb: (1, 3, H, W) colours on 0-255. seeds: (1, H, W) long, class 0 / 1 on the strokes, IGNORE_INDEX
            elsewhere. sigma: (1, 2, H, W) predictions, logits: (1, 2, H, W) = ln sigma (the solver's start).
        truth: (1, H, W) the class of each pixel's part. w: (1, 2, H, W) grid affinities of rgb.
    """

    rgb: torch.Tensor
    seeds: torch.Tensor
    sigma: torch.Tensor
    logits: torch.Tensor
    truth: torch.Tensor
    w: torch.Tensor


def two_strokes(h: int = 6, w: int = 8, edge: int = 4, contrast: float = 18.0, prior: float = 0.6,
                sigma_rgb: float = 9.0) -> TwoStrokes:
    """The :class:`TwoStrokes` problem.

    Args:
        h, w: image size. edge: first column of the right part. contrast: red value of the right part (the
            left part is black), so the weight across the edge is exp(-contrast^2 / (2 sigma_rgb^2)).
        prior: sigma = (prior, 1 - prior) at every pixel. sigma_rgb: colour bandwidth of the affinities.
    """
    rgb = torch.zeros(1, 3, h, w)
    rgb[0, 0, :, edge:] = contrast
    truth = torch.zeros(1, h, w, dtype=torch.long)
    truth[0, :, edge:] = 1
    seeds = torch.full((1, h, w), IGNORE_INDEX, dtype=torch.long)
    seeds[0, 1:h - 1, 1] = 0                                                  # stroke of class 0, left part
    seeds[0, 1:h - 1, w - 2] = 1                                              # stroke of class 1, right part
    sigma = torch.tensor([prior, 1 - prior]).reshape(1, 2, 1, 1).expand(1, 2, h, w).clone()
    return TwoStrokes(rgb, seeds, sigma, sigma.log(), truth, grid_affinities(rgb, sigma_rgb))
