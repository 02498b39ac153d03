"""Potts relaxations (Tables 1-2) and soft cross-entropies (Eq. 7-9): hand-computed values, the
Fig. 2 moves, symmetry, gradients."""
import math

import pytest
import torch

from scribbleseg.potts.losses import entropy_term, potts_term, self_labeling_term
from scribbleseg.potts.relaxations import LOG_FORMS, NAMES, potts
from scribbleseg.potts.soft_cross_entropy import soft_cross_entropy

T = torch.tensor


def P(p, q, name):
    return potts(T(p, dtype=torch.float64), T(q, dtype=torch.float64), name, dim=0).item()


# p = (0.5, 0.5), q = (0.8, 0.2): p.q = 0.5, ||p||^2 = 0.5, ||q||^2 = 0.68, ||p - q||^2 = 0.18
HAND = {"BL": 0.5, "Q": 0.09, "NQ": 1 - 0.5 / math.sqrt(0.5 * 0.68), "CCE": math.log(2),
        "CD": -math.log(0.5 / math.sqrt(0.5 * 0.68)), "LQ": -math.log(1 - 0.09)}


@pytest.mark.parametrize("name", NAMES)
def test_relaxations_hand_computed(name):
    assert P([0.5, 0.5], [0.8, 0.2], name) == pytest.approx(HAND[name], abs=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_relaxations_are_potts_on_one_hot(name):
    same, diff = P([0, 1, 0], [0, 1, 0], name), P([1, 0, 0], [0, 1, 0], name)
    assert same == pytest.approx(0, abs=1e-5)
    assert diff == pytest.approx(1 if name in ("BL", "Q", "NQ") else -math.log(1e-6), rel=1e-4)
    assert math.isfinite(diff)


@pytest.mark.parametrize("log_name,plain", LOG_FORMS.items())
def test_log_forms_are_minus_log_one_minus_plain(log_name, plain):
    torch.manual_seed(0)
    p, q = torch.rand(5, 4).softmax(1).double(), torch.rand(5, 4).softmax(1).double()
    assert torch.allclose(potts(p, q, log_name), -torch.log(1 - potts(p, q, plain) + 1e-6), atol=1e-9)


def test_fig2_move_a_bilinear_barrier_quadratic_none():
    a, half, b = [1, 0, 0], [0.5, 0.5, 0], [0, 1, 0]
    assert P(half, half, "BL") == pytest.approx(0.5)  # P_BL(y', y') = 1/2 > 0 = P_BL(y, y) = P_BL(y'', y'')
    assert P(a, a, "BL") == P(b, b, "BL") == 0
    for t in torch.linspace(0, 1, 11).tolist():  # P_Q and P_NQ are 0 along the whole move
        y = [1 - t, t, 0]
        assert P(y, y, "Q") == pytest.approx(0, abs=1e-12) and P(y, y, "NQ") == pytest.approx(0, abs=1e-9)


def test_fig2_move_b_quadratic_stuck_normalised_flat():
    yi, c, mid, b = [1, 0, 0], [0, 0, 1], [0, 0.5, 0.5], [0, 1, 0]
    assert P(yi, mid, "Q") == pytest.approx(0.75)  # P_Q(y_i, y'_j) = 3/4 < 1 = P_Q(y_i, y_j) = P_Q(y_i, y''_j)
    assert P(yi, c, "Q") == P(yi, b, "Q") == pytest.approx(1)
    for t in torch.linspace(0, 1, 11).tolist():  # P_BL and P_NQ stay 1 along the move: no local minimum
        yj = [0, t, 1 - t]
        assert P(yi, yj, "BL") == pytest.approx(1) and P(yi, yj, "NQ") == pytest.approx(1)


def test_cross_entropies_hand_computed():
    s, y = T([0.8, 0.2]), T([0.5, 0.5])
    assert soft_cross_entropy(s, y, "CE", dim=0).item() == pytest.approx(-(0.5 * math.log(0.8) + 0.5 * math.log(0.2)), rel=1e-5)
    assert soft_cross_entropy(s, y, "RCE", dim=0).item() == pytest.approx(math.log(2), rel=1e-5)
    assert soft_cross_entropy(s, y, "CCE", dim=0).item() == pytest.approx(math.log(2), rel=1e-5)
    assert soft_cross_entropy(s, y, "Q", dim=0).item() == pytest.approx(0.09, rel=1e-5)


def test_collision_cross_entropy_is_symmetric_and_others_are_not():
    torch.manual_seed(1)
    a, b = torch.rand(6, 5).softmax(1), torch.rand(6, 5).softmax(1)
    assert torch.allclose(soft_cross_entropy(a, b, "CCE"), soft_cross_entropy(b, a, "CCE"))
    assert not torch.allclose(soft_cross_entropy(a, b, "CE"), soft_cross_entropy(b, a, "CE"))
    assert torch.allclose(soft_cross_entropy(a, b, "RCE"), soft_cross_entropy(b, a, "CE"), atol=1e-5)


def test_uncertain_label_supervises_nothing_under_cce_but_ce_mimics_it():
    """Fig. 3(a, c): with y = uniform, d H_CCE / d logits = 0 everywhere, H_CE pulls sigma to uniform."""
    logits = T([[2.0, -1.0, 0.5]], requires_grad=True)
    y = torch.full((1, 3), 1 / 3)
    soft_cross_entropy(logits.softmax(1), y, "CCE").sum().backward()
    assert logits.grad.abs().max() < 1e-5
    logits.grad = None
    ls = logits.log_softmax(1)
    soft_cross_entropy(ls.exp(), y, "CE", log_sigma=ls).sum().backward()
    assert logits.grad.abs().max() > 0.1


def test_one_hot_arguments_give_no_nan():
    one = torch.eye(3)
    for name in ("CE", "RCE", "CCE", "Q"):
        assert torch.isfinite(soft_cross_entropy(one, one.flip(0), name)).all()
    for name in NAMES:
        assert torch.isfinite(potts(one, one.flip(0), name)).all()


@pytest.mark.parametrize("name", NAMES)
def test_relaxation_gradcheck(name):
    torch.manual_seed(2)
    lp, lq = torch.randn(3, 4, dtype=torch.float64, requires_grad=True), torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: potts(a.softmax(1), b.softmax(1), name), (lp, lq))


@pytest.mark.parametrize("name", ["CE", "RCE", "CCE", "Q"])
def test_cross_entropy_gradcheck(name):
    torch.manual_seed(3)
    ls, ly = torch.randn(3, 4, dtype=torch.float64, requires_grad=True), torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: soft_cross_entropy(a.softmax(1), b.softmax(1), name), (ls, ly))


def test_network_terms_mean_over_unlabelled_and_zero_without_any():
    torch.manual_seed(4)
    logits = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 3, 4, 4, dtype=torch.float64).softmax(1)
    unl = torch.zeros(2, 4, 4, dtype=torch.bool)
    unl[0, 1, 2] = True
    s = logits.detach().softmax(1)
    one = self_labeling_term(s, y, unl, "CCE")
    assert one.item() == pytest.approx(-math.log(float((s[0, :, 1, 2] * y[0, :, 1, 2]).sum())), rel=1e-5)
    assert entropy_term(s, unl).item() == pytest.approx(float(-(s[0, :, 1, 2] * s[0, :, 1, 2].log()).sum()), rel=1e-5)
    none = torch.zeros_like(unl)
    for v in (self_labeling_term(s, y, none, "CCE"), entropy_term(s, none)):
        assert v.item() == 0.0
    assert torch.autograd.gradcheck(lambda l: self_labeling_term(l.softmax(1), y, unl | True, "RCE"), (logits,))
    assert torch.autograd.gradcheck(lambda l: entropy_term(l.softmax(1), unl | True), (logits,))
    w = torch.rand(2, 2, 4, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda l: potts_term(l.softmax(1), w, "CD"), (logits,))


def test_potts_term_orders_smooth_below_noisy():
    """A piecewise-constant prediction has a lower Potts term than a noisy one on uniform affinities."""
    torch.manual_seed(5)
    w = torch.ones(1, 2, 8, 8)
    smooth = torch.zeros(1, 2, 8, 8)
    smooth[:, 0, :, :4], smooth[:, 1, :, 4:] = 1, 1
    noisy = torch.nn.functional.one_hot(torch.randint(0, 2, (1, 8, 8)), 2).permute(0, 3, 1, 2).float()
    for name in NAMES:
        assert potts_term(smooth, w, name) < potts_term(noisy, w, name)
