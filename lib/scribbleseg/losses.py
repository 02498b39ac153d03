"""The losses every paper uses (core: the paper folders build on these, never on each other).

- :func:`partial_cross_entropy`: cross-entropy on labelled pixels only (the scribble baseline of every paper),

      L_pCE = -1/|Omega_L| sum_{i in Omega_L} log p_i(y_i),   Omega_L = {i : y_i != IGNORE_INDEX}

  with a full mask as target the ordinary cross-entropy (full supervision); with ``label_smoothing`` the
  label-smoothed cross-entropy (CDSP's L_segc);
- :func:`entropy_map`: the per-position entropy H(p) = -sum_c p_c log p_c of softmax(logits) (URSS Eq. 2-3,
  CDSP Eq. 15, 17, Potts' analysis);
- :func:`masked_mean`: the mean over the positions of a mask, 0 (not NaN) when the mask is empty;
- :func:`check_labels`: the label check every loss that takes integer labels runs first: a value outside
  [0, K) and other than IGNORE_INDEX raises a ValueError naming it (cheap: one elementwise pass, one
  reduction, and the host sync of its answer; it changes no value). Losses check their own input, so a
  user calling one directly gets the clear error rather than an index error deep in torch (or, for
  BLPSeg's scribble head, a silent misreading of K as its "no scribble" class);
- :func:`saturate_squares`: the overflow guard of the squared-error losses (CDSP's LoRM, URSS's feature
  consistency): their plain form, bit for bit, wherever it is finite; where the squares overflow (|a - b|
  beyond about 1.8e19 in float32), the same reduction on differences scaled by a power of two (exact),
  saturated at the dtype's largest finite value.

Shapes: logits (N, K, H, W); target (N, H, W) long with IGNORE_INDEX; maps and masks (N, H, W).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from scribbleseg.constants import IGNORE_INDEX


def check_labels(labels: torch.Tensor, num_classes: int, name: str = "target") -> torch.Tensor:
    """ValueError unless every value of ``labels`` is a class index in [0, ``num_classes``) or IGNORE_INDEX.

    The message names the offending values (up to 10), the allowed set and what to do. Cost: one elementwise
    pass and one ``any`` (a host sync, as for any check that raises); ``labels`` is returned unchanged.
    """
    bad = (labels < 0) | ((labels >= num_classes) & (labels != IGNORE_INDEX))
    if bool(bad.any()):
        values = torch.unique(labels[bad]).tolist()
        shown = ", ".join(str(v) for v in values[:10]) + (", ..." if len(values) > 10 else "")
        raise ValueError(f"{name} has label value(s) {shown} outside the allowed set [0, {num_classes}) or "
                         f"{IGNORE_INDEX}: a label must be a class index 0..{num_classes - 1} (num_classes = "
                         f"{num_classes}) or {IGNORE_INDEX} (IGNORE_INDEX, unlabelled); "
                         f"map void / unlabelled values (e.g. -1) to {IGNORE_INDEX}, or check num_classes")
    return labels


def partial_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                          label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy over labelled pixels.

    Args:
        logits: (N, K, H, W) unnormalised scores.
        target: (N, H, W) long, class index or IGNORE_INDEX.
        label_smoothing: epsilon of label smoothing (0 = none).

    Returns:
        Scalar tensor; exactly zero (with a gradient path) when no pixel is labelled, never NaN.

    Raises:
        ValueError: sizes differ, or a label is outside [0, K) and not IGNORE_INDEX (:func:`check_labels`).
    """
    if logits.shape[-2:] != target.shape[-2:]:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in size")
    check_labels(target, logits.shape[1])
    total = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum",
                            label_smoothing=label_smoothing)
    n = (target != IGNORE_INDEX).sum()
    return total / n.clamp(min=1)  # mean over labelled pixels; 0 / 1 = 0 when none


def entropy_map(logits: torch.Tensor) -> torch.Tensor:
    """H(p) = -sum_c p_c log p_c per position of p = softmax(logits) over dim 1: (N, K, H, W) -> (N, H, W).

    From log_softmax (stable as p -> 0), in float32 at least (float16 logits under AMP are upcast)."""
    logp = torch.log_softmax(logits if logits.dtype == torch.float64 else logits.float(), 1)
    return -(logp.exp() * logp).sum(1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the positions where ``mask`` (bool or 0/1, same shape) is set; 0 when none."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


def saturate_squares(plain: torch.Tensor, diff: torch.Tensor, denom,
                     weight: torch.Tensor | None = None) -> torch.Tensor:
    """Overflow guard of a squared-error reduction ``plain`` = sum(weight * diff**2) / denom, as the caller computed it.

    Where ``plain`` is finite it is returned as it is: value and gradient bit for bit (the other branch gets a
    zero gradient, which adds exactly 0). Where it is not (the squares overflowed: |diff| beyond about 1.8e19 in
    float32), the value is the same reduction on diff * 2^-e, e the exponent of max |diff| (a power of two:
    exact), in float64, times 2^(2 e), clamped to the largest finite value of ``plain``'s dtype. Its gradient
    is the exact 2 weight diff / denom while that value is representable, and 0 once it saturates (the
    returned loss is flat there, and the true gradients of the layers below, e.g. of LoRM's delta, would
    overflow too). NaN in ``diff`` stays NaN. No host sync (``torch.where``).

    Args:
        plain: the caller's scalar. diff: the differences (a - b), with their graph. denom: number or
            tensor (the caller's denominator). weight: None or broadcastable to diff (e.g. a 0/1 mask).
    """
    if diff.numel() == 0:
        return plain
    with torch.autocast(diff.device.type, enabled=False):
        d = diff.detach()
        w = torch.ones((), dtype=d.dtype, device=d.device) if weight is None else weight.detach().to(d.dtype)
        work = torch.float64 if d.dtype == torch.float64 else torch.float32
        e = torch.frexp(d.abs().amax().to(work)).exponent                     # max |d| < 2^e (0 for 0)
        u = torch.ldexp(d.to(work), -e)                                       # |u| < 1: d scaled exactly
        scaled = ((u * u * w.to(work)).sum() / denom).double()                # the reduction / 2^(2e)
        half = torch.ldexp(torch.ones((), dtype=torch.float64, device=d.device), e.clamp(max=1000))
        value = scaled * half * half                                          # float64; inf past float64's range
        top = torch.finfo(plain.dtype).max
        saturated = value > top                                               # False for NaN
        grad = torch.where(saturated, 0.0, d / denom * (2 * w))               # d loss / d diff, 0 where flat
        surrogate = (grad * (diff - d)).sum().to(plain.dtype)                 # forward 0, backward grad
        safe = value.clamp(max=top).to(plain.dtype) + surrogate
        return torch.where(torch.isfinite(plain), plain, safe)
