"""Cross-entropies between a prediction sigma and a soft (pseudo-)label y, paper Eq. (7)-(9).

Potts relaxations and soft self-labeling (CVPR 2025), Sec. 2.2. With y the target:

    standard  H_CE (y, sigma) = -sum_k y^k ln sigma^k     (7)  trains sigma to mimic y's uncertainty
    reverse   H_RCE(y, sigma) = -sum_k sigma^k ln y^k     (8)  sigma ignores an uncertain y
    collision H_CCE(y, sigma) = -ln sum_k sigma^k y^k     (9)  symmetric in (y, sigma)

plus the quadratic H_Q = ||sigma - y||^2 / 2, used only with P_Q, where pseudo-labelling has a
closed form (:mod:`scribbleseg.potts.random_walker`).

The self-labeling loss (6) writes its unary term H(sigma_i, y_i); every function here takes
(sigma, y) in that order and reduces over the class axis ``dim``. Logarithms take ``x + EPS``
(EPS = 1e-6), so one-hot arguments give large finite values, never NaN; H_CE takes log-probabilities
from ``log_softmax`` when the caller has logits (``log_sigma``), which is the exact form for training.
"""
from __future__ import annotations

import torch

EPS = 1e-6
NAMES = ("CE", "RCE", "CCE", "Q")


def check_name(name: str) -> str:
    if name not in NAMES:
        raise ValueError(f"unknown cross-entropy {name!r}; choose one of {NAMES} (paper Eq. 7-9, Q = quadratic)")
    return name


def soft_cross_entropy(sigma: torch.Tensor, y: torch.Tensor, name: str, dim: int = 1,
                       log_sigma: torch.Tensor | None = None) -> torch.Tensor:
    """H_name(sigma, y) per position.

    Args:
        sigma: predicted distributions, e.g. (N, K, H, W), summing to 1 over ``dim``.
        y: target distributions of the same shape (soft pseudo-labels or one-hot labels).
        name: "CE" (7), "RCE" (8), "CCE" (9) or "Q".
        log_sigma: optional log(sigma) from log_softmax (used by "CE" for exactness).

    Returns:
        The loss with ``dim`` reduced, e.g. (N, H, W).
    """
    check_name(name)
    if name == "CE":
        ls = log_sigma if log_sigma is not None else torch.log(sigma + EPS)
        return -(y * ls).sum(dim)                        # (7) -sum_k y^k ln sigma^k
    if name == "RCE":
        return -(sigma * torch.log(y + EPS)).sum(dim)    # (8) -sum_k sigma^k ln y^k
    if name == "CCE":
        return -torch.log((sigma * y).sum(dim) + EPS)    # (9) -ln sigma.y
    return 0.5 * ((sigma - y) ** 2).sum(dim)             # H_Q = ||sigma - y||^2 / 2
