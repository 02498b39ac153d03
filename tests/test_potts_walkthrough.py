"""The hand-sized losses and the toy problem of scribbleseg.potts.walkthrough, against numbers computed by hand."""
import math

import numpy as np
import pytest
import torch

from scribbleseg.constants import IGNORE_INDEX
from scribbleseg.potts.solver import SolverConfig, energy, seed_onehot, solve
from scribbleseg.potts.walkthrough import collision_frequency, seed_nll, self_labeling_loss, two_strokes, \
    weakly_supervised_loss


def one_row(p0):
    """(1, 2, 1, W) distributions (p, 1 - p) along one row."""
    p = torch.tensor(p0, dtype=torch.float64)
    return torch.stack([p, 1 - p])[None, :, None, :]


def test_seed_nll_sums_minus_log_over_the_seeds_only():
    sigma = one_row([0.9, 0.5, 0.2])
    seeds = torch.tensor([[[0, IGNORE_INDEX, 1]]])
    assert seed_nll(sigma, seeds).item() == pytest.approx(-math.log(0.9) - math.log(0.8), abs=1e-5)


def test_weakly_supervised_loss_hand_computed():
    sigma = one_row([1.0, 0.5, 0.0])                       # seed (1, 0), unlabelled (1/2, 1/2), seed (0, 1)
    seeds = torch.tensor([[[0, IGNORE_INDEX, 1]]])
    w = torch.zeros(1, 2, 1, 3, dtype=torch.float64)
    w[0, 0, 0, :2] = torch.tensor([1.0, 0.5])             # weights of the edges 0-1 and 1-2
    out = weakly_supervised_loss(sigma, seeds, w, eta=0.3, lam=2.0, relaxation="Q")
    assert out["nll"].item() == pytest.approx(0.0, abs=1e-5)
    assert out["entropy"].item() == pytest.approx(0.3 * math.log(2), abs=1e-5)   # H(1/2, 1/2) = ln 2
    assert out["potts"].item() == pytest.approx(2.0 * (1.0 * 0.25 + 0.5 * 0.25))   # P_Q = ||p - q||^2 / 2 = 1/4
    assert out["total"].item() == pytest.approx(sum(out[k].item() for k in ("nll", "entropy", "potts")))


def test_self_labeling_loss_is_nll_plus_the_solver_energy():
    sigma = one_row([0.9, 0.6, 0.3])
    y = one_row([1.0, 0.8, 0.0])
    seeds = torch.tensor([[[0, IGNORE_INDEX, 1]]])
    w = torch.zeros(1, 2, 1, 3, dtype=torch.float64)
    w[0, 0, 0, :2] = 1.0
    out = self_labeling_loss(sigma, y, seeds, w, eta=0.3, lam=6.0, relaxation="BL", cross_entropy="CCE")
    unary = -math.log(0.6 * 0.8 + 0.4 * 0.2)              # H_CCE = -ln sigma.y at the one unlabelled pixel
    potts = (1 - 0.8) + (1 - 0.2)                         # P_BL = 1 - p.q on the two edges
    assert out["unary"].item() == pytest.approx(0.3 * unary, abs=1e-5)
    assert out["potts"].item() == pytest.approx(6.0 * potts)
    _, seeded = seed_onehot(seeds, 2)
    e = energy(y, sigma, seeded, w, SolverConfig("BL", "CCE", eta=0.3, lam=6.0))
    assert (out["unary"] + out["potts"]).item() == pytest.approx(e.item())


def test_collision_frequency_estimates_the_dot_product():
    sigma, y = np.array([0.8, 0.2]), np.array([0.4, 0.6])
    assert collision_frequency(sigma, y, 200_000) == pytest.approx(0.44, abs=0.005)
    assert collision_frequency(sigma, y, 1000, seed=3) == collision_frequency(sigma, y, 1000, seed=3)


def test_two_strokes_problem_and_the_solver_follows_the_edge():
    p = two_strokes()
    assert p.rgb.shape == (1, 3, 6, 8) and p.sigma.shape == (1, 2, 6, 8)
    assert p.w[0, 0, 0, 3].item() == pytest.approx(math.exp(-2))  # across the edge: exp(-18^2 / (2 * 9^2))
    assert p.w[0, 0, 0, 0].item() == 1.0 and p.w[0, 1, 0, 0].item() == 1.0
    assert (p.seeds[0, 1:5, 1] == 0).all() and (p.seeds[0, 1:5, 6] == 1).all()
    assert torch.allclose(p.logits.exp(), p.sigma)
    y = solve(p.logits, p.sigma, p.seeds, p.w, SolverConfig("CD", "CCE", steps=200))
    assert torch.equal(y.argmax(1), p.truth)
