"""Transform pairs (t_phi on the input, T_phi on a representation) for the self-supervision of URSS
(Pan et al., ICCV 2021), Sec. 3.2: Eq. (7), (10) and Fig. 5, phi in {horizontal flip, translation}.

    T_phi(P(x)) = T_phi_r . P(x) . T_phi_c                                   (10)

Translation moves the content by (dy, dx) cells of the representation grid (dy * stride, dx * stride
pixels on the image), filling the vacated part with zeros (the mean colour of a normalised image).
Only the positions V of t(x)'s grid that have a source in x can be compared, so T_r (|V|, M) selects
the source rows (T_r[a, src(a)] = 1) and T_c = T_r^T the source columns; P(t(x)) is restricted to
V x V alike (:meth:`Transform.restrict`). For the flip V is the whole grid and T_r = T_c is the mirror
permutation. We apply (10) by indexing (O(M^2)) rather than by the two dense products (O(M^3));
:meth:`Transform.computing_matrices` builds the dense T_r, T_c (Fig. 5) and the tests check both agree.

Released code (``translation="crop"``, kind "crop"): the translation is a vertical crop, not a shift. t(x)
keeps the top rows (dy > 0: the released ``x[:, :, 0:385]`` of a 465-px crop) or the bottom rows (dy < 0:
``x[:, :, 80:465]``), dropping |dy| grid cells (80 px = 10 cells at stride 8); t(x)'s grid is then
(h - |dy|, w) and every position of it is in V, its source |dy| rows lower for the bottom crop. The same
indexing gives T(P(x)) (the released top-left or bottom-right block of P) and T(f).

A selected block of a row-stochastic matrix is no longer stochastic: the losses renormalise its rows,
i.e. take the softmax of the selected energies (:mod:`scribbleseg.urss.self_supervision`). The paper
does not say how a translation treats the positions that leave or enter the image; this is our choice.

:func:`random_transform` draws phi per iteration from the global step (deterministic): "flip",
"translate" (one of the 4 axis directions, 1..max_shift cells; Fig. 5 shows a vertical one) or
"random" (either, with probability 1/2). With ``translation="crop"`` a translation is the released
vertical crop, top or bottom with probability 1/2, of ``max_shift`` cells (default round(10 h / 59), the
released 80 of 465 px).

Shapes: images (N, C, H, W); representations (N, C, h, w); matrices (N, M, M), M = h w, row-major.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

KINDS = ("flip", "translate")          # what random_transform draws from; "crop" is the released translation
TRANSLATIONS = ("shift", "crop")
RELEASED_CROP = 10 / 59                # the released crop: 80 px of a 465-px crop, 10 of 59 cells at stride 8


def shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x (..., H, W) moved down by dy and right by dx (negative: up / left), zero-filled."""
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    if abs(dy) >= h or abs(dx) >= w:
        return out
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[..., max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


@dataclasses.dataclass(frozen=True)
class Transform:
    """t_phi / T_phi. kind: "flip" (horizontal), "translate" by (dy, dx) grid cells (zero-filled), or "crop"
    (released translation): keep the top (dy > 0) or bottom (dy < 0) rows, dropping |dy| cells."""

    kind: str
    dy: int = 0
    dx: int = 0

    def __post_init__(self):
        if self.kind not in (*KINDS, "crop"):
            raise ValueError(f"Transform.kind must be one of {(*KINDS, 'crop')}, got {self.kind!r}")
        if self.kind == "crop" and (self.dy == 0 or self.dx != 0):
            raise ValueError(f"a crop drops rows only: dy != 0 and dx == 0, got dy={self.dy}, dx={self.dx}")

    def image(self, x: torch.Tensor, stride: int = 1) -> torch.Tensor:
        """t_phi(x) for an input (N, C, H, W) whose representation has stride ``stride``."""
        if self.kind == "crop":
            cut = abs(self.dy) * stride
            return x[..., :x.shape[-2] - cut, :] if self.dy > 0 else x[..., cut:, :]  # (N, C, H - cut, W)
        return x.flip(-1) if self.kind == "flip" else shift(x, self.dy * stride, self.dx * stride)

    def target_shape(self, h: int, w: int) -> tuple[int, int]:
        """The grid of t(x) for a grid (h, w) of x."""
        return (h - abs(self.dy), w) if self.kind == "crop" else (h, w)

    def grid(self, f: torch.Tensor) -> torch.Tensor:
        """T_phi(f) for a representation (N, C, h, w) (zero outside :meth:`valid`)."""
        return self.image(f, 1)

    def index(self, h: int, w: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(dst, src): the flat positions V of t(x)'s grid that have a source in x, and their sources."""
        th, tw = self.target_shape(h, w)
        r, c = torch.meshgrid(torch.arange(th, device=device), torch.arange(tw, device=device), indexing="ij")
        if self.kind == "crop":
            sr, sc = r + max(-self.dy, 0), c                                # the bottom crop's rows sit |dy| lower
        else:
            sr, sc = (r, w - 1 - c) if self.kind == "flip" else (r - self.dy, c - self.dx)
        ok = ((sr >= 0) & (sr < h) & (sc >= 0) & (sc < w)).flatten()
        return (r * w + c).flatten()[ok], (sr * w + sc).flatten()[ok]

    def valid(self, h: int, w: int, device=None) -> torch.Tensor:
        """:meth:`target_shape` bool: the positions V of t(x)'s grid that have a source in x (x's grid (h, w))."""
        th, tw = self.target_shape(h, w)
        out = torch.zeros(th * tw, dtype=torch.bool, device=device)
        out[self.index(h, w, device)[0]] = True
        return out.reshape(th, tw)

    def computing_matrices(self, h: int, w: int, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense (T_r (|V|, M), T_c (M, |V|)) of Eq. (10) (Fig. 5)."""
        src = self.index(h, w)[1]
        t_r = torch.zeros(len(src), h * w, dtype=dtype)
        t_r[torch.arange(len(src)), src] = 1
        return t_r, t_r.T.clone()

    def matrix(self, p: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Eq. (10): T_r P T_c for P (N, M, M) of x, by indexing: (N, |V|, |V|)."""
        src = self.index(h, w, p.device)[1]
        return p[:, src][:, :, src]                                        # (10) rows, then columns src(a)

    def restrict(self, p_t: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """P(t(x)) (N, M, M) on V x V, in the order of :meth:`matrix`: (N, |V|, |V|)."""
        dst = self.index(h, w, p_t.device)[0]
        return p_t[:, dst][:, :, dst]


def random_transform(step: int, h: int, w: int, choice: str = "random", max_shift: int | None = None,
                     translation: str = "shift") -> Transform:
    """phi for global step ``step`` (drawn from numpy's default_rng(step)); grid (h, w).

    choice: "flip", "translate" or "random". max_shift: largest translation in cells (default min(h, w) // 4);
    for ``translation="crop"`` (released) the cells cropped (default round(10 h / 59)).
    """
    if choice not in (*KINDS, "random"):
        raise ValueError(f"transform must be 'flip', 'translate' or 'random', got {choice!r}")
    if translation not in TRANSLATIONS:
        raise ValueError(f"translation must be one of {TRANSLATIONS}, got {translation!r}")
    rng = np.random.default_rng(int(step))
    kind = str(rng.choice(KINDS)) if choice == "random" else choice
    if kind == "flip":
        return Transform("flip")
    if translation == "crop":
        cut = max(1, min(h - 1, max_shift or round(RELEASED_CROP * h)))
        return Transform("crop", cut if rng.random() < 0.5 else -cut)
    amount = int(rng.integers(1, max(1, max_shift or min(h, w) // 4) + 1))
    dy, dx = [(amount, 0), (-amount, 0), (0, amount), (0, -amount)][int(rng.integers(4))]
    return Transform("translate", dy, dx)
