"""The dense LAM of BLPSeg (Sec. III-B, Eq. 3-5) as one fused attention (issue 15, blpseg/lam_attention.py).

Checked against (a) a 1 x 2 grid computed by hand, (b) the expanded logits q_j . k_i against Eq. (5) as written,
(c) the materialised ``dense_lam`` it replaces in ``LAM(impl="dense")``: float64 values and gradients (x, both
feature sets, sigma; with and without a source mask), float32 agreement, (d) gradcheck in float64, (e) structure:
no (M, M) tensor in the forward or the backward, autocast switched off inside. No timings (see lam.py's docstring).
"""
from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from scribbleseg.blpseg import lam
from scribbleseg.blpseg.lam import LAM, attention_lam, attention_queries_keys, dense_lam

VARIANTS = [("low", "distance"), ("distance",), ("low",), ("high", "distance"), ("low", "high", "distance")]


def _inputs(n, c, d, h, w, dtype=torch.float64, seed=0, scale=0.5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g, dtype=dtype)
    fl = torch.randn(n, d, h, w, generator=g, dtype=dtype) * scale
    fh = torch.randn(n, d + 1, h, w, generator=g, dtype=dtype) * scale       # another D: concatenated, not added
    mask = torch.rand(n, h, w, generator=g) > 0.4
    return x, fl, fh, mask


# (a) by hand ------------------------------------------------------------------------------------------------

def test_two_cells_by_hand():
    """Grid 1 x 2, f = (1, 0), sigma = 1, X_in = (2, 4): target 0 sees the logits (1 - 0, 0 - 1/2), target 1
    (0 - 1/2, 0 - 0); X_out is the softmax-weighted mean of X_in."""
    x = torch.tensor([[[[2.0, 4.0]]]], dtype=torch.float64)
    f = torch.tensor([[[[1.0, 0.0]]]], dtype=torch.float64)
    e = math.exp
    out0 = (2 * e(1) + 4 * e(-0.5)) / (e(1) + e(-0.5))
    out1 = (2 * e(-0.5) + 4 * e(0)) / (e(-0.5) + e(0))
    got = attention_lam(x, 1.0, f)
    assert got.shape == (1, 1, 1, 2)
    assert got[0, 0, 0].tolist() == pytest.approx([out0, out1], abs=1e-14)
    only = torch.tensor([[[True, False]]])                                    # only cell 0 may be a source
    assert attention_lam(x, 1.0, f, source_mask=only)[0, 0, 0].tolist() == pytest.approx([2.0, 2.0], abs=1e-14)


# (b) the expansion --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("similarity", VARIANTS)
def test_expanded_logits_are_equation_5_up_to_a_per_target_constant(similarity):
    """q_j . k_i = f_i . f_j - ||s_i - s_j||^2 / (2 sigma^2) + |s_j - c|^2 / (2 sigma^2), on a 5 x 7 grid."""
    x, fl, fh, _ = _inputs(2, 3, 4, 5, 7)
    sigma = 1.3
    q, k = attention_queries_keys(sigma, fl, fh, similarity, (2, 5, 7), x)
    got = q @ k.transpose(1, 2)                                               # (N, M_j, M_i)
    want = torch.zeros(2, 35, 35, dtype=torch.float64)
    for f, key in ((fl, "low"), (fh, "high")):
        if key in similarity:
            want += f.flatten(2).transpose(1, 2) @ f.flatten(2)               # f_j . f_i
    if "distance" in similarity:
        want += lam.distance_logits(5, 7, sigma, x)                           # symmetric: [j, i] = [i, j]
        s = lam.centred_positions(5, 7, dtype=torch.float64)
        want += (s.square().sum(1) / (2 * sigma ** 2))[:, None]               # + |s_j - c|^2 / (2 sigma^2)
    assert (got - want).abs().max().item() < 1e-12


def test_centred_positions():
    s = lam.centred_positions(2, 3, dtype=torch.float64)
    assert s.tolist() == [[-0.5, -1.0], [-0.5, 0.0], [-0.5, 1.0], [0.5, -1.0], [0.5, 0.0], [0.5, 1.0]]


# (c) equal to the materialised dense form ---------------------------------------------------------------------

@pytest.mark.parametrize("similarity", VARIANTS)
@pytest.mark.parametrize("masked", [False, True], ids=["all", "source_mask"])
def test_equals_materialised_dense_values_and_gradients(similarity, masked):
    x, fl, fh, mask = _inputs(3, 4, 5, 6, 7, seed=1)
    mask[2] = False                                                           # an image without any source: 0
    m = mask if masked else None
    sigma = torch.tensor(1.7, dtype=torch.float64)
    args = [t.requires_grad_() for t in (x, fl, fh, sigma)]
    new = attention_lam(x, sigma, fl, fh, similarity, m)
    old = dense_lam(x, sigma, fl, fh, similarity, m)
    assert new.dtype == torch.float64 and new.shape == x.shape
    assert (new - old).abs().max().item() < 1e-12
    if masked:
        assert (new[2] == 0).all()
    w = torch.randn_like(new)
    g_new = torch.autograd.grad((new * w).sum(), args, allow_unused=True)
    g_old = torch.autograd.grad((old * w).sum(), args, allow_unused=True)
    for name, a, b in zip(("x", "f_low", "f_high", "sigma"), g_new, g_old):
        if b is None:                                                         # not in `similarity`
            assert a is None or (a == 0).all(), name
        else:
            assert torch.isfinite(a).all() and (a - b).abs().max().item() < 1e-10, name


def test_lam_module_dense_is_the_attention_and_learns_sigma_alike():
    """LAM(impl="dense") runs the attention; its output and its log-sigma gradient are those of dense_lam."""
    x, fl, _, mask = _inputs(2, 3, 4, 5, 6, seed=2)
    module = LAM(sigma=1.4, learn_sigma=True).double()
    for m in (None, mask):
        out = module(x, fl, source_mask=m)
        (g_new,) = torch.autograd.grad(out.square().sum(), module.log_sigma)
        ref = dense_lam(x, module.sigma, fl, source_mask=m)
        (g_old,) = torch.autograd.grad(ref.square().sum(), module.log_sigma)
        assert (out - ref).abs().max().item() < 1e-12 and abs(g_new.item() - g_old.item()) < 1e-10 and g_new != 0


def test_float32_agrees_with_float64():
    """The expansion carries |s_j - c|^2 / (2 sigma^2) in every logit (here up to 2 * 7.5^2 / 2 = 56): float32
    rounding is larger than the materialised form's, still far below 1e-4 on a 16 x 16 grid at sigma = 1."""
    x, fl, fh, mask = _inputs(2, 11, 8, 16, 16, seed=3, scale=0.3)
    x, fl, fh = (t.float().double() for t in (x, fl, fh))                     # the same float32 inputs
    sim = ("low", "high", "distance")
    for m in (None, mask):
        ref = dense_lam(x, 1.0, fl, fh, sim, m)
        got = attention_lam(x.float(), 1.0, fl.float(), fh.float(), sim, m)
        assert got.dtype == torch.float32 and (got.double() - ref).abs().max().item() < 1e-5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_input_is_computed_in_float32(dtype):
    x, fl, _, _ = _inputs(1, 3, 4, 8, 9, seed=4)
    ref = attention_lam(x.to(dtype).float(), 1.5, fl.to(dtype).float())      # float32 on the rounded inputs
    got = attention_lam(x.to(dtype), 1.5, fl.to(dtype))
    assert got.dtype == dtype and torch.equal(got, ref.to(dtype))


def test_autocast_is_switched_off_inside():
    x, fl, _, _ = _inputs(1, 3, 4, 8, 9, torch.float32, seed=5)
    ref = attention_lam(x, 1.5, fl)
    with torch.autocast("cpu", dtype=torch.float16):
        got = attention_lam(x, 1.5, fl)
    assert got.dtype == torch.float32 and torch.equal(got, ref)


# (d) gradcheck ----------------------------------------------------------------------------------------------

def test_gradcheck():
    x, fl, fh, mask = _inputs(2, 2, 3, 3, 4, seed=6)
    mask[1] = False
    sigma = torch.tensor(1.2, dtype=torch.float64, requires_grad=True)
    x, fl, fh = (t.requires_grad_() for t in (x, fl, fh))
    sim = ("low", "high", "distance")
    assert torch.autograd.gradcheck(lambda a, b, c, s: attention_lam(a, s, b, c, sim), (x, fl, fh, sigma))
    assert torch.autograd.gradcheck(lambda a, b, s: attention_lam(a, s, b, source_mask=mask), (x, fl, sigma))
    assert torch.autograd.gradcheck(lambda a, s: attention_lam(a, s, similarity=("distance",)), (x, sigma))


# (e) structure: no (M, M) tensor ---------------------------------------------------------------------------------

class _Largest(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("masked", [False, True], ids=["all", "source_mask"])
def test_no_matrix_of_all_pairs_forward_or_backward(masked):
    """The fused kernel runs (no fallback to the math form, which would build N M^2 logits): on a 24 x 24 grid
    (M = 576) with batch 2 the largest tensor of the forward and the backward is far below N M^2."""
    x, fl, _, mask = _inputs(2, 3, 4, 24, 24, torch.float32, seed=7)
    x.requires_grad_(), fl.requires_grad_()
    with _Largest() as rec:
        attention_lam(x, 2.0, fl, source_mask=mask if masked else None).sum().backward()
    assert rec.largest < 2 * 576 * 576 / 20, rec.largest
