"""Local Aggregation Module (LAM) of BLPSeg (Wang et al., IEEE TIP 2023), Sec. III-B, Eq. (3)-(8).

    X_out = X_in A                                                       (3)
    A_ij  = P_low(i, j) P_dis(i, j) / sum_k P_low(k, j) P_dis(k, j)      (4)
    P_low(i, j) = exp(f_i . f_j) / sum_k exp(f_k . f_j),  P_dis(i, j) = exp(-||s_i - s_j||^2 / (2 sigma^2))   (5)

The column normaliser of P_low cancels in (4), so column j of A is a softmax over the sources i:

    A_ij = softmax_i( f_i . f_j - ||s_i - s_j||^2 / (2 sigma^2) ),

which is how both implementations compute it (numerically stable, exactly Eq. 4). Placed after the
classifier (Eq. 8): X_in are the segmentation logits Z on the stride-4 grid, f the low-level features
of the image (:class:`LowLevelFeatures`), s the grid positions (sigma = 6 cells by default).

Variants (the paper's Tables III-V): ``similarity`` is any subset of {"low", "high", "distance"}
("high": f_i . f_j of the decoder features; terms are summed inside the softmax); ``region``
restricts the sources i to "labelled" or "unlabelled" pixels (Table V; default "all").
``dense_lam`` builds the (N, M, M) matrix (its distance term, :func:`distance_logits`, on x's device in
x's dtype at every call, no cache); ``local_lam`` visits only sources within
``truncate * sigma`` cells (shift-and-accumulate over the window) and agrees with the dense form to
about exp(-truncate^2 / 2). Measured here (2-core CPU, batch 16, 32 x 32 grid, K = 11, SmallSegNet):
a training step takes 0.09 s without LAM, 0.36 s with the dense LAM, and 19 s with the local one at
sigma = 6 (a 55 x 55 window: 3025 offsets, each a few small tensor ops). The local form only pays when
the window is much smaller than the grid and the dense M x M matrix does not fit (VOC: 96 x 96 grid,
0.34 GB per image in float32); on the cpu profile use the dense one.

Shapes: x (N, C, h, w); f_low, f_high (N, D, h, w); source_mask (N, h, w) bool (True = may be a source).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SIMILARITIES = ("low", "high", "distance")


def _check(similarity) -> tuple[str, ...]:
    bad = [s for s in similarity if s not in SIMILARITIES]
    if bad or not similarity:
        raise ValueError(f"LAM similarity must be a non-empty subset of {SIMILARITIES}, got {similarity!r}")
    return tuple(similarity)


def _axis_squared_differences(n: int, device, dtype) -> torch.Tensor:
    """(a - b)^2 for the cell indices a, b in 0..n-1 along one axis, (n, n): a (n, 1) - (1, n) broadcast."""
    idx = torch.arange(n, device=device, dtype=dtype)
    return (idx[:, None] - idx[None, :]).square()


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; float32, float16 and bfloat16 compute the per-axis terms in float32."""
    return torch.promote_types(dtype, torch.float32)


def squared_distances(h: int, w: int, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """||s_i - s_j||^2 of Eq. (5) for the M = h * w cells of an h x w grid, (M, M), row-major (i = row * w + col).

    Built on ``device`` in ``dtype`` by broadcasting: (dy^2)[:, None, :, None] + (dx^2)[None, :, None, :] of the
    two per-axis (h, h) and (w, w) squared differences, viewed as (M, M); the only (M, M) allocation is the result.
    The entries are integers, exact in float32 / float64 up to 2^24 (grids far beyond 96 x 96). In float16 /
    bfloat16 the per-axis squares are computed in float32 and rounded once, the sum is rounded once more.
    """
    work = _work_dtype(dtype)
    dy2 = _axis_squared_differences(h, device, work).to(dtype)
    dx2 = _axis_squared_differences(w, device, work).to(dtype)
    return (dy2[:, None, :, None] + dx2[None, :, None, :]).reshape(h * w, h * w)


def distance_logits(h: int, w: int, sigma: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """log P_dis(i, j) = -||s_i - s_j||^2 / (2 sigma^2) of Eq. (5), (M, M), M = h * w; differentiable in sigma.

    Where: built directly on ``like.device`` from ``torch.arange`` coordinate vectors by broadcasting
    (:func:`squared_distances`); no Python loop over cells, no CPU / float64 round trip. The squared distances are
    integers, exact in float32 (float64 for float64 input), rounded once to ``like.dtype`` and divided by 2 sigma^2
    there: the same numbers, bit for bit, as the float64 matrix this replaces once cast.

    Memory: O((HW)^2) in the input dtype (96 x 96 grid: 0.34 GB in float32), one more (M, M) float32 temporary
    for float16 / bfloat16 input.

    Why no cache: building it costs a broadcast add and a division (cheap next to the O(N M^2 D) softmax logits
    it is added to), while a cache keyed by grid size would keep an (M, M) tensor alive per size: variable-size
    evaluation (VOC) misses it on nearly every image and would pin several GB. It is freed with the forward.
    """
    work = _work_dtype(like.dtype)
    d2 = squared_distances(h, w, like.device, work).to(like.dtype)          # (M, M) exact integers, rounded once
    return -(d2 / (2 * torch.as_tensor(sigma, dtype=like.dtype, device=like.device) ** 2))  # (5) log P_dis


def dense_lam(x: torch.Tensor, sigma: torch.Tensor | float, f_low=None, f_high=None, similarity=("low", "distance"),
              source_mask: torch.Tensor | None = None, return_matrix: bool = False):
    """Eq. (3)-(5) with the full (M, M) matrix A, M = h * w.

    Returns:
        X_out (N, C, h, w), and A (N, M, M) with columns summing to 1 if ``return_matrix``.
    """
    similarity = _check(similarity)
    n, c, h, w = x.shape
    m = h * w
    # Both similarity terms are symmetric in (i, j), so we build the transpose L[j, i] and take the softmax
    # over its last (contiguous) axis: A^T = softmax_i(L[j, i]), the same numbers as Eq. (4).
    if "distance" in similarity:                                              # (N or 1, M_j, M_i)
        logit = distance_logits(h, w, sigma, x)[None]                          # log P_dis, on x's device / dtype
    else:
        logit = x.new_zeros(1, m, m)
    for f, key in ((f_low, "low"), (f_high, "high")):
        if key in similarity:
            fl = f.flatten(2)                                                  # (N, D, M)
            logit = torch.baddbmm(logit.expand(n, m, m), fl.transpose(1, 2), fl)  # + f_j . f_i
    logit = logit.expand(n, m, m)
    if source_mask is not None:
        logit = logit.masked_fill(~source_mask.flatten(1)[:, None, :], float("-inf"))  # sources i not allowed
    a_t = torch.softmax(logit, dim=2)                                          # (4): normalise over sources i
    if source_mask is not None:
        a_t = torch.nan_to_num(a_t)                                            # a target with no source -> 0
    out = torch.bmm(a_t, x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(n, c, h, w)  # (3) X_out = X_in A
    a = a_t.transpose(1, 2) if return_matrix else None                        # (N, M_i, M_j)
    return (out, a) if return_matrix else out


def local_lam(x: torch.Tensor, sigma: float, f_low=None, f_high=None, similarity=("low", "distance"),
              source_mask: torch.Tensor | None = None, truncate: float = 4.5, radius: int | None = None) -> torch.Tensor:
    """Eq. (3)-(5) restricted to sources within ``radius`` cells (default ceil(truncate * sigma)).

    Two passes of shift-and-accumulate over the (2r+1)^2 offsets: first the per-target max of the
    softmax logits, then the exponentials and the weighted sum; memory stays O(N C h w).
    Without "distance" the radius must be given (the window is then a hard cut-off).
    """
    similarity = _check(similarity)
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


class LowLevelFeatures(nn.Module):
    """f of Eq. (5): a 4x4 convolution with stride 4 on the image, then LayerNorm over channels (Sec. IV-B).
    ``project=True``: the released code's extra 1x1 convolution after the LayerNorm."""

    def __init__(self, dim: int = 32, stride: int = 4, in_channels: int = 3, project: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, dim, kernel_size=stride, stride=stride)
        self.norm = nn.LayerNorm(dim)
        self.project = nn.Conv2d(dim, dim, 1) if project else None

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        f = self.conv(image)                                                   # (N, D, H/4, W/4)
        f = self.norm(f.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)               # LayerNorm over D
        return f if self.project is None else self.project(f)


class LAM(nn.Module):
    """LAM with its hyperparameters; sigma learnable if ``learn_sigma`` (stored as log sigma).

    forward(x, f_low, f_high=None, source_mask=None) -> X_out, dense or local (``impl``).
    """

    def __init__(self, sigma: float = 6.0, similarity=("low", "distance"), learn_sigma: bool = False,
                 impl: str = "dense", truncate: float = 4.5):
        super().__init__()
        self.similarity, self.impl, self.truncate = _check(similarity), impl, truncate
        if impl not in ("dense", "local"):
            raise ValueError(f"LAM impl must be 'dense' or 'local', got {impl!r}")
        log_sigma = torch.tensor(math.log(sigma))
        self.log_sigma = nn.Parameter(log_sigma) if learn_sigma else None
        self.register_buffer("fixed_log_sigma", log_sigma)

    @property
    def sigma(self) -> torch.Tensor:
        return (self.log_sigma if self.log_sigma is not None else self.fixed_log_sigma).exp()

    def forward(self, x, f_low=None, f_high=None, source_mask=None):
        if self.impl == "local":
            if self.log_sigma is not None:
                raise ValueError("a learnable sigma needs impl='dense' (the local window size depends on sigma)")
            return local_lam(x, float(self.sigma), f_low, f_high, self.similarity, source_mask, self.truncate)
        return dense_lam(x, self.sigma, f_low, f_high, self.similarity, source_mask)
