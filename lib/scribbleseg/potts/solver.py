"""The soft pseudo-label solver of Appendix B (Potts relaxations and soft self-labeling, CVPR 2025).

For fixed predictions sigma, the pseudo-labels minimise the y-part of the self-labeling loss (6):

    E(y) = eta * sum_{i not in S} H(sigma_i, y_i) + lambda * sum_{ij in N} w_ij P(y_i, y_j),
    y in Y_Omega = {y_i in simplex, y_i = ybar_i on the seeds S}

App. B: y_i = softmax(l_i) removes the simplex constraint; l starts from the network's logits; the
seeds are reset to their labels at the start of every step (here exactly: y_i := ybar_i for i in S
before E is evaluated, so no gradient reaches l on S); "gradient descent in PyTorch", 200 steps,
lr 0.075. E is the sum over pixels written in (6) (a per-pixel mean makes lr 0.075 move nothing).

The paper does not name the optimiser. Measured against the closed-form optimum of H_Q + P_Q
(:mod:`scribbleseg.potts.random_walker`) in ``notebooks/potts/08_solver_check`` (100 validation images,
3 seeds): Adam at lr 0.075 for 200 steps reaches soft Jaccard 99.56% (the paper reports 99.2%), plain
descent at lr 0.075 96.53%, little above the 94.07% of its starting point. So the default is ``optimizer="adam"``; ``"gd"`` (plain l <- l - lr dE/dl) is the literal reading, an option.

Gradient: dE/dl is written by hand (``gradient="analytic"``, the default; :mod:`scribbleseg.potts.solver_gradient`): :class:`LogitGradient` =
:func:`energy_grad` (dE/dy: :func:`unary_grad` for H, the neighbourhood's ``*_pairwise_grad`` for P,
through :func:`~scribbleseg.potts.relaxations.gram_partials`) and the softmax's Jacobian, for every
relaxation x cross-entropy x neighbourhood; the loop runs under ``torch.no_grad`` with reused buffers,
and Adam is ``torch.optim.Adam(fused=True)``'s kernel (same update, one pass; :class:`FusedAdam`).
``gradient="autograd"`` keeps the autograd solver (``torch.autograd.grad`` of :func:`energy` per step,
the default ``torch.optim.Adam``), the reference: in float64 the two gradients agree within 1e-9 and
solves within 1e-5 (tests/test_solver_speed.py; 200 steps of CD + CCE on a 16 x 11 x 32 x 32 batch:
5e-10). In float32 they differ by rounding, which 200 Adam steps on the non-convex CD + CCE energy carry to
a few pixels (that batch, untrained net: max |dy| 6e-2, mean 2e-5, 12 of 16384 argmax flips, pseudo-label
mIoU equal to 2 decimals); the float32 autograd solve is farther from its own float64 run (4.6e-2, 8
flips) than the analytic one (1.4e-2, 4 flips). Soft Jaccard of the H_Q + P_Q check, 100 embedded val images: the same
to 4 decimals (adam / gd, 50 / 200 steps).

Cost (``benchmarks/potts_overhead.py`` setting: SmallSegNet width 16, batch 16, 128 px, K = 11, 32 x 32
logits, 2 threads of a 2-core AMD EPYC VM shared with other jobs, torch 2.14; seconds per training
step and its ratio to a pCE step, with the autograd solver interleaved in the same runs, 4 runs of
7 steps, medians and minima): 200 steps 0.29-0.45 s, 3.3-3.9x pCE (autograd 0.83-1.33 s, 9.6-11x);
50 steps 1.6-2.0x (autograd 3.3-3.9x); Q + CCE on the 16 x 16 DN grid, 50 steps, 1.5-1.9x (autograd
4.0-4.5x). The benchmark script itself, run twice: 200 / 100 / 50 steps 2.6 / 1.8 / 1.4x and
3.0 / 2.3 / 1.7x pCE. Against SGD on the DenseCRF loss, the paper's reference for its "about 3 times"
(App. B), 200 steps are 2.5-3.0x. A solver step costs about 1.1-1.3 ms (autograd about 5 ms): ~25
passes over y-sized arrays (softmax and Adam included) and ~80 small ops, so it is bound by memory
traffic and per-op dispatch, and the timings move by 10-20% with the machine's load. (An untrained net
was timed; the solver's cost does not depend on the weights.)

Shapes: logits, sigma (N, K, h, w) on the network's grid; seeds (N, h, w) long with IGNORE_INDEX.
Everything runs on detached copies: the network gets no gradient here.

Precision: the solver runs in float32 with autocast disabled, whatever autocast the training loop has
on (mixed precision, :func:`scribbleseg.train.fit_epoch`). Under fp16 autocast the Gram matrix Y Y^T of
the dense neighbourhood comes out of ``bmm`` in fp16, and the gradient of -ln(y_i.y_j + 1e-6), up to
1 / 1e-6 = 10^6, overflows fp16 (max 65504) once the pseudo-labels grow confident: inf steps, NaN y.
fp16 / bf16 inputs are cast to float32 (``.float()``); float32 and float64 pass as they are, so
outside autocast nothing changes.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from scribbleseg.constants import IGNORE_INDEX
from scribbleseg.data.grid import labels_to_grid  # noqa: F401  (re-exported: notebooks import it from here)
from scribbleseg.potts.relaxations import check_name
from scribbleseg.potts.soft_cross_entropy import check_name as check_ce
from scribbleseg.potts.soft_cross_entropy import soft_cross_entropy
from scribbleseg.potts.neighbourhood import dense_pairwise, grid_pairwise
from scribbleseg.potts.solver_gradient import FusedAdam, LogitGradient, energy_grad  # noqa: F401 (energy_grad re-exported)


@dataclasses.dataclass(frozen=True)
class SolverConfig:
    """Hyperparameters of the pseudo-label sub-problem.

    Attributes:
        relaxation: Potts relaxation P (Tables 1-2). cross_entropy: H of the unary term (Eq. 7-9, or "Q").
        eta, lam: weights eta and lambda of (6) (paper: 0.3 and 6).
        steps, lr: gradient steps on the logits l and their step size (paper: 200, 0.075).
        optimizer: "adam" (default, see above) or "gd" (plain gradient descent).
        gradient: "analytic" (default: dE/dl written by hand, :func:`energy_grad`) or "autograd" (the
            reference, kept as the fallback: same steps, torch.optim.Adam).
    """

    relaxation: str = "CD"
    cross_entropy: str = "CCE"
    eta: float = 0.3
    lam: float = 6.0
    steps: int = 200
    lr: float = 0.075
    optimizer: str = "adam"
    gradient: str = "analytic"

    def __post_init__(self):
        check_name(self.relaxation), check_ce(self.cross_entropy)
        if self.optimizer not in ("gd", "adam"):
            raise ValueError(f"SolverConfig.optimizer must be 'gd' or 'adam', got {self.optimizer!r}")
        if self.gradient not in ("analytic", "autograd"):
            raise ValueError(f"SolverConfig.gradient must be 'analytic' or 'autograd', got {self.gradient!r}")


def seed_onehot(seeds: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(one-hot of the seeds (N, K, h, w) float, seeded mask (N, 1, h, w) bool)."""
    mask = seeds != IGNORE_INDEX
    onehot = F.one_hot(seeds.masked_fill(~mask, 0), num_classes).permute(0, 3, 1, 2).float()
    return onehot, mask[:, None]


def pairwise(y: torch.Tensor, affinity: torch.Tensor, relaxation: str) -> torch.Tensor:
    """Potts sum per image: ``affinity`` (N, 2, h, w) is a grid (NN), (N, M, M) a dense kernel (DN)."""
    if affinity.dim() == 4:
        return grid_pairwise(y, affinity, relaxation)
    return dense_pairwise(y, affinity, relaxation)


def energy(y: torch.Tensor, sigma: torch.Tensor, seeded: torch.Tensor, affinity: torch.Tensor,
           cfg: SolverConfig) -> torch.Tensor:
    """E(y) per image, (N,): eta * sum_{i not in S} H(sigma_i, y_i) + lambda * sum_{ij} w_ij P(y_i, y_j)."""
    unary = soft_cross_entropy(sigma, y, cfg.cross_entropy) * (~seeded[:, 0])  # (N, h, w), 0 on S
    return cfg.eta * unary.flatten(1).sum(1) + cfg.lam * pairwise(y, affinity, cfg.relaxation)


def solve(logits: torch.Tensor, sigma: torch.Tensor, seeds: torch.Tensor, affinity: torch.Tensor,
          cfg: SolverConfig, history: list | None = None) -> torch.Tensor:
    """Soft pseudo-labels y (N, K, h, w) minimising :func:`energy` from l = ``logits``.

    Args:
        logits: (N, K, h, w) initial l (the network's logits). sigma: (N, K, h, w) predictions.
        seeds: (N, h, w) labels on the grid (IGNORE_INDEX elsewhere). affinity: grid or dense weights.
        cfg: solver hyperparameters. history: if a list, E summed over the batch is appended per step
            (before the step) and after the last one.

    Returns:
        y (float32, or float64 for float64 inputs), detached, equal to the one-hot seed labels on S.
    """
    with torch.autocast(logits.device.type, enabled=False):  # fp32, whatever autocast is on (see Precision)
        return _solve(_fp32(logits.detach()), _fp32(sigma.detach()), seeds, _fp32(affinity), cfg, history)


def _fp32(x: torch.Tensor) -> torch.Tensor:
    """x in float32 at least: fp16 / bf16 cast with ``.float()``, float32 / float64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _solve(logits: torch.Tensor, sigma: torch.Tensor, seeds: torch.Tensor, affinity: torch.Tensor,
           cfg: SolverConfig, history: list | None) -> torch.Tensor:
    if cfg.gradient == "autograd":
        return _solve_autograd(logits, sigma, seeds, affinity, cfg, history)
    onehot, seeded = seed_onehot(seeds, logits.shape[1])
    with torch.no_grad():
        l = logits.clone(memory_format=torch.contiguous_format)
        opt = FusedAdam(l, cfg.lr) if cfg.optimizer == "adam" else None
        step_grad = LogitGradient(sigma, onehot, seeded, affinity, cfg, l)
        for _ in range(cfg.steps):
            y, grad = step_grad(l)                              # y: S reset to its labels, y = softmax(l)
            if history is not None:
                history.append(float(energy(y, sigma, seeded, affinity, cfg).sum()))
            if opt is None:
                l.sub_(grad, alpha=cfg.lr)                      # l <- l - lr dE/dl
            else:
                opt.step(grad)
        y = torch.where(seeded, onehot, torch.softmax(l, 1))
        if history is not None:
            history.append(float(energy(y, sigma, seeded, affinity, cfg).sum()))
    return y


def _solve_autograd(logits: torch.Tensor, sigma: torch.Tensor, seeds: torch.Tensor, affinity: torch.Tensor,
                    cfg: SolverConfig, history: list | None) -> torch.Tensor:
    """The solver with dE/dl from autograd, ``torch.optim.Adam``: the reference of the analytic path."""
    k = logits.shape[1]
    onehot, seeded = seed_onehot(seeds, k)
    with torch.enable_grad():
        l = logits.clone().requires_grad_(True)
        opt = torch.optim.Adam([l], lr=cfg.lr) if cfg.optimizer == "adam" else None
        for _ in range(cfg.steps):
            y = torch.where(seeded, onehot, torch.softmax(l, 1))  # reset S to its labels, y = softmax(l)
            e = energy(y, sigma, seeded, affinity, cfg).sum()
            if history is not None:
                history.append(float(e.detach()))
            (grad,) = torch.autograd.grad(e, l)
            if opt is None:
                with torch.no_grad():
                    l -= cfg.lr * grad                           # l <- l - lr dE/dl
            else:
                l.grad = grad
                opt.step()
    with torch.no_grad():
        y = torch.where(seeded, onehot, torch.softmax(l, 1))
        if history is not None:
            history.append(float(energy(y, sigma, seeded, affinity, cfg).sum()))
    return y.detach()


def harden(y: torch.Tensor) -> torch.Tensor:
    """Hard pseudo-labels (App. A): the one-hot of argmax_k y^k, (N, K, h, w)."""
    return F.one_hot(y.argmax(1), y.shape[1]).permute(0, 3, 1, 2).to(y.dtype)
