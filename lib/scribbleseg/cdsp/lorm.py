"""Localization Rectification Module (LoRM) of CDSP (Zhang et al., AAAI 2024), Eq. (10)-(13).

    Q = flatten(W_q F), K = flatten(W_k F)                       (1x1 convolutions, C -> C)
    A  = softmax_rows( Q^T K / (||Q^T||_2^C ||K||_2^C) )           A_ij = softmax_j cos(q_i, k_j)      (10)
    A' = flatten(M) * A                                            A'_ij = M_j A_ij                     (11)
    F^_i = delta sum_j A'_ij F_j                                   delta learnable, initialised to 1   (12)
    L_lorm = MSE(F, F^)                                            mean over N C h w                   (13)

M is the foreground mask of the pseudo-label (label not background and not IGNORE_INDEX) on the
feature grid: a cell is foreground when most of its pixels are (``downsample="area"``). Eq. (12) prints
flatten(F) A'; the text masks each row A_i over the background positions j ("the background features
in each row A_i are largely suppressed"), so position i is refined from the foreground positions j,
which is flatten(F) A'^T; we follow the text. The rows of A' are not renormalised after masking.
LoRM only adds the loss (13): F^ is not fed to the classifier.

Released-code options (default = paper): ``mask_on="query"`` multiplies the query rows instead,
F^_i = delta M_i sum_j A_ij F_j (background positions get F^ = 0); ``downsample="bilinear"`` resizes
the label indices (IGNORE_INDEX -> 0) bilinearly with align_corners=True and takes index > 0;
``reduction="nonzero"`` is sum (F - F^)^2 / count_nonzero((F - F^)^2).

Memory: A is (N, h w, h w). CDSP puts LoRM on the last backbone features: on the 128 x 128 embedded
images that is SmallSegNet's stride-16 stage (8 x 8 = 64 positions, A is 64 x 64) or a ResNet at
output stride 16 (8 x 8); on 321 x 321 VOC crops a ResNet at stride 8 gives 41 x 41 = 1681 positions
(11 MB per image in float32). On the stride-4 decoder features (``CDSP(lorm_features="decoder")``)
it is 32 x 32 = 1024 positions (4 MB per image) on the embedded set but 81 x 81 = 6561 (172 MB per
image) on VOC crops. At stride 16 a cell of the embedded set is 16 x 16 pixels, so an object of 16-32
pixels covers few cells by majority (the released bilinear rule looks only at the pixels next to
each cell's sample point).

Shapes: f (N, C, h, w); mask (N, h, w) float in {0, 1}; pseudo (N, H, W) long.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from scribbleseg.constants import IGNORE_INDEX
from scribbleseg.losses import saturate_squares


def foreground_mask(pseudo: torch.Tensor, size, downsample: str = "area") -> torch.Tensor:
    """M of Eq. (11) on the (h, w) feature grid, (N, h, w) float in {0, 1}."""
    if downsample == "area":
        fg = ((pseudo != 0) & (pseudo != IGNORE_INDEX)).float()[:, None]      # (N, 1, H, W)
        return (F.adaptive_avg_pool2d(fg, tuple(size))[:, 0] > 0.5).float()   # majority of the cell
    if downsample == "bilinear":                                              # released code
        idx = pseudo.masked_fill(pseudo == IGNORE_INDEX, 0).float()[:, None]
        return (F.interpolate(idx, size=tuple(size), mode="bilinear", align_corners=True)[:, 0] > 0).float()
    raise ValueError(f"downsample must be 'area' or 'bilinear', got {downsample!r}")


def _scale_columns(x: torch.Tensor, top: int = 56) -> torch.Tensor:
    """x (N, C, M) with each column (position) scaled by 2^-j, j >= 0 (exact, detached), so that its largest
    |entry| is below 2^top: the norms of :func:`similarity` cannot overflow (C 2^112 < 2^128 for C < 65536).
    j = 0, i.e. x * 1 bit for bit, wherever max |x| < 2^top (7.2e16); the cosine does not change with j."""
    e = torch.frexp(x.detach().abs().amax(1, keepdim=True)).exponent          # (N, 1, M): max |x| < 2^e
    return torch.ldexp(x, -(e - top).clamp(min=0))


def similarity(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """A of Eq. (10), (N, M, M) with M = h w: row i is the softmax over j of cos(q_i, k_j). The columns are
    scaled by powers of two before normalising (:func:`_scale_columns`), so features up to the dtype's range
    give finite A and gradients."""
    qn = F.normalize(_scale_columns(q.flatten(2)), dim=1, eps=1e-6)          # (N, C, M), unit columns
    kn = F.normalize(_scale_columns(k.flatten(2)), dim=1, eps=1e-6)
    return torch.softmax(qn.transpose(1, 2) @ kn, dim=2)                      # (10)


def rectify(f: torch.Tensor, a: torch.Tensor, mask: torch.Tensor, delta, mask_on: str = "key") -> torch.Tensor:
    """F^ of Eq. (11)-(12), (N, C, h, w), from features f, similarity a (N, M, M) and mask (N, h, w)."""
    m = mask.flatten(1).to(a.dtype)                                           # (N, M)
    if mask_on == "key":
        a = a * m[:, None, :]                                                 # (11) A'_ij = M_j A_ij
    elif mask_on == "query":
        a = a * m[:, :, None]                                                 # released: A'_ij = M_i A_ij
    else:
        raise ValueError(f"mask_on must be 'key' (paper) or 'query' (released code), got {mask_on!r}")
    out = f.flatten(2) @ a.transpose(1, 2)                                    # (12) F^_i = sum_j A'_ij F_j, (N, C, M)
    return delta * out.reshape(f.shape)


def lorm_loss(f: torch.Tensor, f_hat: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Eq. (13): MSE(F, F^) (``"mean"``) or the released sum / count_nonzero (``"nonzero"``, 0 if all equal).

    Where the squares overflow (|F - F^| beyond about 1.8e19 in float32) the loss is computed on scaled
    differences and saturates at the dtype's largest finite value, flat there (:func:`scribbleseg.losses.
    saturate_squares`); elsewhere it is the plain form, bit for bit."""
    diff = f - f_hat
    sq = diff ** 2
    if reduction == "mean":
        return saturate_squares(sq.mean(), diff, sq.numel())                 # (13)
    if reduction == "nonzero":
        n = torch.count_nonzero(sq).clamp(min=1)
        return saturate_squares(sq.sum() / n, diff, n)
    raise ValueError(f"reduction must be 'mean' or 'nonzero', got {reduction!r}")


class LoRM(nn.Module):
    """The module: 1x1 query / key projections and delta. forward(f, mask) -> (F^, L_lorm).

    Args:
        channels: C of the features. mask_on, reduction: see the module docstring.
    """

    def __init__(self, channels: int, mask_on: str = "key", reduction: str = "mean"):
        super().__init__()
        self.query = nn.Conv2d(channels, channels, 1)
        self.key = nn.Conv2d(channels, channels, 1)
        self.delta = nn.Parameter(torch.ones(()))                               # initialised to 1
        self.mask_on, self.reduction = mask_on, reduction

    def forward(self, f: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, k = self.query(f), self.key(f)                                      # (N, C, h, w)
        with torch.autocast(f.device.type, enabled=False):                     # (10)-(13) in float32 under AMP
            if f.dtype != torch.float64:
                f, q, k = f.float(), q.float(), k.float()
            a = similarity(q, k)                                               # (N, M, M)
            f_hat = rectify(f, a, mask, self.delta, self.mask_on)
            return f_hat, lorm_loss(f, f_hat, self.reduction)
