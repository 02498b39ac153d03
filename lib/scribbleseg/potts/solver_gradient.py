"""The soft self-labelling solver's gradient written by hand (Zhang et al., CVPR 2025, App. B; Eq. (6)).

The solver of :mod:`scribbleseg.potts.solver` descends E(y) = eta sum_{i not in S} H(sigma_i, y_i) +
lambda P(y) (6) in the logits l of y = softmax(l). Autograd builds and walks a graph of ~80 small ops per
step; here dE/dy and the softmax's Jacobian are written out (why by hand: the step is bound by per-op
dispatch and memory traffic, about 5 ms with autograd against 1.2 ms here on the benchmark batch):

    dE/dy_i = eta [i not in S] dH(sigma_i, y_i)/dy_i + lambda dP/dy_i,   dE/dl_i = s_i * (g_i - s_i . g_i)

:func:`unary_grad` gives dH/dy of each cross-entropy, the neighbourhood's ``*_pairwise_grad`` dP/dy
(:mod:`scribbleseg.potts.neighbourhood`). Equal to autograd's within 1e-9 in float64 for every
relaxation x cross-entropy x neighbourhood (tests/test_solver_speed.py).

Shapes: y, sigma, gradients (N, K, h, w); seeded (N, 1, h, w) bool; weights (N, 1, h, w).
"""
from __future__ import annotations

import torch
from torch.optim.adam import adam as functional_adam

from scribbleseg.potts.neighbourhood import dense_pairwise_grad, grid_edge_weights, grid_pairwise_grad
from scribbleseg.potts.soft_cross_entropy import EPS as CE_EPS
from scribbleseg.potts.soft_cross_entropy import check_name as check_ce


def unary_grad(sigma: torch.Tensor, y: torch.Tensor, name: str, weight: torch.Tensor,
               out: torch.Tensor | None = None) -> torch.Tensor:
    """``weight`` * dH_name(sigma, y)/dy (N, K, h, w), into ``out``; ``weight`` (N, 1, h, w) broadcasts.

    dH/dy: CE -ln(sigma + EPS), RCE -sigma / (y + EPS), CCE -sigma / (sigma.y + EPS), Q y - sigma
    (:mod:`~scribbleseg.potts.soft_cross_entropy`, whose EPS this is).
    """
    check_ce(name)
    out = torch.empty_like(y, memory_format=torch.contiguous_format) if out is None else out
    if name == "CCE":
        denom = torch.linalg.vecdot(sigma, y, dim=1)[:, None].add_(CE_EPS)       # (N, 1, h, w)  sigma.y + EPS
        return torch.mul(sigma, torch.div(weight, denom).neg_(), out=out)
    if name == "CE":
        return torch.add(sigma, CE_EPS, out=out).log_().mul_(weight).neg_()
    if name == "RCE":
        return torch.add(y, CE_EPS, out=out).reciprocal_().mul_(sigma).mul_(weight).neg_()
    return torch.sub(y, sigma, out=out).mul_(weight)


def energy_grad(y: torch.Tensor, sigma: torch.Tensor, seeded: torch.Tensor, affinity: torch.Tensor,
                cfg, out: torch.Tensor | None = None, weight: torch.Tensor | None = None,
                pairs=None) -> torch.Tensor:
    """dE/dy of ``solver.energy(y, ...).sum()`` (cfg: a ``SolverConfig``) written by hand (N, K, h, w), into ``out`` (contiguous) if given.

    eta * dH(sigma_i, y_i)/dy_i off the seeds (:func:`unary_grad`) plus lambda times the gradient of the
    Potts sum (:func:`~scribbleseg.potts.neighbourhood.grid_pairwise_grad`, ``dense_pairwise_grad``).
    ``weight`` = eta * [i not in S] (N, 1, h, w) and ``pairs`` = :func:`prepare_pairs` (affinity) are
    computed here unless given (the solver computes them once). Equal to autograd's within 1e-5 in
    float64 for every relaxation x cross-entropy x neighbourhood (tests/test_solver_speed.py).
    """
    weight = (~seeded).to(y.dtype) * cfg.eta if weight is None else weight
    pairs = prepare_pairs(affinity) if pairs is None else pairs
    g = unary_grad(sigma, y, cfg.cross_entropy, weight, out)
    pairwise_grad = grid_pairwise_grad if affinity.dim() == 4 else dense_pairwise_grad
    return pairwise_grad(y, affinity, cfg.relaxation, cfg.lam, out=g, **pairs)


def prepare_pairs(affinity: torch.Tensor) -> dict:
    """What the Potts gradient needs of the affinities, the same at every step (keyword arguments of
    ``grid_pairwise_grad`` / ``dense_pairwise_grad``): the grid's edges on the flattened pixel index
    (:func:`~scribbleseg.potts.neighbourhood.grid_edge_weights`), or a dense kernel's symmetric part
    (W + W^T) / 2 and its row sums."""
    if affinity.dim() == 4:
        return {"edges": grid_edge_weights(affinity)}
    return {"sym": 0.5 * (affinity + affinity.mT), "degree": affinity.sum(2)}


class LogitGradient:
    """dE/dl of one solver step, by hand: y = softmax(l) off the seeds S and their one-hot labels on S
    (the reset of App. B), g = dE/dy (:func:`energy_grad`), then the softmax's Jacobian

        dE/dl_i = s_i * (g_i - s_i . g_i)  off S,   0 on S  (as autograd gives it through ``torch.where``),

    with s = softmax(l). What does not change between steps (masks, the seeds' labels, the grid's edges or
    a dense kernel's symmetric part) is computed once, and y, g live in buffers reused by every call.

    Args:
        sigma: (N, K, h, w) predictions. onehot, seeded: from :func:`seed_onehot`.
        affinity: grid or dense weights. cfg: the solver's hyperparameters. like: l, for dtype and shape.
    """

    def __init__(self, sigma: torch.Tensor, onehot: torch.Tensor, seeded: torch.Tensor, affinity: torch.Tensor,
                 cfg, like: torch.Tensor):
        self.sigma, self.seeded, self.affinity, self.cfg = sigma.contiguous(), seeded, affinity, cfg
        self.free = (~seeded).to(like.dtype)                                   # (N, 1, h, w)  1 off S
        self.weight = cfg.eta * self.free
        self.seed_labels = (onehot.to(like.dtype) * seeded).contiguous()       # one-hot on S, 0 off S
        self.pairs = prepare_pairs(affinity)
        self.y = torch.empty_like(like, memory_format=torch.contiguous_format)
        self.g = torch.empty_like(self.y)

    def __call__(self, l: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(y, dE/dl) at l; both are the buffers, overwritten by the next call."""
        s = torch.softmax(l, 1).mul_(self.free)                 # softmax off S, 0 on S
        y = torch.add(s, self.seed_labels, out=self.y)          # y = where(S, labels, softmax(l)), exactly
        g = energy_grad(y, self.sigma, self.seeded, self.affinity, self.cfg, self.g, self.weight, self.pairs)
        sg = torch.linalg.vecdot(s, g, dim=1)[:, None]           # (N, 1, h, w)  s_i . g_i
        return y, g.sub_(sg).mul_(s)                            # s * (g - s.g), 0 on S (s = 0 there)


class FusedAdam:
    """``torch.optim.Adam([param], lr, fused=True)`` (betas 0.9, 0.999, eps 1e-8) stepped with a gradient
    given by hand, through Adam's functional form ``torch.optim.adam.adam``: the same kernel and numbers
    bit for bit (tests/test_solver_speed.py), without the ``Optimizer.step`` bookkeeping (on the benchmark
    batch, 16 x 11 x 32 x 32, about 105 instead of 170 us a step). Updates ``param`` in place."""

    def __init__(self, param: torch.Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.param, self.lr, self.betas, self.eps = param, lr, betas, eps
        self.exp_avg, self.exp_avg_sq = torch.zeros_like(param), torch.zeros_like(param)
        self.state_step = torch.zeros((), dtype=torch.float32, device=param.device)  # as torch.optim.Adam(fused=True)

    def step(self, grad: torch.Tensor) -> None:
        functional_adam([self.param], [grad], [self.exp_avg], [self.exp_avg_sq], [], [self.state_step],
                        fused=True, amsgrad=False, beta1=self.betas[0], beta2=self.betas[1], lr=self.lr,
                        weight_decay=0.0, eps=self.eps, maximize=False)
