"""Distance entropy loss (DEL) of CDSP (Zhang et al., AAAI 2024), Eq. (15), (17), (18).

    L_dc = 1/N_c sum_i d_c(i) H(p_i),   N_c = number of non-zero d_c(i)                    (15)
    L_ds = 1/N_s sum_i d_s(i) H(p_i),   N_s = number of non-zero d_s(i)                    (17)
    L_de = L_ds + L_dc                                                                      (18)
    H(p_i) = -sum_k p_ik log p_ik

Sign: (15) and (17) print d(i) p_i log(p_i), i.e. minus the entropy, but the text asks the loss to
"reinforce the prediction certainty" (entropy minimisation); the authors' code minimises
-sum d p log p / count. We minimise the weighted entropy. The counts run over the whole batch (pixels
of all images); zero weight everywhere gives 0, never NaN.

Released-code option (default = paper): ``count="terms"`` divides by the number of non-zero weighted
entropies d(i) H(p_i) instead of the number of non-zero weights (they differ where H underflows to 0).

Shapes: logits (N, K, H, W) at label size; d (N, H, W) in [0, 1] from :mod:`scribbleseg.cdsp.distance_maps`.
"""
from __future__ import annotations

import torch

from scribbleseg.losses import entropy_map  # noqa: F401  (H(p_i) of Eq. 15, 17; re-exported for the method)


def distance_entropy(logits: torch.Tensor, d: torch.Tensor, count: str = "weights",
                     entropy: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. (15) / (17): weighted entropy, normalised by the count of non-zero weights.
    ``entropy``: H (N, H, W) if already computed from ``logits``."""
    h = entropy_map(logits) if entropy is None else entropy
    weighted = d * h                                                            # d(i) H(p_i), (N, H, W)
    if count == "weights":
        n = torch.count_nonzero(d)                                              # N_c or N_s
    elif count == "terms":
        n = torch.count_nonzero(weighted.detach())                              # released code
    else:
        raise ValueError(f"count must be 'weights' or 'terms', got {count!r}")
    return weighted.sum() / n.clamp(min=1)


def distance_entropy_loss(logits: torch.Tensor, d_s: torch.Tensor, d_c: torch.Tensor,
                          count: str = "weights") -> dict[str, torch.Tensor]:
    """Eq. (18): {"ds": L_ds (17), "dc": L_dc (15)}; the loop sums them."""
    h = entropy_map(logits)
    return {"ds": distance_entropy(logits, d_s, count, h), "dc": distance_entropy(logits, d_c, count, h)}
