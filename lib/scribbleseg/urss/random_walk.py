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

Released code (:class:`PositionAttention`, a DANet-style position-attention block): query and key are
1x1 convolutions to ``key_dim`` = 64 channels, value a 1x1 convolution to C channels,
E = Q^T K, A = softmax_rows(E), out = gamma (V A^T) + x with gamma learnable, initialised to 0, one step.
Its "P" for the self-supervision is the pre-softmax energy E (see :mod:`scribbleseg.urss.self_supervision`).

Both modules map f (N, C, h, w) to (f^L (N, C, h, w), P (N, M, M), E (N, M, M)), M = h w, positions
flattened row-major; P[n, i, j] is the transition from position i to position j.
"""
from __future__ import annotations

import torch
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


class RandomWalk(nn.Module):
    """Eq. (5)-(6) with a learnable alpha (initial value ``alpha``). forward(f) -> (f^L, P, E)."""

    def __init__(self, alpha: float = 0.0):
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))

    def forward(self, f: torch.Tensor):
        p, energy = transition_matrix(f)
        return walk(f, p, self.alpha), p, energy


class PositionAttention(nn.Module):
    """The released code's block: out = gamma V A^T + x, A = softmax_rows(Q^T K). forward(x) -> (out, A, E)."""

    def __init__(self, channels: int, key_dim: int = 64):
        super().__init__()
        self.query = nn.Conv2d(channels, key_dim, 1)
        self.key = nn.Conv2d(channels, key_dim, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor):
        q, k, v = self.query(x).flatten(2), self.key(x).flatten(2), self.value(x).flatten(2)  # (N, d, M), (N, C, M)
        with torch.autocast(x.device.type, enabled=False):
            q, k, v = _full(q), _full(k), _full(v)
            energy = torch.bmm(q.transpose(1, 2), k)                         # (N, M, M) E_ij = q_i . k_j
            a = torch.softmax(energy, dim=-1)                                # rows sum to 1
            out = torch.bmm(v, a.transpose(1, 2)).reshape(x.shape)           # (V A^T)_i = sum_j A_ij v_j
        return self.gamma * out + x, a, energy
