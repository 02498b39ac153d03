"""The exact dense LAM (BLPSeg, Wang et al., IEEE TIP 2023, Sec. III-B, Eq. 3-5) as one fused attention, without
the (M, M) matrix A (issue 15).

Column j of A is a softmax over the sources i (Eq. 4 with 5; :mod:`~scribbleseg.blpseg.lam`):

    A_ij = softmax_i( f_i . f_j - ||s_i - s_j||^2 / (2 sigma^2) )
    ||s_i - s_j||^2 = |s_i|^2 + |s_j|^2 - 2 s_i . s_j                                            (expanded)

The term |s_j|^2 / (2 sigma^2) is the same for every source i of target j and cancels in the softmax, so

    A_ij = softmax_i( q_j . k_i ),   q_j = [f_j, s_j / sigma, 1],   k_i = [f_i, s_i / sigma, -|s_i|^2 / (2 sigma^2)]
    X_out[:, j] = sum_i A_ij X_in[:, i]                                                          (3)

with the decoder features appended to f the same way when "high" is in ``similarity``. That is
``scaled_dot_product_attention(q, k, v = X_in^T, scale = 1)``: PyTorch's fused (flash) kernel on the CPU,
which never forms the (M, M) logits. ``source_mask`` (the ``region`` of Table V) is the attention's boolean key
mask. The function is Eq. (4) exactly; only the rounding differs: s is centred on the grid (s - c, which leaves
every distance unchanged) to halve |s|, yet the logits q_j . k_i carry |s_j - c|^2 / (2 sigma^2) (up to
((h - 1)^2 + (w - 1)^2) / (8 sigma^2) at a corner of an h x w grid), so float32 loses about that many units of
6e-8 on each logit. float16 / bfloat16
input is computed in float32 (autocast switched off inside; the output is cast back), as the expanded form would
lose far more there.

The flash kernel needs one last dimension for q, k and v: all are padded with zeros to max(E, C) rounded up to a
multiple of 8 (q . k and the first C output columns unchanged; 40 was 3 - 10 % faster than 35 on this CPU, and
aligned rows suit the GPU kernels' alignment rules, untested here without a GPU), and passed as one head,
(N, 1, M, e).

float32 against float64 (the dense form on the same float32-rounded inputs; C = 11, D = 32 low-level features
scaled to |f|^2 = 32 as a LayerNorm gives, or to |f|^2 = 2 for a flatter A, where the rounding shows most): largest
error of X_out 32 x 32 grid, sigma = 2: 3.4e-7 (|f|^2 = 32), 1.7e-6 (|f|^2 = 2), 4.4e-6 (|f|^2 = 2 with 48 "high"
features); 64 x 64, sigma = 2: 4.0e-7, 7.7e-6, 1.7e-5; 96 x 96, sigma = 6: 7.2e-7, 1.3e-6, 5.6e-6. The materialised
dense form in float32: at most 1.6e-6 on the same cases. The error grows as (h^2 + w^2) / (8 sigma^2).
Timings: the module docstring of :mod:`~scribbleseg.blpseg.lam`.

Shapes: x (N, C, h, w); f_low, f_high (N, D, h, w); source_mask (N, h, w) bool (True = may be a source).
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from scribbleseg.blpseg.lam_terms import _check, _work_dtype, centred_positions


def _autocast_off(device_type: str):
    """A context with autocast disabled on ``device_type`` (nothing where autocast does not exist)."""
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def attention_queries_keys(sigma: torch.Tensor | float, f_low=None, f_high=None, similarity=("low", "distance"),
                           shape=None, like: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """q and k of the expanded Eq. (4)-(5), each (N, M, E), with q_j . k_i = the logit of A_ij minus
    |s_j|^2 / (2 sigma^2) (a per-target constant, which the softmax over i drops).

    Args:
        sigma: cells; a tensor keeps q and k differentiable in it. f_low, f_high: (N, D, h, w) or None.
        similarity: subset of ("low", "high", "distance"). shape: (N, h, w). like: dtype and device of q, k.

    Returns:
        q = [f_low_j, f_high_j, p_j, 1], k = [f_low_i, f_high_i, p_i, -|p_i|^2 / 2] with p = (s - c) / sigma,
        the parts present in ``similarity`` only; E = sum of the D's (+ 3 with "distance").
    """
    n, h, w = shape
    qs, ks = [], []
    for f, key in ((f_low, "low"), (f_high, "high")):
        if key in similarity:
            fl = f.flatten(2).transpose(1, 2).to(like.dtype)                  # (N, M, D): f_j in q, f_i in k
            qs.append(fl)
            ks.append(fl)
    if "distance" in similarity:
        sigma = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
        p = centred_positions(h, w, like.device, like.dtype) / sigma          # (M, 2) (s - c) / sigma
        one = torch.ones_like(p[:, :1])
        half_sq = p.square().sum(1, keepdim=True) / 2                          # |s_i - c|^2 / (2 sigma^2)
        qs.append(torch.cat([p, one], 1).expand(n, -1, -1))                    # [p_j, 1]
        ks.append(torch.cat([p, -half_sq], 1).expand(n, -1, -1))               # [p_i, -|p_i|^2 / 2]
    return torch.cat(qs, 2), torch.cat(ks, 2)                          # q_j . k_i = f_i.f_j + p_i.p_j - |p_i|^2/2


def attention_lam(x: torch.Tensor, sigma: torch.Tensor | float, f_low=None, f_high=None,
                  similarity=("low", "distance"), source_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. (3)-(5) with all M sources per target (the dense LAM), as a fused attention without the (M, M) matrix.

    Args:
        x: X_in (N, C, h, w). sigma: cells (a tensor: differentiable in it). f_low, f_high: (N, D, h, w).
        similarity: subset of ("low", "high", "distance"). source_mask: (N, h, w) bool or None (all sources).

    Returns:
        X_out (N, C, h, w) in x's dtype; an image without any source gives 0 (and no gradient), as
        :func:`~scribbleseg.blpseg.lam.dense_lam` does.

    """
    similarity = _check(similarity)
    n, c, h, w = x.shape
    work = _work_dtype(x.dtype)                                                # float64 stays, else float32
    with _autocast_off(x.device.type):
        like = x.new_empty((), dtype=work)
        q, k = attention_queries_keys(sigma, f_low, f_high, similarity, (n, h, w), like)  # (N, M, E)
        v = x.flatten(2).transpose(1, 2).to(work)                              # X_in^T, (N, M, C)
        e = -(-max(q.shape[2], c) // 8) * 8                                    # one last dimension, a multiple of 8
        q, k, v = (F.pad(t, (0, e - t.shape[2]))[:, None] for t in (q, k, v))   # (N, 1 head, M, e)
        mask = has_source = None
        if source_mask is not None:
            src = source_mask.flatten(1).to(torch.bool)                        # (N, M_i)
            has_source = src.any(1)[:, None, None]                             # (N, 1, 1)
            mask = (src[:, None, :] | ~has_source)[:, None]                    # (N, 1, 1, M_i); no source: all, zeroed
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)[:, 0, :, :c]  # (4), (3): (N, M_j, C)
        if has_source is not None:
            out = out.masked_fill(~has_source, 0.0)                            # a target with no source -> 0
    return out.transpose(1, 2).reshape(n, c, h, w).to(x.dtype)
