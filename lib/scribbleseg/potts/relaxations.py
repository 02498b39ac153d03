"""Second-order relaxations of the Potts model (Potts relaxations and soft self-labeling, CVPR 2025).

Tables 1 and 2 of the paper. Each potential P(p, q) scores a pair of categorical distributions
(predictions sigma_i, sigma_j in Eq. (4), or pseudo-labels y_i, y_j in Eq. (6)); it is 0 for two
equal one-hot vectors and 1 (or +inf for the log forms) for two different ones.

    bi-linear            P_BL  = 1 - p.q                       ("graph cut"; tight, non-convex)
    quadratic            P_Q   = ||p - q||^2 / 2               ("random walker"; convex)
    normalised quadratic P_NQ  = 1 - p.q / (||p|| ||q||)
    collision CE         P_CCE = -ln p.q                        = -ln(1 - P_BL)
    collision divergence P_CD  = -ln p.q / (||p|| ||q||)        = -ln(1 - P_NQ)
    log-quadratic        P_LQ  = -ln(1 - ||p - q||^2 / 2)      = -ln(1 - P_Q)

All six are functions of three numbers: the dot product p.q and the squared norms ||p||^2, ||q||^2.
``from_gram`` computes them from those (the dense neighbourhood evaluates all pairs through one
Gram matrix y y^T), ``potts(p, q, name)`` from the distributions themselves.

Numerical safety: the log forms are -ln(x + EPS) with EPS = 1e-6, so two different one-hot vectors
give -ln(1e-6) = 13.8 instead of +inf, and no input on the simplex gives NaN (norms of a distribution
are >= 1/sqrt(K) > 0).
"""
from __future__ import annotations

import torch

EPS = 1e-6
NAMES = ("BL", "Q", "NQ", "CCE", "CD", "LQ")  # the paper's Table 1 then Table 2
LOG_FORMS = {"CCE": "BL", "CD": "NQ", "LQ": "Q"}  # Table 2 row -> the Table 1 row it takes -ln(1 - .) of


def check_name(name: str) -> str:
    if name not in NAMES:
        raise ValueError(f"unknown Potts relaxation {name!r}; choose one of {NAMES} (paper Tables 1-2)")
    return name


def from_gram(dot: torch.Tensor, pp: torch.Tensor, qq: torch.Tensor, name: str) -> torch.Tensor:
    """Potential ``name`` from dot = p.q, pp = ||p||^2, qq = ||q||^2 (any broadcastable shapes)."""
    check_name(name)
    if name == "BL":
        return 1 - dot                                     # P_BL = 1 - p.q
    if name == "Q":
        return 0.5 * (pp + qq - 2 * dot)                   # P_Q = ||p - q||^2 / 2
    if name == "NQ":
        return 1 - dot / torch.sqrt(pp * qq)               # P_NQ = 1 - p.q / (||p|| ||q||)
    if name == "CCE":
        return -torch.log(dot + EPS)                       # P_CCE = -ln p.q
    if name == "CD":
        return -torch.log(dot / torch.sqrt(pp * qq) + EPS)  # P_CD = -ln p.q / (||p|| ||q||)
    return -torch.log((1 - 0.5 * (pp + qq - 2 * dot)).clamp_min(0) + EPS)  # P_LQ = -ln(1 - ||p-q||^2/2)


def potts(p: torch.Tensor, q: torch.Tensor, name: str, dim: int = 1) -> torch.Tensor:
    """P_name(p, q) between distributions p and q along ``dim``.

    Args:
        p, q: broadcastable tensors of distributions over ``dim``, e.g. (N, K, H, W) or (K,).
        name: one of ``NAMES``.

    Returns:
        The potential with ``dim`` reduced, e.g. (N, H, W).
    """
    return from_gram((p * q).sum(dim), (p * p).sum(dim), (q * q).sum(dim), name)


def gram_partials(dot: torch.Tensor, pp: torch.Tensor, qq: torch.Tensor, name: str):
    """Partial derivatives (dP/d dot, dP/d pp, dP/d qq) of :func:`from_gram` at (dot, pp, qq).

    Written by hand for the pseudo-label solver's analytic gradient (:func:`scribbleseg.potts.solver.energy_grad`);
    each is a tensor broadcast like the inputs, a float where it is constant, or None where P does not
    depend on that argument (BL and CCE ignore the norms). With r = 1 / (||p|| ||q||), c = dot * r (the
    cosine) and u = 1 - ||p - q||^2 / 2 = 1 - (pp + qq) / 2 + dot:

        name  dP/d dot                dP/d pp                 dP/d qq
        BL    -1                      -                       -
        Q     -1                      1/2                     1/2
        NQ    -r                      c / (2 pp)              c / (2 qq)
        CCE   -1 / (dot + EPS)        -                       -
        CD    -r / (c + EPS)          c / (2 pp (c + EPS))    c / (2 qq (c + EPS))
        LQ    -1 / (u + EPS) [u > 0]  -(dP/d dot) / 2         -(dP/d dot) / 2

    ([u > 0] is the gradient of LQ's ``clamp_min(0)``, as autograd takes it). The tensors returned are new
    (a caller may modify them in place).
    """
    check_name(name)
    if name == "BL":
        return -1.0, None, None
    if name == "Q":
        return -1.0, 0.5, 0.5
    if name == "CCE":
        return -1.0 / (dot + EPS), None, None
    if name == "LQ":
        u = 1 - 0.5 * (pp + qq - 2 * dot)
        d_dot = torch.where(u > 0, -1.0 / (u.clamp_min(0) + EPS), 0.0)
        return d_dot, -0.5 * d_dot, -0.5 * d_dot
    r = torch.mul(pp, qq).rsqrt_()                         # 1 / (||p|| ||q||)
    c = torch.mul(dot, r)                                  # cosine
    if name == "CD":                                       # dP/dc = -1 / (c + EPS); in place: fewer temporaries
        inv = torch.add(c, EPS).reciprocal_()
        r.mul_(inv), c.mul_(inv)                           # r / (c + EPS), c / (c + EPS)
    t = c.mul_(0.5)                                        # -dP/dc * c / 2
    return r.neg_(), t / pp, t / qq
