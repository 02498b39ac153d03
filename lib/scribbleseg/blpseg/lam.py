"""Local Aggregation Module (LAM) of BLPSeg (Wang et al., IEEE TIP 2023), Sec. III-B, Eq. (3)-(8).

    X_out = X_in A                                                       (3)
    A_ij  = P_low(i, j) P_dis(i, j) / sum_k P_low(k, j) P_dis(k, j)      (4)
    P_low(i, j) = exp(f_i . f_j) / sum_k exp(f_k . f_j),  P_dis(i, j) = exp(-||s_i - s_j||^2 / (2 sigma^2))   (5)

The column normaliser of P_low cancels in (4), so column j of A is a softmax over the sources i:

    A_ij = softmax_i( f_i . f_j - ||s_i - s_j||^2 / (2 sigma^2) ),

which is how every form computes it (numerically stable, exactly Eq. 4). Placed after the
classifier (Eq. 8): X_in are the segmentation logits Z on the stride-4 grid, f the low-level features
of the image (:class:`LowLevelFeatures`), s the grid positions (sigma = 6 cells by default).

Variants (the paper's Tables III-V): ``similarity`` is any subset of {"low", "high", "distance"}
("high": f_i . f_j of the decoder features; terms are summed inside the softmax); ``region``
restricts the sources i to "labelled" or "unlabelled" pixels (Table V; default "all").

Three forms, one module each (all re-exported here):

- :func:`dense_lam` (this module): the (N, M, M) matrix materialised (its distance term,
  :func:`~scribbleseg.blpseg.lam_terms.distance_logits`, on x's device in x's dtype at every call, no cache).
  The reference, and the one that returns A (``return_matrix``, the figures of :mod:`~scribbleseg.blpseg.analysis`).
- :func:`~scribbleseg.blpseg.lam_attention.attention_lam`: the same function with ||s_i - s_j||^2 expanded, so
  that the logits are q_j . k_i and X_out is one fused attention (``scaled_dot_product_attention``), without the
  (M, M) matrix. ``LAM(impl="dense")`` (BLPSeg's ``lam_impl="dense"``, the default) runs this form, with or
  without a source mask and with a learnable sigma: "dense" names the function (every source), not how it is
  computed, so existing runs keep their cache keys. Its float32 rounding is larger (see that module).
- :func:`~scribbleseg.blpseg.lam_local.local_lam` (``impl="local"``): only sources within ``truncate * sigma``
  cells, agreeing with the dense form to about exp(-truncate^2 / 2), blocked in tiles of targets.

Measured (issue 15; forward + backward of the LAM alone, float32, C = 11 classes, sigma = 2 cells as in the cpu
recipe; a shared 2-core CPU, 2 threads, torch 2.14.1, median of 5 interleaved runs, at load below 1 unless said):
32 x 32 grid, batch 16, D = 32: materialised 0.24 - 0.25 s, attention 0.10 - 0.13 s, local 0.21 s (its window,
r = 9, covers most of the grid); 64 x 64, batch 4, D = 32: materialised 1.16 s, attention 0.38 s, local 0.19 s
(6.2x faster than the materialised form; D = 16: 1.12, 0.27, 0.17 s, 6.6x); VOC-sized 96 x 96, sigma = 6, C = 21,
D = 32, batch 1: materialised 1.5 s, attention 0.66 s, local 0.67 s. Saved for the backward, 64 x 64, batch 4:
materialised 259 MiB, attention 10 MiB, local 73 MiB. At load 4 - 5 (other jobs) every time was 2 - 4x larger and
the ratios moved by up to a factor 2. A BLPSeg training step on the cpu profile (SmallSegNet width 16, batch 16,
32 x 32 grid, sigma = 2; :func:`scribbleseg.lab.benchmark.time_steps`, median of 5, five runs at load 1.5 - 2,
as ratios to a pCE step of 0.10 - 0.12 s): BLP loss without LAM 1.27 - 1.41x (1.63 - 1.79x before the BLP loss
was evaluated at the labelled pixels), dense LAM + BLP 2.1 - 2.4x (4.4 - 5.3x with the materialised form), local
LAM + BLP 2.8 - 3.3x (3.0 - 4.0x). The fused attention alone costs about one pCE step (0.10 s forward + backward).

Shapes: x (N, C, h, w); f_low, f_high (N, D, h, w); source_mask (N, h, w) bool (True = may be a source).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from scribbleseg.blpseg.lam_attention import attention_lam, attention_queries_keys  # noqa: F401  (re-exported)
from scribbleseg.blpseg.lam_local import _TILE, _axis_tiles, _window_bias, local_lam  # noqa: F401  (re-exported)
from scribbleseg.blpseg.lam_terms import (SIMILARITIES, _axis_squared_differences, _check, _work_dtype,  # noqa: F401
                                          centred_positions, distance_logits, squared_distances)


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

    forward(x, f_low, f_high=None, source_mask=None) -> X_out. ``impl="dense"``: Eq. (4) over all sources,
    computed by :func:`~scribbleseg.blpseg.lam_attention.attention_lam` (the same function as :func:`dense_lam`,
    without the (M, M) matrix); ``impl="local"``: :func:`~scribbleseg.blpseg.lam_local.local_lam`.
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
        return attention_lam(x, self.sigma, f_low, f_high, self.similarity, source_mask)  # = dense_lam
