"""Local LAM of BLPSeg (Sec. III-B, Eq. 3-5) in its blocked form (issue 15): tiles of targets against their halo,
batched matmuls, no Python loop over window offsets.

Checked against (a) the dense LAM (float32, window covering the Gaussian), (b) the previous shift-and-accumulate
``local_lam``, copied below from ``git show HEAD:lib/scribbleseg/blpseg/lam.py`` as the reference (float64,
values and gradients), (c) gradcheck. No timings here (see the module docstring of ``lam.py`` for those).
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from scribbleseg.blpseg import lam, lam_local
from scribbleseg.blpseg.lam import LAM, dense_lam, local_lam

VARIANTS = [("low", "distance"), ("distance",), ("high", "distance"), ("low", "high", "distance")]


def _old_local_lam(x: torch.Tensor, sigma: float, f_low=None, f_high=None, similarity=("low", "distance"),
                   source_mask: torch.Tensor | None = None, truncate: float = 4.5,
                   radius: int | None = None) -> torch.Tensor:
    """The previous ``local_lam`` (shift-and-accumulate over the window offsets), verbatim but for the name."""
    similarity = lam._check(similarity)
    if radius is None:
        if "distance" not in similarity:
            raise ValueError("local_lam without the distance term needs an explicit radius")
        radius = int(math.ceil(truncate * float(sigma)))
    n, c, h, w = x.shape
    feats = [f for f, k in ((f_low, "low"), (f_high, "high")) if k in similarity]
    mask = torch.ones(n, h, w, dtype=torch.bool, device=x.device) if source_mask is None else source_mask
    r = radius
    pad = lambda t, v=0.0: F.pad(t, (r, r, r, r), value=v)                    # noqa: E731
    xp, mp, fps = pad(x), pad(mask.float()[:, None])[:, 0] > 0.5, [pad(f) for f in feats]

    def logits(dy, dx):
        """Softmax logit of the source at offset (dy, dx) for every target j, (N, h, w), -inf if none."""
        sl = (slice(None), slice(None), slice(r + dy, r + dy + h), slice(r + dx, r + dx + w))
        val = x.new_zeros(n, h, w)
        for f, fp in zip(feats, fps):
            val = val + (f * fp[sl]).sum(1)                                   # f_i . f_j
        if "distance" in similarity:
            val = val - (dy * dy + dx * dx) / (2 * float(sigma) ** 2)
        return val.masked_fill(~mp[:, r + dy:r + dy + h, r + dx:r + dx + w], float("-inf")), sl

    offsets = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]
    top = torch.full((n, h, w), float("-inf"), dtype=x.dtype, device=x.device)
    for dy, dx in offsets:
        top = torch.maximum(top, logits(dy, dx)[0])
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    num, den = torch.zeros_like(x), x.new_zeros(n, h, w)
    for dy, dx in offsets:
        val, sl = logits(dy, dx)
        e = torch.exp(val - top)                                               # 0 for padding / masked sources
        num = num + xp[sl] * e[:, None]
        den = den + e
    return num / den.clamp_min(1e-30)[:, None]


def _inputs(n, c, d, h, w, dtype=torch.float64, seed=0, mask_p=0.3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g, dtype=dtype)
    fl = torch.randn(n, d, h, w, generator=g, dtype=dtype) * 0.5
    fh = torch.randn(n, d, h, w, generator=g, dtype=dtype) * 0.5
    mask = torch.rand(n, h, w, generator=g) > mask_p
    return x, fl, fh, mask


@pytest.fixture(params=[2, 3, 8], ids=lambda t: f"tile{t}")
def tile(request, monkeypatch):
    """Tile sides: 2 and 3 force the halo form (several tiles, ragged last tile) on small grids, 8 the default."""
    monkeypatch.setattr(lam_local, "_TILE", request.param)                  # read by lam_local._axis_tiles
    return request.param


# (a) equal to the dense LAM where the window covers the Gaussian --------------------------------------------------

@pytest.mark.parametrize("similarity", VARIANTS)
@pytest.mark.parametrize("masked", [False, True], ids=["all", "source_mask"])
def test_local_equals_dense_float32(similarity, masked):
    x, fl, fh, mask = _inputs(2, 5, 4, 29, 35, torch.float32, seed=1)
    m = mask if masked else None
    # sigma = 1.5: r = ceil(4.5 sigma) = 7, a 15 x 15 window in a 29 x 35 grid (4 x 5 tiles of 8, ragged)
    assert lam._axis_tiles(29, 7)[1] > 1 and lam._axis_tiles(35, 7)[1] > 1
    dense = dense_lam(x, 1.5, fl, fh, similarity, m)
    local = local_lam(x, 1.5, fl, fh, similarity, m)
    assert local.dtype == torch.float32 and local.shape == x.shape
    assert (dense - local).abs().max().item() < 1e-4


def test_lam_module_local_equals_dense():
    x, fl, _, mask = _inputs(2, 3, 4, 20, 20, torch.float32, seed=2)
    dense, local = LAM(sigma=1.2, impl="dense"), LAM(sigma=1.2, impl="local")
    assert (dense(x, fl, source_mask=mask) - local(x, fl, source_mask=mask)).abs().max().item() < 1e-4


def test_window_covering_the_grid_is_the_dense_form_also_without_any_source(tile):
    """radius >= grid: every source is in the window, so local == dense to rounding, for values and gradients;
    an image without any source (``source_mask`` all False, as ``region`` can give) is 0 in both, no NaN."""
    x, fl, fh, mask = _inputs(2, 3, 4, 6, 7, seed=3)
    mask[1] = False
    args = [t.requires_grad_() for t in (x, fl, fh)]
    sim = ("low", "high", "distance")
    dense = dense_lam(x, 0.9, fl, fh, sim, mask)
    local = local_lam(x, 0.9, fl, fh, sim, mask, radius=10)
    assert (dense - local).abs().max().item() < 1e-12 and (local[1] == 0).all()
    w = torch.randn_like(dense)
    gd = torch.autograd.grad((dense * w).sum(), args)
    gl = torch.autograd.grad((local * w).sum(), args)
    for a, b in zip(gd, gl):
        assert torch.isfinite(b).all() and (a - b).abs().max().item() < 1e-12


# (b) equal to the previous shift-and-accumulate local_lam (float64, values and gradients) ----------------------

CASES = {
    "default": dict(sigma=1.0, similarity=("low", "distance")),
    "distance-only": dict(sigma=0.8, similarity=("distance",)),
    "high": dict(sigma=1.1, similarity=("high", "distance")),
    "low-high": dict(sigma=0.9, similarity=("low", "high", "distance")),
    "truncate-2": dict(sigma=1.3, similarity=("low", "distance"), truncate=2.0),
    "radius-1": dict(sigma=2.0, similarity=("low", "distance"), radius=1),
    "hard-cutoff": dict(sigma=1.0, similarity=("low",), radius=2),
    "hard-cutoff-high": dict(sigma=1.0, similarity=("low", "high"), radius=3),
    "radius-beyond-grid": dict(sigma=1.0, similarity=("low", "distance"), radius=12),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("masked", [False, True], ids=["all", "source_mask"])
def test_equals_old_local_values_and_gradients(case, masked, tile):
    kw = dict(CASES[case])
    sigma, similarity = kw.pop("sigma"), kw.pop("similarity")
    x, fl, fh, mask = _inputs(2, 3, 4, 11, 13, seed=4)
    m = mask if masked else None
    args = [t.requires_grad_() for t in (x, fl, fh)]
    new = local_lam(x, sigma, fl, fh, similarity, m, **kw)
    old = _old_local_lam(x, sigma, fl, fh, similarity, m, **kw)
    assert new.dtype == torch.float64 and (new - old).abs().max().item() < 1e-5
    w = torch.randn_like(new)
    g_new = torch.autograd.grad((new * w).sum(), args, allow_unused=True)
    g_old = torch.autograd.grad((old * w).sum(), args, allow_unused=True)
    for name, a, b in zip(("x", "f_low", "f_high"), g_new, g_old):
        if b is None:                                                         # feature not in `similarity`
            assert a is None or (a == 0).all(), name
        else:
            assert (a - b).abs().max().item() < 1e-5, name


@pytest.mark.parametrize("h, w, radius", [(1, 9, 2), (9, 1, 3), (1, 1, 2), (7, 10, 0), (17, 3, 4)])
def test_thin_grids_and_radius_zero_equal_old(h, w, radius, tile):
    x, fl, _, mask = _inputs(2, 3, 4, h, w, seed=11)
    for m in (None, mask):
        new = local_lam(x, 1.0, fl, source_mask=m, radius=radius)
        assert (new - _old_local_lam(x, 1.0, fl, source_mask=m, radius=radius)).abs().max().item() < 1e-12


def test_sparse_source_mask_and_empty_windows_equal_old(tile):
    """A scribble-like ``region`` mask: many targets have no source within the window; they are 0 in both forms,
    with finite gradients that match."""
    x, fl, _, _ = _inputs(1, 3, 4, 12, 11, seed=5)
    mask = torch.zeros(1, 12, 11, dtype=torch.bool)
    mask[0, 2, 1:4] = True
    mask[0, 9, 8] = True
    args = [t.requires_grad_() for t in (x, fl)]
    new = local_lam(x, 0.6, fl, source_mask=mask)                              # r = 3
    old = _old_local_lam(x, 0.6, fl, source_mask=mask)
    assert (new[0, :, 6:, :3] == 0).all()                                     # beyond reach of every source
    assert (new - old).abs().max().item() < 1e-12
    w = torch.randn_like(new)
    for a, b in zip(torch.autograd.grad((new * w).sum(), args), torch.autograd.grad((old * w).sum(), args)):
        assert torch.isfinite(a).all() and (a - b).abs().max().item() < 1e-12


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_dtype_follows_the_input(dtype):
    x, fl, _, mask = _inputs(1, 3, 4, 10, 12, seed=6)
    new = local_lam(x.to(dtype), 0.9, fl.to(dtype), source_mask=mask)
    old = _old_local_lam(x, 0.9, fl, source_mask=mask)
    tol = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}[dtype]
    assert new.dtype == dtype and (new.double() - old).abs().max().item() < tol


# (c) gradcheck, including a tensor sigma ----------------------------------------------------------------------

def test_gradcheck_tiny(tile):
    x, fl, fh, mask = _inputs(1, 2, 3, 5, 6, seed=7)
    x, fl, fh = (t.requires_grad_() for t in (x, fl, fh))
    sigma = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)       # r = ceil(4.5 * 0.7) = 4
    sim = ("low", "high", "distance")
    assert torch.autograd.gradcheck(lambda a, b, c, s: local_lam(a, s, b, c, sim, mask), (x, fl, fh, sigma))
    assert torch.autograd.gradcheck(lambda a, b: local_lam(a, 1.0, b, radius=1), (x, fl))


def test_tensor_sigma_gradient_equals_dense():
    """The distance bias is differentiable in a tensor sigma; with the window covering the grid it is the dense
    form's gradient (the LAM module still keeps a learnable sigma on impl='dense')."""
    x, fl, _, mask = _inputs(1, 2, 3, 6, 5, seed=8)
    sd = torch.tensor(1.1, dtype=torch.float64, requires_grad=True)
    sl = torch.tensor(1.1, dtype=torch.float64, requires_grad=True)
    w = torch.randn(1, 2, 6, 5, dtype=torch.float64)
    (gd,) = torch.autograd.grad((dense_lam(x, sd, fl, source_mask=mask) * w).sum(), sd)
    (gl,) = torch.autograd.grad((local_lam(x, sl, fl, source_mask=mask, radius=6) * w).sum(), sl)
    assert abs(gd.item() - gl.item()) < 1e-12 and gd.item() != 0


# structure: no loop over offsets, memory below the dense form -------------------------------------------------

class _CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops, self.largest = 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops += 1
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_op_count_does_not_grow_with_the_window():
    """The old form ran O((2r + 1)^2) ops; this one a fixed number whatever the radius, and its largest tensor is
    the (tiles, T^2, S^2) logits (no im2col of the features, D (2r + 1)^2 M per image)."""
    x, fl, _, _ = _inputs(2, 3, 4, 40, 40, torch.float32, seed=9)
    counts = []
    for r in (2, 5, 9):
        with _CountOps() as rec:
            local_lam(x, 1.0, fl, radius=r)
        counts.append(rec.ops)
        t, k, _, s = lam._axis_tiles(40, r)
        assert rec.largest == 2 * (k * k) * (t * t) * (s * s)                # N tiles T^2 S^2
    assert len(set(counts)) == 1, counts


def test_saved_for_backward_is_the_softmax_and_below_the_dense_form():
    x, fl, _, mask = _inputs(2, 3, 4, 32, 32, torch.float32, seed=10)
    x.requires_grad_()

    def saved(fn):
        seen = {}

        def pack(t):
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn(x, 0.6, fl, source_mask=mask)                                  # r = 3
        return sum(seen.values())

    t, k, _, s = lam._axis_tiles(32, 3)                                       # 4 tiles of 8, halo 14
    softmax_bytes = 2 * (k * k) * (t * t) * (s * s) * 4                       # N M (T + 2r)^2, float32
    assert saved(dense_lam) == 2 * (32 * 32) ** 2 * 4                         # N M^2, float32
    assert softmax_bytes <= saved(local_lam) < 1.1 * softmax_bytes            # the softmax, ~M / S^2 = 5x less
