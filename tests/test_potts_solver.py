"""Neighbourhoods, the App. B pseudo-label solver, the closed-form quadratic reference, the methods."""
import math

import numpy as np
import pytest
import torch

from scribbleseg.constants import IGNORE_INDEX
from scribbleseg.potts.relaxations import NAMES, potts
from scribbleseg.potts.neighbourhood import dense_affinities, dense_pairwise, grid_affinities, grid_pairwise
from scribbleseg.potts.random_walker import quadratic_optimum, soft_jaccard
from scribbleseg.potts.solver import SolverConfig, energy, labels_to_grid, seed_onehot, solve


def test_grid_affinity_and_pairwise_hand_computed():
    rgb = torch.zeros(1, 3, 1, 2)
    rgb[0, 0, 0, 1] = 9.0  # colour distance 9 = sigma: w = exp(-81 / 162)
    w = grid_affinities(rgb, 9.0)
    assert w[0, 0, 0, 0].item() == pytest.approx(math.exp(-0.5))
    assert w[0, 0, 0, 1] == 0 and (w[0, 1] == 0).all()  # no right neighbour, no row below
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 1, 2)  # pixel 0 class 0, pixel 1 class 1
    assert grid_pairwise(y, w, "BL").item() == pytest.approx(math.exp(-0.5))


@pytest.mark.parametrize("name", NAMES)
def test_dense_pairwise_matches_brute_force(name):
    torch.manual_seed(0)
    rgb = torch.rand(2, 3, 2, 3, dtype=torch.float64) * 255
    k = dense_affinities(rgb, 40.0, 2.0, stride=1.0)
    y = torch.randn(2, 4, 2, 3, dtype=torch.float64).softmax(1)
    flat = y.flatten(2)
    brute = torch.zeros(2, dtype=torch.float64)
    for n in range(2):
        for i in range(6):
            for j in range(i + 1, 6):
                brute[n] += k[n, i, j] * potts(flat[n, :, i], flat[n, :, j], name, dim=0)
    assert torch.allclose(dense_pairwise(y, k, name), brute)
    assert torch.autograd.gradcheck(lambda l: dense_pairwise(l.softmax(1), k, name),
                                    (torch.randn(2, 4, 2, 3, dtype=torch.float64, requires_grad=True),))


def test_dense_affinities_hand_computed_symmetric_zero_diagonal():
    rgb = torch.zeros(1, 3, 1, 2, dtype=torch.float64)
    rgb[0, 1, 0, 1] = 9.0
    k = dense_affinities(rgb, 9.0, 4.0, stride=4.0)  # cells 4 px apart, colours 9 apart
    assert k[0, 0, 1].item() == pytest.approx(math.exp(-0.5 - 16 / 32))
    assert torch.equal(k, k.transpose(1, 2)) and (k[0].diagonal() == 0).all()
    with pytest.raises(ValueError, match="neighbourhood='grid'"):
        dense_affinities(torch.zeros(1, 3, 70, 70), 9.0, 100.0)


def test_grid_pairwise_gradcheck():
    torch.manual_seed(1)
    w = torch.rand(2, 2, 3, 4, dtype=torch.float64)
    for name in NAMES:
        assert torch.autograd.gradcheck(lambda l: grid_pairwise(l.softmax(1), w, name),
                                        (torch.randn(2, 3, 3, 4, dtype=torch.float64, requires_grad=True),))


def test_labels_to_grid_majority_and_unlabelled():
    lab = torch.full((1, 4, 4), IGNORE_INDEX)
    lab[0, 0, 0], lab[0, 0, 1], lab[0, 1, 0] = 2, 2, 1  # block (0,0): two 2s, one 1 -> 2
    lab[0, 3, 3] = 0                                     # block (1,1): 0
    assert labels_to_grid(lab, (2, 2), 3).tolist() == [[[2, IGNORE_INDEX], [IGNORE_INDEX, 0]]]


def toy(n=1, k=3, h=12, w=12, seed=0):
    """Two-region image (left dark, right bright) with a seed in each region and noisy logits."""
    g = torch.Generator().manual_seed(seed)
    rgb = torch.zeros(n, 3, h, w)
    rgb[..., w // 2:] = 200.0
    rgb += torch.rand(n, 3, h, w, generator=g) * 10
    seeds = torch.full((n, h, w), IGNORE_INDEX)
    seeds[:, 2:h - 2, 2], seeds[:, 2:h - 2, w - 3] = 0, 1
    logits = torch.randn(n, k, h, w, generator=g)
    return rgb, seeds, logits


@pytest.mark.parametrize("relaxation,ce", [("CD", "CCE"), ("Q", "CCE"), ("BL", "CE"), ("LQ", "RCE")])
def test_solver_keeps_seeds_and_lowers_the_energy_monotonically(relaxation, ce):
    rgb, seeds, logits = toy()
    w = grid_affinities(rgb, 9.0)
    cfg = SolverConfig(relaxation, ce, steps=60, lr=0.05)
    hist = []
    y = solve(logits, logits.softmax(1), seeds, w, cfg, hist)
    onehot, seeded = seed_onehot(seeds, 3)
    assert torch.equal(y * seeded, onehot * seeded)  # seeds stay at their labels
    assert torch.allclose(y.sum(1), torch.ones(1, 12, 12))
    assert all(b <= a + 1e-4 * abs(a) for a, b in zip(hist, hist[1:])), hist
    assert hist[-1] < 0.5 * hist[0]
    if relaxation == "BL":  # tight and non-convex: may stop at a local minimum (Fig. 2a)
        return
    # the solution follows the image: left region -> class 0, right -> class 1
    assert (y.argmax(1)[0, :, :6] == 0).float().mean() > 0.9 and (y.argmax(1)[0, :, 6:] == 1).float().mean() > 0.9


def test_solver_reaches_the_closed_form_quadratic_optimum():
    rgb, seeds, logits = toy(n=2, h=16, w=16, seed=3)
    w = grid_affinities(rgb, 9.0)
    sigma = logits.softmax(1)
    y = solve(logits, sigma, seeds, w, SolverConfig("Q", "Q", eta=0.3, lam=6.0, steps=200, lr=0.075))
    _, seeded = seed_onehot(seeds, 3)
    for i in range(2):
        ref = quadratic_optimum(sigma[i], seeds[i], w[i], 0.3, 6.0)
        assert soft_jaccard(y[i].double(), ref, ~seeded[i, 0]) > 0.99


def test_closed_form_is_stationary_and_on_the_simplex():
    rgb, seeds, logits = toy(h=10, w=10, seed=4)
    w = grid_affinities(rgb, 9.0).double()
    sigma = logits.softmax(1).double()
    ref = quadratic_optimum(sigma[0], seeds[0], w[0], 0.3, 6.0)[None].requires_grad_(True)
    _, seeded = seed_onehot(seeds, 3)
    e = energy(ref, sigma, seeded, w, SolverConfig("Q", "Q", eta=0.3, lam=6.0)).sum()
    (g,) = torch.autograd.grad(e, ref)
    g = g - g.mean(1, keepdim=True)  # gradient within the simplex
    assert g[~seeded.expand_as(g)].abs().max() < 1e-9
    assert torch.allclose(ref.sum(1), torch.ones(1, 10, 10, dtype=torch.float64)) and (ref >= -1e-12).all()


def test_soft_jaccard_hand_computed():
    a, b = torch.tensor([[[0.5]], [[0.5]]]), torch.tensor([[[1.0]], [[0.0]]])
    assert soft_jaccard(a, b) == pytest.approx(0.5 / 1.5)
    assert soft_jaccard(b, b) == 1.0


def test_methods_return_finite_named_terms_and_train():
    from scribbleseg.potts.method import PottsGD, SelfLabeling
    from scribbleseg.models.small import SmallSegNet

    torch.manual_seed(0)
    model = SmallSegNet(3, width=4)
    rgb, seeds, _ = toy(n=2, h=32, w=32)
    batch = {"image": (rgb / 255 - 0.45) / 0.25, "rgb": rgb, "scribble": seeds}
    for m, keys in [(PottsGD(), {"ce", "potts"}), (PottsGD("Q", "grid", eta=0.1), {"ce", "potts", "entropy"}),
                    (SelfLabeling(steps=5), {"ce", "self"}), (SelfLabeling("Q", "Q", "dense", hard=True, steps=5, entropy=0.1), {"ce", "self", "entropy"})]:
        terms = m.losses(model, batch)
        assert set(terms) == keys and all(torch.isfinite(v) for v in terms.values())
        sum(terms.values()).backward()
    with pytest.raises(ValueError, match="unknown Potts relaxation"):
        SelfLabeling("XX")
    with pytest.raises(ValueError, match="unknown cross-entropy"):
        SelfLabeling(cross_entropy="KL")


def test_block_labels_keep_whole_tiles():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from scribbleseg.potts.blocks import block_labels

    @settings(max_examples=30, deadline=None)
    @given(h=st.integers(1, 40), w=st.integers(1, 40), block=st.integers(1, 16), keep=st.floats(0, 1), seed=st.integers(0, 99))
    def check(h, w, block, keep, seed):
        mask = np.random.default_rng(seed).integers(0, 5, (h, w)).astype(np.uint8)
        out = block_labels(mask, block, keep, np.random.default_rng(seed))
        labelled = out != IGNORE_INDEX
        assert (out[labelled] == mask[labelled]).all()
        tiles = [labelled[r:r + block, c:c + block] for r in range(0, h, block) for c in range(0, w, block)]
        assert all(t.all() or not t.any() for t in tiles)  # a tile is kept whole or not at all
        assert sum(t.all() for t in tiles) == round(keep * len(tiles))

    check()
    with pytest.raises(ValueError, match="keep"):
        block_labels(np.zeros((4, 4), np.uint8), 2, 1.5, np.random.default_rng(0))


def test_boundary_entropy_hand_case():
    from scribbleseg.potts.analysis import boundary_band, boundary_entropy, soft_label_entropy

    masks = np.zeros((1, 8, 8), np.uint8)
    masks[0, :, 4:] = 1
    band = boundary_band(masks, (8, 8), 0.0)
    assert band[0, :, 3].all() and band[0, :, 4].all() and band.sum() == 16  # both sides of the class boundary
    y = torch.zeros(1, 2, 8, 8)
    y[0, 0, :, :4], y[0, 1, :, 4:] = 1, 1
    y[0, :, :, 3:5] = 0.5  # uncertain exactly at the boundary
    e = boundary_entropy(y, masks, band=0.0)
    assert e["near"] == pytest.approx(math.log(2)) and e["far"] == pytest.approx(0, abs=1e-9)
    assert soft_label_entropy(y).shape == (1, 8, 8)


def test_verdict_reads_paired_differences():
    from scribbleseg.potts.study import verdict

    assert verdict([1.0, 1.2, 0.9]).endswith("better")
    assert verdict([-1.0, -1.2, -0.9]).endswith("worse")
    assert verdict([0.09, 0.08, 0.10]).endswith("tie")  # consistent but under 0.1 points
    assert verdict([2.0, -2.0, 0.1]).endswith("tie")    # large but inconsistent
