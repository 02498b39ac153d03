"""Self-supervision of URSS (Pan et al., ICCV 2021), Sec. 3.2, Eq. (7)-(9).

    ss(x, phi)   = l(T_phi(f(x)), f(t_phi(x)))                                                     (7)
    ss(x, phi)   = l(U_P(T_phi f(x)), U_P(f(t_phi x))) + l(Lambda_P(T_phi f(x)), Lambda_P(f(t_phi x)))  (8)
    ss_P(x, phi) = KL(T_phi(P(x)) || P(t_phi(x))) + gamma |tr T_phi(P(x)) - tr P(t_phi(x))|^2       (9)

(7) on f^{L-1} or f^L (Table 2): the paper leaves l open; ours is the mean squared error over the
compared positions V and the channels. (8) needs an eigendecomposition (torch.linalg.eig: for analysis
and figures, not for training); the paper leaves l open there too: ours compares the k leading
eigenpairs (by real part), 1 - |<u_a, u_b>| for the unit eigenvectors (blind to their sign / phase)
and |lambda_a - lambda_b|^2 for the eigenvalues, each averaged over the k pairs and the batch.
(9), the soft form trained with: tr P = sum of P's eigenvalues; KL is taken per row (each row of P is
a transition distribution), summed over its entries and averaged over rows and images; the trace term
is averaged over images. (9) takes log-probabilities: the log-softmax of the energies selected by
Eq. (10) (:func:`paired`), which is log P for a flip and the log of the renormalised V x V block for a
translation, stable where P underflows.

Released code (:func:`released_eigenspace_loss`): on the pre-softmax energies E1 = T(E(x)) (student)
and E2 = E(t(x)) (teacher, the same network under no_grad), with S(E) = softmax(E, dim=1),
    30 * ( KLDiv(log S(E1), S(E2)) [element-wise mean] + 1e-2 |tr S(E1) - tr S(E2)| [mean over images] ),
where dim=1 is the first position index of (N, M, M): a column-wise softmax, for the KL and the trace
alike. (The released flip pairs E(x) with T E(t(x)) T instead; T is a symmetric permutation, so the
loss is the same.)

Shapes: f (N, C, h, w); matrices (N, M, M) or (N, |V|, |V|). Every loss returns a scalar.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from scribbleseg.losses import saturate_squares
from scribbleseg.urss.transforms import Transform


def trace(p: torch.Tensor) -> torch.Tensor:
    """tr of each matrix (N, M, M) -> (N,)."""
    return p.diagonal(dim1=-2, dim2=-1).sum(-1)


def feature_consistency(f_x: torch.Tensor, f_tx: torch.Tensor, transform: Transform) -> torch.Tensor:
    """Eq. (7): mean squared error between T_phi(f(x)) and f(t_phi(x)) over V and the channels.

    Where the squares overflow (|difference| beyond about 1.8e19 in float32) the loss is computed on scaled
    differences and saturates at the dtype's largest finite value, flat there (:func:`scribbleseg.losses.
    saturate_squares`); elsewhere it is the plain form, bit for bit."""
    valid = transform.valid(*f_x.shape[-2:], device=f_x.device)              # (h, w)
    diff = transform.grid(f_x) - f_tx                                        # (N, C, h, w)
    err = diff ** 2 * valid                                                  # 0 outside V
    n = (valid.sum() * f_x.shape[0] * f_x.shape[1]).clamp(min=1)
    return saturate_squares(err.sum() / n, diff, n, valid)                   # (7)


def paired(transform: Transform, e_x: torch.Tensor, e_tx: torch.Tensor, h: int, w: int):
    """(T_r E(x) T_c, E(t(x)) on V x V), Eq. (10), for energies / matrices (N, M, M) on an (h, w) grid."""
    return transform.matrix(e_x, h, w), transform.restrict(e_tx, h, w)


def soft_eigenspace_loss(log_a: torch.Tensor, log_b: torch.Tensor, gamma: float = 0.01) -> torch.Tensor:
    """Eq. (9) for log T(P(x)) = log_a and log P(t(x)) = log_b, (N, M', M') rows summing to 1 in exp."""
    a = log_a.exp()
    kl = (a * (log_a - log_b)).sum(-1).mean()                                # KL per row, mean over rows, images
    tr = (trace(a) - trace(log_b.exp())) ** 2                                # |tr - tr|^2 per image
    return kl + gamma * tr.mean()                                            # (9)


def released_eigenspace_loss(e1: torch.Tensor, e2: torch.Tensor, trace_weight: float = 1e-2,
                             scale: float = 30.0) -> torch.Tensor:
    """The released code's eigenspace loss on energies E1 (student), E2 (teacher), (N, M', M'): a scalar.

    With a gradient through E2 (``detach_teacher=False``), where S(E2) underflows to 0 KL's derivative in the
    target, log S(E2) + 1 - log S(E1), is -inf and the softmax's derivative 0: their product made every gradient
    in E2 NaN. Then (only then: a host sync when E2 has a gradient) those entries, whose limit t log t -> 0
    contributes nothing, enter the KL as a constant 0: the same value, finite gradients. Otherwise the
    computation is the plain one, bit for bit.
    """
    s1, s2 = F.softmax(e1, dim=1), F.softmax(e2, dim=1)                     # column-wise softmax S(E)
    target = s2
    if s2.requires_grad and not bool((s2 > 0).all()):
        target = torch.where(s2 > 0, s2, torch.zeros_like(s2))               # = s2; no gradient where s2 = 0
    kl = F.kl_div(F.log_softmax(e1, dim=1), target, reduction="none").mean()  # element-wise mean
    return scale * (kl + trace_weight * (trace(s1) - trace(s2)).abs().mean())  # L1 of tr S(E), mean over images


def eigenspace(p: torch.Tensor, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Lambda_P, U_P of Eq. (8): the k leading eigenvalues (N, k) and unit eigenvectors (N, M, k), complex,
    sorted by decreasing real part. For analysis and figures: ``p`` is detached, no gradient flows (the
    eigenvectors' gradient is not finite for repeated eigenvalues, e.g. one-hot rows of P)."""
    vals, vecs = torch.linalg.eig(p.detach())                                # (N, M), (N, M, M) columns
    order = vals.real.argsort(dim=-1, descending=True)[:, :k]                # (N, k)
    vals = vals.gather(1, order)
    vecs = vecs.gather(2, order[:, None, :].expand(-1, vecs.shape[1], -1))   # (N, M, k)
    return vals, vecs / torch.linalg.vector_norm(vecs, dim=1, keepdim=True)


def explicit_eigenspace_loss(p_a: torch.Tensor, p_b: torch.Tensor, k: int = 8) -> torch.Tensor:
    """Eq. (8) with explicit eigendecomposition of T(P(x)) = p_a and P(t(x)) = p_b (see the module docstring).
    For analysis: computed on detached inputs, the result carries no gradient (:func:`eigenspace`)."""
    la, ua = eigenspace(p_a, k)
    lb, ub = eigenspace(p_b, k)
    vec = 1 - (ua.conj() * ub).sum(1).abs()                                  # (N, k) 1 - |<u_a, u_b>|
    return vec.mean() + (la - lb).abs().pow(2).mean()                        # (8)
