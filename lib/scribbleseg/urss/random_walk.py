"""Network-embedded random walk of URSS (Pan et al., ICCV 2021), Sec. 3.1, Eq. (4)-(6), and the
released code's position-attention block that stands in for it.

    z     = alpha P y + (1 - alpha) y                         (4)  a random-walk step
    f^L   = alpha P f^{L-1} + f^{L-1}                         (5)  embedded before the classifier
    P     = softmax_rows(f^{L-1} f^{L-1 T})                   (6)  f^{L-1} flattened to (MN, K)

so P[i, j] = exp(f_i . f_j) / sum_k exp(f_i . f_k) (the "similarity measurement module", SMM), rows
summing to 1, and (P f)_i = sum_j P[i, j] f_j. alpha is learnable; the paper gives no initial value:
ours is a constructor argument (default 0: the block starts as the identity). There is no temperature
in (6): with wide features the softmax is nearly one-hot (P close to I) until the features are trained.
The energies f_i . f_j and the softmax are computed in float32 even under autocast.

P f is attention with query = key = value = f^T and scale 1: training computes it with PyTorch's fused
``scaled_dot_product_attention`` (:func:`fused_walk`), which never materialises the (N, M, M) P
(equal to :func:`walk` with :func:`transition_matrix` to float64 rounding, tests/test_urss_fast.py).
Measured (shared 2-core CPU, 1 thread, torch 2.14.1; N = 16, M = 1024, C = 48, forward + backward):
0.16-0.22 s against 0.43-0.50 s for bmm + softmax + bmm, with contiguous (N, M, C) inputs (non-contiguous:
0.37-0.45 s); the released block alike (:func:`attention`). P and E are built only when asked
(``matrices=True``: analysis, figures).

Released code (:class:`PositionAttention`, a DANet-style position-attention block): query and key are
1x1 convolutions to ``key_dim`` = 64 channels, value a 1x1 convolution to C channels,
E = Q^T K, A = softmax_rows(E), out = gamma (V A^T) + x with gamma learnable, initialised to 0, one step.
Its "P" for the self-supervision is the pre-softmax energy E (see :mod:`scribbleseg.urss.self_supervision`).

Both modules: ``outputs(f, matrices)`` -> {"features": f^L (N, C, h, w), "query" q, "key" k (N, M, d)
float32 with E = q k^T (one row per position; the paper's walk gives no "key": k is q, E = q q^T), and with
``matrices`` "transition" P, "energy" E (N, M, M)};
``forward(f)`` -> (f^L, P, E). M = h w, positions flattened row-major; P[n, i, j] is the transition from
position i to position j.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _full(t: torch.Tensor) -> torch.Tensor:
    """float16 / bfloat16 -> float32; float32 / float64 unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def transition_matrix(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (6): (P, E) for features f (N, C, h, w); E = f^T f (N, M, M) and P its row-wise softmax."""
    with torch.autocast(f.device.type, enabled=False):
        fl = _full(f.flatten(2))                                             # (N, C, M)
        energy = torch.bmm(fl.transpose(1, 2), fl)                          # (N, M, M) f_i . f_j
        return torch.softmax(energy, dim=-1), energy                         # (6) rows sum to 1


def walk(f: torch.Tensor, p: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """Eq. (5): alpha P f + f for f (N, C, h, w) and P (N, M, M)."""
    fl = f.flatten(2).to(p.dtype)                                            # (N, C, M)
    pf = torch.bmm(fl, p.transpose(1, 2))                                    # (N, C, M): (P f)_i = sum_j P_ij f_j
    return (alpha * pf + fl).reshape(f.shape)                                # (5)


def rows(t: torch.Tensor) -> torch.Tensor:
    """(N, d, h, w) or (N, d, M) -> (N, M, d) contiguous, one row per position, in float32 for half inputs: the
    layout of the fused attention's and the self-supervision's factors."""
    return _full(t.flatten(2)).transpose(1, 2).contiguous()


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax_rows(q k^T) v without building it, by the fused scaled_dot_product_attention (scale 1):
    q, k (N, M, d), v (N, M, C) contiguous (:func:`rows`; other layouts run about 2x slower) -> (N, M, C),
    out[:, i] = sum_j softmax_j(q_i . k_j) v_j. PyTorch's CPU flash kernel needs d = C (else it falls back to
    the explicit softmax): on the CPU, zero channels pad v (C < d) or q and k (C > d, q.k unchanged) up to
    the other when that at most doubles them (the released block: d = 64, C = 48 on the cpu profile)."""
    d, c = q.shape[-1], v.shape[-1]
    if q.device.type != "cpu" or d == c or max(d, c) > 2 * min(d, c):
        return F.scaled_dot_product_attention(q, k, v, scale=1.0)
    if c < d:
        return F.scaled_dot_product_attention(q, k, F.pad(v, (0, d - c)), scale=1.0)[..., :c]
    return F.scaled_dot_product_attention(F.pad(q, (0, c - d)), F.pad(k, (0, c - d)), v, scale=1.0)


def fused_walk(f: torch.Tensor, alpha: torch.Tensor | float, ft: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. (5)-(6) without P: alpha P f + f = alpha attention(f, f, f) + f for f (N, C, h, w), in float32
    under autocast (as :func:`transition_matrix`); ft: f's :func:`rows` when already at hand."""
    with torch.autocast(f.device.type, enabled=False):
        ft = rows(f) if ft is None else ft                                   # (N, M, C)
        pf = attention(ft, ft, ft)                                           # (N, M, C) (P f)_i, P of (6)
        return (alpha * pf + ft).transpose(1, 2).reshape(f.shape)            # (5)


class RandomWalk(nn.Module):
    """Eq. (5)-(6) with a learnable alpha (initial value ``alpha``). forward(f) -> (f^L, P, E)."""

    def __init__(self, alpha: float = 0.0):
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))

    def outputs(self, f: torch.Tensor, matrices: bool = False, features: bool = True) -> dict[str, torch.Tensor]:
        """{"query"} = :func:`rows` of f (E = f^T f: the key is the query, so no "key" entry; one tensor, which
        stays one through a DDP wrapper's output hooks, so the loss sees q is k on every rank), + "features" f^L
        unless ``features`` is False, +
        "transition" P and "energy" E with ``matrices`` (then f^L = :func:`walk` with that P, else
        :func:`fused_walk`)."""
        ft = rows(f)                                                         # (N, M, C) q = k = f^{L-1}
        out = {"query": ft}
        if matrices:
            out["transition"], out["energy"] = transition_matrix(f)         # (6) (N, M, M)
            if features:
                out["features"] = walk(f, out["transition"], self.alpha)    # (5)
        elif features:
            out["features"] = fused_walk(f, self.alpha, ft)                 # (5)-(6), P never built
        return out

    def forward(self, f: torch.Tensor):
        out = self.outputs(f, matrices=True)
        return out["features"], out["transition"], out["energy"]


class PositionAttention(nn.Module):
    """The released code's block: out = gamma V A^T + x, A = softmax_rows(Q^T K). forward(x) -> (out, A, E)."""

    def __init__(self, channels: int, key_dim: int = 64):
        super().__init__()
        self.query = nn.Conv2d(channels, key_dim, 1)
        self.key = nn.Conv2d(channels, key_dim, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def outputs(self, x: torch.Tensor, matrices: bool = False, features: bool = True) -> dict[str, torch.Tensor]:
        """{"query" q, "key" k} (N, M, d) float32 (:func:`rows`, E = q k^T), + "features" (the block's output)
        unless ``features`` is False, + "transition" A and "energy" E with ``matrices`` (else A is never built)."""
        q, k = self.query(x), self.key(x)                                    # (N, d, h, w)
        v = self.value(x) if features else None                              # (N, C, h, w)
        with torch.autocast(x.device.type, enabled=False):
            q, k = rows(q), rows(k)                                          # (N, M, d)
            out = {"query": q, "key": k}
            if matrices:
                out["energy"] = torch.bmm(q, k.transpose(1, 2))              # (N, M, M) E_ij = q_i . k_j
                out["transition"] = torch.softmax(out["energy"], dim=-1)     # A, rows sum to 1
            if features:                                                     # (A V^T)_i = sum_j A_ij v_j, (N, M, C)
                va = torch.bmm(out["transition"], rows(v)) if matrices else attention(q, k, rows(v))
                out["features"] = self.gamma * va.transpose(1, 2).reshape(x.shape) + x
        return out

    def forward(self, x: torch.Tensor):
        out = self.outputs(x, matrices=True)
        return out["features"], out["transition"], out["energy"]
