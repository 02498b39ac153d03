"""LAM distance term P_dis of Eq. (5) (BLPSeg, Sec. III-B): built on the input's device, in its dtype, by
broadcasting, with no module-level cache (issue 13, item 5).

The helpers new in that change are reached as ``lam.<name>`` inside the tests, so the module also imports
against the previous ``lam.py`` (float64 on the CPU, ``functools.lru_cache`` of 8 sizes), on which the
tests marked "fails on the old construction" fail.
"""
from __future__ import annotations

import gc

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from scribbleseg.blpseg import lam


def _reference_d2(h: int, w: int) -> torch.Tensor:
    """||s_i - s_j||^2 of Eq. (5) for s = (row, col), i = row * w + col, by the formula, cell by cell (float64)."""
    pos = [(r, c) for r in range(h) for c in range(w)]
    return torch.tensor([[float((ri - rj) ** 2 + (ci - cj) ** 2) for rj, cj in pos] for ri, ci in pos],
                        dtype=torch.float64)


def _reference_a(x: torch.Tensor, f: torch.Tensor | None, sigma: float) -> torch.Tensor:
    """A of Eq. (4)-(5) for one image, (M_i, M_j), from P_low and P_dis as written (float64)."""
    _, h, w = x.shape
    p_dis = torch.exp(-_reference_d2(h, w) / (2 * sigma ** 2))
    if f is None:
        num = p_dis
    else:
        fl = f.flatten(1)
        num = torch.softmax(fl.T @ fl, dim=0) * p_dis                     # P_low(i, j) normalised over i
    return num / num.sum(0, keepdim=True)


# (a) the broadcast construction equals Eq. (5) and the previous construction --------------------------------

def test_squared_distances_equal_the_formula_on_a_5x7_grid():
    ref = _reference_d2(5, 7)
    assert torch.equal(lam.squared_distances(5, 7, dtype=torch.float64), ref)
    assert torch.equal(lam.squared_distances(5, 7, dtype=torch.float32), ref.float())      # integers: exact
    assert torch.equal(lam.squared_distances(7, 5, dtype=torch.float64), _reference_d2(7, 5))  # row-major order


@pytest.mark.parametrize("sigma", [0.7, 1.3, 6.0])
def test_distance_logits_equal_the_formula(sigma):
    ref = -_reference_d2(5, 7) / (2 * sigma ** 2)                         # log P_dis(i, j)
    rel = lambda a: ((a.double() - ref).abs() / ref.abs().clamp_min(1e-300)).max().item()  # noqa: E731
    d64 = lam.distance_logits(5, 7, sigma, torch.zeros(1, dtype=torch.float64))
    d32 = lam.distance_logits(5, 7, sigma, torch.zeros(1, dtype=torch.float32))
    assert rel(d64) <= 1e-12 and rel(d32) <= 1e-6
    assert (d64.diagonal() == 0).all() and torch.equal(d64, d64.T)
    s = torch.tensor(sigma, dtype=torch.float64)                          # a tensor sigma gives the same numbers
    assert torch.equal(lam.distance_logits(5, 7, s, torch.zeros(1, dtype=torch.float64)), d64)


@pytest.mark.parametrize("similarity", [("distance",), ("low", "distance")])
def test_dense_lam_matrix_equals_equation_4_on_a_5x7_grid(similarity):
    torch.manual_seed(0)
    x, f = torch.randn(1, 3, 5, 7, dtype=torch.float64), torch.randn(1, 4, 5, 7, dtype=torch.float64) * 0.5
    out, a = lam.dense_lam(x, 1.3, f, similarity=similarity, return_matrix=True)
    ref = _reference_a(x[0], f[0] if "low" in similarity else None, 1.3)
    assert (a[0] - ref).abs().max() < 1e-12
    assert (out.flatten(2) - x.flatten(2) @ ref).abs().max() < 1e-12    # (3) X_out = X_in A
    out32 = lam.dense_lam(x.float(), 1.3, f.float(), similarity=similarity)
    assert (out32.double() - out).abs().max() < 1e-5


def test_local_lam_still_agrees_with_the_dense_one():
    torch.manual_seed(1)
    x, f = torch.randn(2, 3, 5, 7, dtype=torch.float64), torch.randn(2, 4, 5, 7, dtype=torch.float64) * 0.5
    mask = torch.rand(2, 5, 7) > 0.3
    for m in (None, mask):
        dense = lam.dense_lam(x, 0.8, f, source_mask=m)
        local = lam.local_lam(x, 0.8, f, source_mask=m, radius=7)        # a 15 x 15 window covers the grid
        assert (dense - local).abs().max() < 1e-12


# (b) dtype and device follow the input ------------------------------------------------------------------------

# float16 / bfloat16: the per-axis terms are formed in float32, rounded once to the input dtype, then added in
# it; so the bias is within a few units in the last place of the input dtype of the float64 values.
TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-6, torch.float16: 2e-3, torch.bfloat16: 2e-2}


@pytest.mark.parametrize("dtype", list(TOLERANCE))
def test_bias_has_the_input_dtype_and_device(dtype):
    x = torch.randn(1, 2, 12, 9).to(dtype)
    bias = lam.distance_logits(12, 9, 6.0, x)
    assert bias.dtype == x.dtype and bias.device == x.device and bias.shape == (108, 108)
    ref = -_reference_d2(12, 9) / (2 * 6.0 ** 2)
    assert ((bias.double() - ref).abs() <= TOLERANCE[dtype] * ref.abs()).all()
    assert lam.squared_distances(12, 9, x.device, dtype).dtype == dtype


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dense_lam_runs_in_half_precision(dtype):
    torch.manual_seed(2)
    x, f = torch.randn(2, 3, 12, 9), torch.randn(2, 4, 12, 9) * 0.5
    ref = lam.dense_lam(x.double(), 6.0, f.double())
    out = lam.dense_lam(x.to(dtype), 6.0, f.to(dtype))
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert (out.double() - ref).abs().max() < 50 * TOLERANCE[dtype]


def test_bias_is_built_on_the_input_device_meta():
    """On the meta device nothing is allocated: a VOC-sized (96 x 96) grid costs nothing and must stay there."""
    x = torch.empty(1, 21, 96, 96, device="meta")
    bias = lam.distance_logits(96, 96, torch.tensor(6.0, device="meta"), x)
    assert bias.device == x.device and bias.dtype == x.dtype and bias.shape == (9216, 9216)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_bias_on_cuda():
    x = torch.randn(1, 2, 12, 9, device="cuda")
    bias = lam.distance_logits(12, 9, 6.0, x)
    assert bias.device == x.device and bias.dtype == x.dtype
    assert torch.allclose(bias.cpu().double(), -_reference_d2(12, 9) / 72.0, rtol=1e-6, atol=0)


# (c) fails on the old construction: no float64 / CPU intermediates, nothing cached ----------------------------

class _RecordOutputs(TorchDispatchMode):
    """Records (dtype, device, numel) of every tensor an aten op returns."""

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[torch.dtype, torch.device, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.seen.append((t.dtype, t.device, t.numel()))
        return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_dense_lam_makes_no_float64_or_off_device_intermediate(dtype, device):
    """Fails on the old construction (float64 cdist on the CPU, then copied). The grid size is used by no other
    test, so an old per-size cache cannot hide the construction. Every (M, M)-sized intermediate has the
    input dtype, except that float16 input forms its exact integer squared distances in float32 (rounded once)."""
    h = {torch.float32: 11, torch.float16: 12}[dtype]
    w = {"cpu": 13, "meta": 17}[device]
    x = torch.randn(2, 3, h, w).to(device=device, dtype=dtype)
    f = torch.randn(2, 4, h, w).to(device=device, dtype=dtype)
    with _RecordOutputs() as rec:
        out = lam.dense_lam(x, 2.0, f)
    assert out.dtype == dtype and out.device == x.device
    assert rec.seen
    assert all(d == x.device for _, d, _ in rec.seen), {d for _, d, _ in rec.seen}
    assert all(t != torch.float64 for t, _, _ in rec.seen), {t for t, _, _ in rec.seen}
    m = h * w
    allowed = {dtype} if dtype == torch.float32 else {dtype, torch.float32}
    assert all(t in allowed for t, _, n in rec.seen if n >= m * m), {(t, n) for t, _, n in rec.seen}


def _live_square_tensors(sizes) -> list[tuple[int, ...]]:
    ms = {h * w for h, w in sizes}
    found = []
    for o in gc.get_objects():
        try:
            if issubclass(type(o), torch.Tensor) and o.dim() == 2 and o.shape[0] == o.shape[1] and o.shape[0] in ms:
                found.append(tuple(o.shape))
        except Exception:                                                  # objects that refuse isinstance / shape
            pass
    return found


def test_no_distance_matrix_survives_the_call():
    """Fails on the old construction (an lru_cache of up to 8 (M, M) float64 matrices): after running the dense
    LAM on 10 grid sizes no (M, M) tensor of those sizes is alive and no function of the module caches."""
    sizes = [(h, w) for h, w in zip(range(6, 16), range(9, 19))]            # 10 sizes used by no other test
    model = lam.LAM(sigma=2.0)
    for h, w in sizes:
        x, f = torch.randn(1, 2, h, w), torch.randn(1, 3, h, w)
        out = model(x, f)
        assert out.shape == x.shape and out.dtype == x.dtype
    del x, f, out
    gc.collect()
    assert _live_square_tensors(sizes) == []
    cached = {name: fn.cache_info() for name, fn in vars(lam).items() if hasattr(fn, "cache_info")}
    assert not any(info.currsize for info in cached.values()), cached


# (d) gradients in double precision --------------------------------------------------------------------------

def test_dense_lam_gradcheck_in_x_features_and_sigma():
    torch.manual_seed(3)
    x = torch.randn(2, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    fl = (torch.randn(2, 3, 3, 4, dtype=torch.float64) * 0.5).requires_grad_()
    fh = (torch.randn(2, 3, 3, 4, dtype=torch.float64) * 0.5).requires_grad_()
    sigma = torch.tensor(1.4, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(2, 3, 4) > 0.3
    mask[:, 0, 0] = True                                                   # every image has a source
    sim = ("low", "high", "distance")
    assert torch.autograd.gradcheck(lambda a, b, c, s: lam.dense_lam(a, s, b, c, sim), (x, fl, fh, sigma))
    assert torch.autograd.gradcheck(lambda a, b, s: lam.dense_lam(a, s, b, source_mask=mask), (x, fl, sigma))


def test_distance_logits_gradcheck_in_sigma():
    sigma = torch.tensor(1.4, dtype=torch.float64, requires_grad=True)
    like = torch.zeros(1, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda s: lam.distance_logits(3, 4, s, like), (sigma,))


def test_local_lam_gradcheck_in_x_and_features():
    torch.manual_seed(4)
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    f = (torch.randn(1, 3, 3, 4, dtype=torch.float64) * 0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: lam.local_lam(a, 1.2, b, truncate=2.0), (x, f))
