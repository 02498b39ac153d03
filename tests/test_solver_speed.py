"""The App. B solver's hand-written gradient (scribbleseg.potts.solver.energy_grad / LogitGradient) against
autograd: equal within 1e-5 in float64 for every relaxation x cross-entropy x neighbourhood, including
confident logits (~ +-20) and unlabelled seeds (IGNORE_INDEX = 255); full solves equal after 20 steps;
the soft Jaccard to the closed-form H_Q + P_Q optimum unchanged. No timing here (benchmarks/potts_overhead.py)."""
import dataclasses
import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scribbleseg.constants import IGNORE_INDEX
from scribbleseg.potts.neighbourhood import (dense_affinities, dense_pairwise, dense_pairwise_grad, grid_affinities,
                                             grid_pairwise, grid_pairwise_grad)
from scribbleseg.potts.random_walker import quadratic_optimum, soft_jaccard
from scribbleseg.potts.relaxations import NAMES, from_gram, gram_partials
from scribbleseg.potts.soft_cross_entropy import NAMES as CROSS_ENTROPIES
from test_potts_solver import toy  # two regions, a seed column in each, noisy float32 logits

from scribbleseg.potts.solver import LogitGradient, SolverConfig, energy, energy_grad, seed_onehot, solve

F64 = torch.float64
COMBOS = list(itertools.product(NAMES, CROSS_ENTROPIES, ("grid", "dense")))
TOL = 1e-5


def case(n=2, k=4, h=5, w=6, scale=1.0, unlabelled=0.7, neighbourhood="grid", seed=0):
    """Random float64 logits l, predictions sigma, seeds with IGNORE_INDEX and affinities."""
    g = torch.Generator().manual_seed(seed)
    l = torch.randn(n, k, h, w, generator=g, dtype=F64) * scale
    sigma = (torch.randn(n, k, h, w, generator=g, dtype=F64) * scale).softmax(1)
    seeds = torch.randint(0, k, (n, h, w), generator=g)
    seeds[torch.rand(n, h, w, generator=g) < unlabelled] = IGNORE_INDEX
    rgb = torch.rand(n, 3, h, w, generator=g, dtype=F64) * 255
    aff = grid_affinities(rgb, 40.0) if neighbourhood == "grid" else dense_affinities(rgb, 40.0, 3.0)
    return l, sigma, seeds, aff


def autograd_logit_grad(l, sigma, seeds, aff, cfg):
    """dE/dl through torch.where(S, labels, softmax(l)), as the solver's autograd path takes it."""
    onehot, seeded = seed_onehot(seeds, l.shape[1])
    l = l.clone().requires_grad_(True)
    e = energy(torch.where(seeded, onehot.to(l.dtype), l.softmax(1)), sigma, seeded, aff, cfg).sum()
    return torch.autograd.grad(e, l)[0]


def analytic_logit_grad(l, sigma, seeds, aff, cfg):
    onehot, seeded = seed_onehot(seeds, l.shape[1])
    return LogitGradient(sigma, onehot, seeded, aff, cfg, l)(l)[1].clone()


@pytest.mark.parametrize("scale", [1.0, 20.0], ids=["logits~1", "logits~20"])
@pytest.mark.parametrize("relaxation,cross_entropy,neighbourhood", COMBOS)
def test_logit_gradient_equals_autograd(relaxation, cross_entropy, neighbourhood, scale):
    l, sigma, seeds, aff = case(scale=scale, neighbourhood=neighbourhood)
    cfg = SolverConfig(relaxation, cross_entropy)
    ref = autograd_logit_grad(l, sigma, seeds, aff, cfg)
    got = analytic_logit_grad(l, sigma, seeds, aff, cfg)
    assert (got - ref).abs().max() <= TOL
    _, seeded = seed_onehot(seeds, l.shape[1])
    assert (got * seeded == 0).all()  # no gradient reaches l on the seeds


@pytest.mark.parametrize("scale", [1.0, 20.0], ids=["logits~1", "logits~20"])
@pytest.mark.parametrize("relaxation,cross_entropy,neighbourhood", COMBOS)
def test_energy_gradient_in_y_equals_autograd(relaxation, cross_entropy, neighbourhood, scale):
    """dE/dy itself (seeds included: there only the Potts term depends on y), up to 1e6 for confident y."""
    l, sigma, seeds, aff = case(scale=scale, neighbourhood=neighbourhood, seed=1)
    onehot, seeded = seed_onehot(seeds, l.shape[1])
    y = torch.where(seeded, onehot.to(F64), l.softmax(1)).requires_grad_(True)
    cfg = SolverConfig(relaxation, cross_entropy)
    (ref,) = torch.autograd.grad(energy(y, sigma, seeded, aff, cfg).sum(), y)
    got = energy_grad(y.detach(), sigma, seeded, aff, cfg)
    assert (got - ref).abs().max() <= TOL


@settings(max_examples=40, deadline=None)
@given(combo=st.sampled_from(COMBOS), k=st.integers(2, 5), h=st.integers(1, 5), w=st.integers(1, 5),
       scale=st.sampled_from([0.1, 1.0, 5.0, 20.0]), unlabelled=st.floats(0.0, 1.0), seed=st.integers(0, 999))
def test_logit_gradient_equals_autograd_on_random_shapes(combo, k, h, w, scale, unlabelled, seed):
    """Single rows and columns (no edges one way), all or no pixels seeded, any K."""
    relaxation, cross_entropy, neighbourhood = combo
    l, sigma, seeds, aff = case(1, k, h, w, scale, unlabelled, neighbourhood, seed)
    cfg = SolverConfig(relaxation, cross_entropy, eta=0.3, lam=6.0)
    assert (analytic_logit_grad(l, sigma, seeds, aff, cfg) - autograd_logit_grad(l, sigma, seeds, aff, cfg)).abs().max() <= TOL


@pytest.mark.parametrize("name", NAMES)
def test_pairwise_gradients_on_affinities_not_from_the_builders(name):
    """A grid w with non-zero last column / row (which grid_pairwise ignores) and a non-symmetric dense kernel
    with a diagonal: the hand-written gradients still equal autograd's."""
    g = torch.Generator().manual_seed(2)
    y = torch.randn(2, 3, 4, 5, generator=g, dtype=F64).softmax(1).requires_grad_(True)
    w = torch.rand(2, 2, 4, 5, generator=g, dtype=F64)
    kernel = torch.rand(2, 20, 20, generator=g, dtype=F64)
    for fn, grad_fn, aff in ((grid_pairwise, grid_pairwise_grad, w), (dense_pairwise, dense_pairwise_grad, kernel)):
        (ref,) = torch.autograd.grad(3.0 * fn(y, aff, name).sum(), y)
        assert (grad_fn(y.detach(), aff, name, scale=3.0) - ref).abs().max() <= TOL
        out = torch.ones_like(ref)
        assert grad_fn(y.detach(), aff, name, scale=3.0, out=out) is out and torch.allclose(out - 1, ref, atol=TOL)


@pytest.mark.parametrize("name", NAMES)
def test_gram_partials_equal_autograd_including_one_hot_pairs(name):
    p = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.2, 0.3, 0.5]], dtype=F64)
    q = torch.tensor([[0.8, 0.2, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.6, 0.1, 0.3]], dtype=F64)
    args = [(p * q).sum(1), (p * p).sum(1), (q * q).sum(1)]  # row 1: different one-hots (LQ's clamp at 0)
    leaves = [a.clone().requires_grad_(True) for a in args]
    ref = torch.autograd.grad(from_gram(*leaves, name).sum(), leaves, allow_unused=True)
    for got, r in zip(gram_partials(*args, name), ref):
        r = torch.zeros_like(args[0]) if r is None else r
        got = torch.zeros_like(args[0]) if got is None else torch.as_tensor(got, dtype=F64).expand_as(r)
        assert torch.allclose(got, r, rtol=1e-12, atol=1e-9), (name, got, r)


@pytest.mark.parametrize("optimizer", ["adam", "gd"])
@pytest.mark.parametrize("relaxation,cross_entropy,neighbourhood", COMBOS)
def test_solve_with_the_analytic_gradient_equals_the_autograd_solve(relaxation, cross_entropy, neighbourhood, optimizer):
    l, sigma, seeds, aff = case(h=6, w=7, scale=3.0, neighbourhood=neighbourhood, seed=3)
    cfg = SolverConfig(relaxation, cross_entropy, steps=20, optimizer=optimizer)
    assert cfg.gradient == "analytic"  # the default
    h_ref, h_got = [], []
    ref = solve(l, sigma, seeds, aff, dataclasses.replace(cfg, gradient="autograd"), h_ref)
    got = solve(l, sigma, seeds, aff, cfg, h_got)
    assert got.dtype == F64 and not got.requires_grad
    assert (got - ref).abs().max() <= TOL
    assert len(h_got) == len(h_ref) == 21
    assert all(abs(a - b) <= TOL * max(1.0, abs(a)) for a, b in zip(h_ref, h_got))


def test_soft_jaccard_to_the_closed_form_is_unchanged():
    """H_Q + P_Q (the App. B check, notebooks/potts/08_solver_check): in float32 with the paper's 200 Adam steps
    at lr 0.075, the analytic solve reaches the same soft Jaccard to the exact optimum as the autograd one."""
    rgb, seeds, logits = toy(n=2, h=16, w=16, seed=3)
    w = grid_affinities(rgb, 9.0)
    sigma = logits.softmax(1)
    cfg = SolverConfig("Q", "Q", eta=0.3, lam=6.0, steps=200, lr=0.075)
    y = solve(logits, sigma, seeds, w, cfg)
    y_ref = solve(logits, sigma, seeds, w, dataclasses.replace(cfg, gradient="autograd"))
    assert y.dtype == torch.float32
    _, seeded = seed_onehot(seeds, 3)
    for i in range(2):
        opt = quadratic_optimum(sigma[i], seeds[i], w[i], 0.3, 6.0)
        jac, jac_ref = (soft_jaccard(v[i].double(), opt, ~seeded[i, 0]) for v in (y, y_ref))
        assert jac > 0.99 and abs(jac - jac_ref) < 1e-4


@pytest.mark.parametrize("neighbourhood", ["grid", "dense"])
def test_default_float32_solve_stays_close_to_autograd(neighbourhood):
    """The defaults (CD + CCE, 200 Adam steps) in float32: same pseudo-labels up to float noise."""
    rgb, seeds, logits = toy(n=2, h=12, w=12, seed=5)
    aff = grid_affinities(rgb, 9.0) if neighbourhood == "grid" else dense_affinities(rgb, 9.0, 100.0, 4.0)
    cfg = SolverConfig()
    y = solve(logits, logits.softmax(1), seeds, aff, cfg)
    y_ref = solve(logits, logits.softmax(1), seeds, aff, dataclasses.replace(cfg, gradient="autograd"))
    assert y.dtype == torch.float32
    assert (y - y_ref).abs().max() < 1e-3 and torch.equal(y.argmax(1), y_ref.argmax(1))
    onehot, seeded = seed_onehot(seeds, 3)
    assert torch.equal(y * seeded, onehot * seeded)


def test_gradient_option_is_validated():
    with pytest.raises(ValueError, match="gradient"):
        SolverConfig(gradient="numeric")


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_fused_adam_is_torch_adam(dtype):
    """FusedAdam = torch.optim.Adam(fused=True) bit for bit, and the default torch.optim.Adam up to rounding."""
    from scribbleseg.potts.solver import FusedAdam

    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(3, 4, 5, generator=g, dtype=dtype)
    grads = [torch.randn(3, 4, 5, generator=g, dtype=dtype) * 10.0 ** (i % 7 - 4) for i in range(30)]
    mine = x0.clone()
    opt = FusedAdam(mine, 0.075)
    refs = {}
    for fused in (True, False):
        p = x0.clone().requires_grad_(True)
        ref = torch.optim.Adam([p], lr=0.075, fused=fused)
        for grad in grads:
            p.grad = grad
            ref.step()
        refs[fused] = p.detach()
    for grad in grads:
        opt.step(grad)
    assert torch.equal(mine, refs[True])
    assert torch.allclose(mine, refs[False], rtol=0, atol=1e-5)
