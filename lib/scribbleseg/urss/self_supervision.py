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

Training (:func:`factored_eigenspace_loss`) computes both losses from the factors of the energies, E = q k^T
(q = k = f^{L-1} for Eq. 6), selected by Eq. (10) (:func:`paired_factors`), one image at a time with the
gradient written by hand (no (N, M, M) tensor, no indexing of one); equal to the indexed forms above to
float64 rounding (tests/test_urss_fast.py). Measured (shared 2-core CPU, 1 thread, torch 2.14.1; N = 16,
|V| = 1024, d = 48, forward + backward): Eq. (9) 0.14-0.23 s against 0.58-0.98 s for the log-softmaxes of the
indexed energies through autograd; the released loss (teacher detached) 0.08-0.18 s against 0.58-1.09 s.

Shapes: f (N, C, h, w); matrices (N, M, M) or (N, |V|, |V|); factors (N, M, d). Every loss returns a scalar.
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


def paired_factors(transform: Transform, x: tuple[torch.Tensor, torch.Tensor], tx: tuple[torch.Tensor, torch.Tensor],
                   h: int, w: int) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """:func:`paired` for energies E = q k^T given by their factors, without building E: x = (q, k) of x
    (N, h w, d), tx = (q, k) of t(x) (N, M', d), one row per position. T_r E(x) T_c = q_src k_src^T and
    E(t(x)) on V = q_V k_V^T, so (10) selects rows: ((q_src, k_src), (q_V, k_V)), each (N, |V|, d), contiguous
    (q is k stays so)."""
    dst, src = transform.index(h, w, x[0].device)

    def pick(qk, idx):
        q = qk[0][:, idx]
        return q, (q if qk[1] is qk[0] else qk[1][:, idx])
    return pick(x, src), pick(tx, dst)                                       # (10)


def _image_kl_trace(qa, ka, qb, kb, buf, kl_scale: float, tr_scale: float, power: int, grads: list):
    """One image of :class:`_FactoredEigenspace`: (sum_i KL_i, |tr a - tr b|^power), and d loss / d (qa, ka, qb,
    kb) written into ``grads`` where it holds (V, d) tensors (None for k where k is q: then q's holds both).
    a = softmax_rows(qa ka^T), b likewise; factors (V, d). buf: three (V, V) work matrices."""
    e1, e2, ua = buf
    torch.mm(qa, ka.T, out=e1)                                               # E_a (V, V)
    torch.mm(qb, kb.T, out=e2)                                               # E_b
    ma, mb = e1.amax(-1), e2.amax(-1)
    sa = torch.sub(e1, ma[:, None], out=ua).exp_().sum(-1)                   # ua = a * sa, sa = sum_j exp(E_a - max)
    e1.sub_(e2)                                                              # E_a - E_b
    ub = e2.sub_(mb[:, None]).exp_()                                         # ub = b * sb
    sb = ub.sum(-1)
    t = e1.mul_(ua)                                                          # sa * a (E_a - E_b)
    ts = t.sum(-1) / sa                                                      # sum_j a_ij (E_a - E_b)_ij
    kl = ts - (ma + sa.log()) + (mb + sb.log())                              # KL_i = sum_j a (log a - log b)
    ad, bd = ua.diagonal() / sa, ub.diagonal() / sb                          # a_ii, b_ii
    dt = ad.sum() - bd.sum()                                                 # tr a - tr b
    c = tr_scale * (2 * dt if power == 2 else torch.sign(dt))                # d |dt|^power / d tr a
    if grads[2] is not None:  # dE_b = s (b - a) + c b_ii (b - e_i) per row i
        ub.mul_(((kl_scale + c * bd) / sb)[:, None]).addcmul_(ua, (-kl_scale / sa)[:, None])
        ub.diagonal().sub_(c * bd)
        _factor_grads(qb, kb, ub, grads[2], grads[3])
    if grads[0] is not None:  # dE_a = s a (log a - log b - KL_i) + c a_ii (e_i - a); the row constants cancel:
        t.mul_((kl_scale / sa)[:, None]).addcmul_(ua, (-(kl_scale * ts + c * ad) / sa)[:, None])  # s a (D - sum a D)
        t.diagonal().add_(c * ad)
        _factor_grads(qa, ka, t, grads[0], grads[1])
    return kl.sum(), dt.abs() ** power


def _factor_grads(q, k, de, gq, gk) -> None:
    """E = q k^T: dq = dE k, dk = dE^T q into gq, gk (V, d); gk None (k is q): both into gq."""
    torch.mm(de, k, out=gq)
    if gk is None:
        gq.addmm_(de.T, q)
    else:
        torch.mm(de.T, q, out=gk)


class _FactoredEigenspace(torch.autograd.Function):
    """kl_scale sum_{n, i} KL(a_i || b_i) + tr_scale sum_n |tr a - tr b|^power, a = softmax_rows(qa ka^T) and
    b = softmax_rows(qb kb^T) per image, factors (N, V, d). One image at a time in three (V, V) buffers (no
    (N, V, V) tensor is built); the scalar loss's gradient is computed with its value, backward scales it:
    dKL/dE_a = a (log a - log b - KL_i), dKL/dE_b = b - a per row, d tr a / dE_a[i] = a_ii (e_i - a_i)."""

    @staticmethod
    def forward(ctx, qa, ka, qb, kb, kl_scale: float, tr_scale: float, power: int):
        want = ctx.needs_input_grad
        grads = []
        for q, k, w in ((qa, ka, want[0] or want[1]), (qb, kb, want[2] or want[3])):
            grads += [torch.empty_like(q) if w else None, torch.empty_like(k) if w and k is not q else None]
        v = qa.shape[1]
        buf = [qa.new_empty(v, v) for _ in range(3)]
        kl, tr = qa.new_zeros(()), qa.new_zeros(())
        for n in range(qa.shape[0]):
            q1, q2 = qa[n], qb[n]
            k_, t_ = _image_kl_trace(q1, q1 if ka is qa else ka[n], q2, q2 if kb is qb else kb[n], buf,
                                     kl_scale, tr_scale, power, [None if g is None else g[n] for g in grads])
            kl, tr = kl + k_, tr + t_
        ctx.which = [g is not None for g in grads]
        ctx.save_for_backward(*[g for g in grads if g is not None])
        return kl * kl_scale + tr * tr_scale

    @staticmethod
    def backward(ctx, g):
        saved = iter(ctx.saved_tensors)
        return (*[next(saved) * g if w else None for w in ctx.which], None, None, None)


def factored_eigenspace_loss(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor],
                             gamma: float = 0.01, loss: str = "paper") -> torch.Tensor:
    """Eq. (9) (``loss="paper"``) or the released loss on the energies E_a = q_a k_a^T (student, T(E(x))) and
    E_b = q_b k_b^T (teacher, E(t(x))) given by factors (N, V, d) (:func:`paired_factors`), without building
    them: equal to :func:`soft_eigenspace_loss` of their log-softmaxes / :func:`released_eigenspace_loss` of
    them (tests/test_urss_fast.py). Released: its column softmax is the row softmax of E^T = k q^T, and its
    KLDiv(log S(E_a), S(E_b)) is KL(S(E_b) || S(E_a)), so the pairs are transposed and swapped."""
    with torch.autocast(a[0].device.type, enabled=False):
        n, v = a[0].shape[:2]
        if loss == "paper":                                                  # (9): row mean, gamma |.|^2 mean
            return _FactoredEigenspace.apply(*a, *b, 1.0 / (n * v), gamma / n, 2)
        scale = 30.0                                                         # released: 30 (KL mean + 1e-2 |tr|)
        return _FactoredEigenspace.apply(b[1], b[0], a[1], a[0], scale / (n * v * v), scale * 1e-2 / n, 1)


def soft_eigenspace_loss(log_a: torch.Tensor, log_b: torch.Tensor, gamma: float = 0.01) -> torch.Tensor:
    """Eq. (9) for log T(P(x)) = log_a and log P(t(x)) = log_b, (N, M', M') rows summing to 1 in exp."""
    a = log_a.exp()
    kl = (a * (log_a - log_b)).sum(-1).mean()                                # KL per row, mean over rows, images
    tr_b = log_b.diagonal(dim1=-2, dim2=-1).exp().sum(-1)                    # tr P(t(x)): its diagonal only
    tr = (trace(a) - tr_b) ** 2                                              # |tr - tr|^2 per image
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
