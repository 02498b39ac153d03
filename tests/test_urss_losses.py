"""URSS: entropy (Eq. 2-3), pseudo-boundaries, random walk (Eq. 4-6), transforms (Eq. 10),
self-supervision (Eq. 7-9)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scribbleseg.constants import IGNORE_INDEX
from scribbleseg.urss import boundaries as boundaries_module
from scribbleseg.urss.boundaries import (batch_boundaries, batch_boundaries_cached, cache_info, cached_boundaries,
                                         clear_cache, pseudo_boundaries, split_boundaries)
from scribbleseg.urss.entropy import boundary_to_grid, entropy, entropy_map, soft_entropy
from scribbleseg.urss.random_walk import PositionAttention, RandomWalk, transition_matrix, walk
from scribbleseg.urss.self_supervision import (eigenspace, explicit_eigenspace_loss, feature_consistency, paired,
                                               released_eigenspace_loss, soft_eigenspace_loss, trace)
from scribbleseg.urss.transforms import Transform, random_transform, shift

U = IGNORE_INDEX
D = torch.float64


def test_entropy_and_soft_entropy_hand_computed():
    logits = torch.zeros(1, 2, 1, 3)                               # p = (1/2, 1/2): entropy log 2
    logits[0, :, 0, 1] = torch.tensor([math.log(3.0), 0.0])        # p = (3/4, 1/4)
    logits[0, :, 0, 2] = torch.tensor([100.0, 0.0])                # p ~ (1, 0): entropy ~ 0
    h1 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert entropy_map(logits)[0, 0].tolist() == pytest.approx([math.log(2), h1, 0.0], abs=1e-6)
    assert entropy(logits).item() == pytest.approx((math.log(2) + h1) / 3, abs=1e-6)           # (2)
    boundary = torch.tensor([[[True, False, False]]])
    assert soft_entropy(logits, boundary).item() == pytest.approx(h1 / 2, abs=1e-6)            # (3): B excluded
    scribble = torch.tensor([[[0, U, U]]])                         # ours (option): the scribbled boundary pixel kept
    assert soft_entropy(logits, boundary, scribble).item() == pytest.approx((math.log(2) + h1) / 3, abs=1e-6)


def test_soft_entropy_all_boundary_is_zero_not_nan():
    z = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = soft_entropy(z, torch.ones(2, 4, 4, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(z.grad).all()
    zz = torch.full((1, 2, 1, 1), -1e4, requires_grad=True)
    zz.data[0, 0] = 1e4                                            # p underflows to 0: still finite
    entropy(zz).backward()
    assert torch.isfinite(zz.grad).all()


def test_boundary_to_grid_threshold():
    b = torch.zeros(1, 4, 4, dtype=torch.bool)
    b[0, 0, :2] = True                                             # cell (0, 0): 2 of 4 pixels
    b[0, 2, 2] = True                                              # cell (1, 1): 1 of 4
    assert boundary_to_grid(b, (2, 2)).tolist() == [[[True, False], [False, False]]]
    assert boundary_to_grid(b, (2, 2), threshold=0.25).tolist() == [[[True, False], [False, True]]]


def test_pseudo_boundaries_follow_colour_edges():
    img = np.zeros((32, 32, 3), np.uint8)
    img[:, 16:] = 200
    b = pseudo_boundaries(img, n_segments=4)
    assert b.shape == (32, 32) and b.dtype == bool
    assert b[:, 15:17].all()                                       # thick: both sides of the colour edge
    imgs = np.stack([img, img[:, ::-1]])
    table = split_boundaries(imgs, n_segments=4)
    rgb = torch.from_numpy(imgs.copy()).permute(0, 3, 1, 2).float()
    assert (batch_boundaries(rgb, n_segments=4).numpy() == table).all()



def _blobs(n=4, h=32, w=40, seed=0):
    """n smooth, left-right asymmetric colour images (H, W, 3) uint8 (non-square: catches axis mix-ups)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    out = np.zeros((n, h, w, 3))
    for i in range(n):
        for _ in range(5):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w * 0.7), rng.uniform(4, 10)
            out[i][(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    return (out + rng.uniform(0, 8, out.shape)).astype(np.uint8)


def test_cached_boundaries_are_the_mirrored_boundaries_of_the_stored_image():
    clear_cache()
    imgs = _blobs()
    flips = np.array([True, False, True, False])
    shown = np.where(flips[:, None, None, None], imgs[:, :, ::-1], imgs)          # what to_batch feeds the network
    rgb = torch.from_numpy(shown).permute(0, 3, 1, 2).float()
    got = batch_boundaries_cached(rgb, torch.from_numpy(flips), n_segments=8)
    assert got.shape == (4, 32, 40) and got.dtype == torch.bool
    for i in range(4):
        b = pseudo_boundaries(imgs[i], n_segments=8)
        assert np.array_equal(got[i].numpy(), np.flip(b, 1) if flips[i] else b)
    assert cache_info()["misses"] == 4 and cache_info()["hits"] == 0 and cache_info()["entries"] == 4
    again = batch_boundaries_cached(rgb, flips, n_segments=8)                   # a later epoch: all hits
    assert torch.equal(again, got) and cache_info()["hits"] == 4 and cache_info()["misses"] == 4
    unflipped = batch_boundaries_cached(torch.from_numpy(imgs).permute(0, 3, 1, 2).float(), np.zeros(4, bool),
                                        n_segments=8)                            # same stored images, other flips
    assert cache_info()["hits"] == 8 and torch.equal(unflipped, torch.from_numpy(split_boundaries(imgs, 8)))
    assert torch.equal(unflipped[0], got[0].flip(-1)) and torch.equal(unflipped[1], got[1])
    # per-batch recomputation gives B(flip(x)) instead: SLIC is not mirror-equivariant (the documented difference)
    per_batch = batch_boundaries(rgb, n_segments=8)
    assert torch.equal(per_batch[~torch.from_numpy(flips)], got[~torch.from_numpy(flips)])
    cached_boundaries(imgs[0], n_segments=12)                                   # another setting: another entry
    assert cache_info()["entries"] == 5 and cache_info()["misses"] == 5
    out = cached_boundaries(imgs[0], n_segments=8)
    out[:] = True                                                               # callers get fresh arrays
    assert np.array_equal(cached_boundaries(imgs[0], n_segments=8), pseudo_boundaries(imgs[0], n_segments=8))
    with pytest.raises(ValueError, match="flip"):
        batch_boundaries_cached(rgb, flips[:3], n_segments=8)
    with pytest.raises(ValueError, match="uint8"):
        cached_boundaries(imgs[0].astype(np.float32))
    clear_cache()
    assert cache_info() == {"entries": 0, "hits": 0, "misses": 0, "bytes": 0}


def test_boundary_cache_evicts_least_recently_used(monkeypatch):
    clear_cache()
    imgs = _blobs(3, 16, 16)
    monkeypatch.setattr(boundaries_module, "CACHE_BYTES", 2 * 16 * 16 // 8)      # room for two packed entries
    for im in imgs:
        cached_boundaries(im, n_segments=4)
    assert cache_info()["entries"] == 2 and cache_info()["bytes"] == 64
    cached_boundaries(imgs[2], n_segments=4)                                    # most recent: still there
    cached_boundaries(imgs[0], n_segments=4)                                    # evicted: recomputed
    assert cache_info()["hits"] == 1 and cache_info()["misses"] == 4 and cache_info()["entries"] == 2
    clear_cache()

def test_transition_rows_sum_to_one_and_walk_is_equation_5():
    torch.manual_seed(0)
    f = torch.randn(2, 3, 4, 5, dtype=D)
    p, e = transition_matrix(f)
    assert torch.allclose(p.sum(-1), torch.ones(2, 20, dtype=D)) and (p > 0).all()
    fl = f[1].reshape(3, 20).T                                     # (MN, K)
    assert torch.allclose(p[1], torch.softmax(fl @ fl.T, dim=1))   # (6) softmax along rows
    out, p2, e2 = RandomWalk(alpha=0.3).double()(f)
    expect = 0.3 * p[1] @ fl + fl                                  # (5) on (MN, K)
    assert torch.allclose(out[1].reshape(3, 20).T, expect) and torch.equal(p2, p) and torch.equal(e2, e)


def test_random_walk_gradcheck_including_alpha():
    torch.manual_seed(1)
    f = torch.randn(1, 3, 3, 3, dtype=D, requires_grad=True)
    alpha = torch.tensor(0.4, dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: walk(a, transition_matrix(a)[0], b), (f, alpha))
    rw = RandomWalk(0.5).double()
    assert torch.autograd.gradcheck(lambda a: rw(a)[0], (f,))
    rw(f)[0].sum().backward()
    assert rw.alpha.grad is not None and torch.isfinite(rw.alpha.grad)


def test_position_attention_matches_its_written_formula():
    torch.manual_seed(2)
    pam = PositionAttention(6).double()
    x = torch.randn(2, 6, 3, 4, dtype=D)
    out, a, e = pam(x)
    assert pam.query.out_channels == 64 and pam.key.out_channels == 64 and pam.value.out_channels == 6
    assert torch.equal(out, x)                                     # gamma initialised to 0
    with torch.no_grad():
        pam.gamma.fill_(0.7)
    out, a, e = pam(x)
    for n in range(2):
        q = pam.query(x)[n].reshape(64, 12)
        k = pam.key(x)[n].reshape(64, 12)
        v = pam.value(x)[n].reshape(6, 12)
        energy = q.T @ k                                           # E = Q^T K
        attn = torch.exp(energy) / torch.exp(energy).sum(1, keepdim=True)
        assert torch.allclose(e[n], energy) and torch.allclose(a[n], attn)
        assert torch.allclose(out[n].reshape(6, 12), 0.7 * v @ attn.T + x[n].reshape(6, 12))


def _toy_features(x, weight, stride):
    """A per-pixel (1x1) function of the input, average-pooled by ``stride``: exactly flip / shift equivariant."""
    return F.avg_pool2d(torch.tanh(F.conv2d(x, weight)), stride)


@pytest.mark.parametrize("phi", [Transform("flip"), Transform("translate", 2, 0), Transform("translate", 0, -3),
                                 Transform("translate", -1, 1), Transform("crop", 2), Transform("crop", -3)])
def test_transforms_commute_with_the_transition_matrix_exactly(phi):
    torch.manual_seed(3)
    x, weight, s = torch.randn(2, 3, 24, 32, dtype=D), torch.randn(5, 3, 1, 1, dtype=D), 4
    f_x, f_tx = _toy_features(x, weight, s), _toy_features(phi.image(x, s), weight, s)
    h, w = f_x.shape[-2:]
    valid = phi.valid(h, w)
    assert torch.allclose(phi.grid(f_x) * valid, f_tx * valid)               # T(f(x)) = f(t(x)) on V
    assert feature_consistency(f_x, f_tx, phi).item() < 1e-24                 # (7) = 0
    (p_x, e_x), (p_tx, e_tx) = transition_matrix(f_x), transition_matrix(f_tx)
    a, b = paired(phi, e_x, e_tx, h, w)
    t_r, t_c = phi.computing_matrices(h, w, D)
    assert torch.allclose(t_r @ e_x @ t_c, a) and torch.equal(t_c, t_r.T)    # (10) dense == indexed
    la, lb = torch.log_softmax(a, -1), torch.log_softmax(b, -1)
    assert torch.allclose(la, lb)                                             # T(P(x)) = P(t(x))
    assert abs(soft_eigenspace_loss(la, lb, gamma=1.0).item()) < 1e-10        # (9) = 0
    if phi.kind == "flip":                                                    # permutation: T(P) = T_r P T_r^T
        assert torch.allclose(t_r @ p_x @ t_r.T, p_tx) and torch.allclose(t_r, t_r.T)
        assert explicit_eigenspace_loss(a.softmax(-1), p_tx, k=4).item() < 1e-8   # (8) = 0
    else:
        assert len(a[0]) == valid.sum() < h * w


def test_shift_and_translation_directions():
    x = torch.arange(9.0).reshape(1, 1, 3, 3)
    assert shift(x, 1, 0)[0, 0].tolist() == [[0, 0, 0], [0, 1, 2], [3, 4, 5]]      # content moves down
    assert shift(x, 0, -1)[0, 0].tolist() == [[1, 2, 0], [4, 5, 0], [7, 8, 0]]     # content moves left
    assert Transform("translate", 1, 0).valid(3, 3).tolist() == [[False] * 3, [True] * 3, [True] * 3]
    assert Transform("flip").image(x, 1)[0, 0, 0].tolist() == [2, 1, 0]


def test_released_translation_is_a_vertical_crop_and_compares_the_corner_blocks():
    """Released: t(x) keeps the top rows (x[:, :, 0:385] of 465) or the bottom rows (x[:, :, 80:465]); P(x) is
    compared on its top-left or bottom-right block (row-major positions of the kept rows)."""
    x = torch.arange(12.0 * 2).reshape(1, 1, 12, 2)                          # 12 x 2 pixels, stride 4: a 3 x 2 grid
    top, bottom = Transform("crop", 1), Transform("crop", -1)
    assert torch.equal(top.image(x, 4), x[..., :8, :]) and torch.equal(bottom.image(x, 4), x[..., 4:, :])
    assert top.target_shape(3, 2) == (2, 2) and bottom.valid(3, 2).tolist() == [[True, True], [True, True]]
    p = torch.arange(36.0).reshape(1, 6, 6)                                  # M = 6 positions
    assert torch.equal(top.matrix(p, 3, 2), p[:, :4, :4])                    # the released feature[:, 0:h_s, 0:w_s]
    assert torch.equal(bottom.matrix(p, 3, 2), p[:, 2:, 2:])                 # the released feature[:, h-h_s:, w-w_s:]
    q = torch.arange(16.0).reshape(1, 4, 4)                                  # P(t(x)) is compared whole
    assert torch.equal(top.restrict(q, 3, 2), q) and torch.equal(bottom.restrict(q, 3, 2), q)
    f = torch.arange(6.0).reshape(1, 1, 3, 2)
    assert bottom.grid(f)[0, 0].tolist() == [[2, 3], [4, 5]]
    draws = [random_transform(s, 59, 59, "translate", translation="crop") for s in range(20)]
    assert {d.dy for d in draws} == {10, -10} and all(d.kind == "crop" for d in draws)  # 80 px of 465 at stride 8
    assert random_transform(0, 32, 32, "translate", max_shift=3, translation="crop").dy in (3, -3)
    with pytest.raises(ValueError, match="translation"):
        random_transform(0, 8, 8, translation="wrap")
    with pytest.raises(ValueError, match="crop drops rows"):
        Transform("crop", 0, 1)


def test_random_transform_is_drawn_from_the_step():
    draws = [random_transform(s, 16, 16) for s in range(40)]
    assert draws == [random_transform(s, 16, 16) for s in range(40)]
    assert {d.kind for d in draws} == {"flip", "translate"}
    moves = [d for d in draws if d.kind == "translate"]
    assert all((d.dy == 0) != (d.dx == 0) and 1 <= abs(d.dy + d.dx) <= 4 for d in moves)
    assert all(random_transform(s, 16, 16, "flip").kind == "flip" for s in range(5))
    assert random_transform(3, 16, 16, "translate", max_shift=1) in {Transform("translate", a, b) for a, b in
                                                                    [(1, 0), (-1, 0), (0, 1), (0, -1)]}
    with pytest.raises(ValueError, match="transform"):
        random_transform(0, 4, 4, "rotate")
    with pytest.raises(ValueError, match="kind"):
        Transform("rotate")


def test_trace_is_the_sum_of_eigenvalues():
    torch.manual_seed(4)
    p, _ = transition_matrix(torch.randn(2, 4, 3, 3, dtype=D))
    vals, vecs = eigenspace(p)
    assert torch.allclose(trace(p), vals.sum(-1).real) and vals.sum(-1).imag.abs().max() < 1e-10
    assert vals[:, 0].real == pytest.approx(1.0)                              # a stochastic matrix: leading 1
    u = vecs[:, :, 0]
    assert torch.allclose(torch.einsum("nij,nj->ni", p.to(u.dtype), u), u)   # P u = u
    assert explicit_eigenspace_loss(p, p.flip(0), k=3).item() > 1e-3          # different matrices: > 0


def test_soft_eigenspace_loss_hand_computed_and_gradcheck():
    pa = torch.tensor([[[0.5, 0.5], [0.25, 0.75]]], dtype=D)
    pb = torch.tensor([[[0.75, 0.25], [0.5, 0.5]]], dtype=D)
    kl = (0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25) + 0.25 * math.log(0.25 / 0.5)
          + 0.75 * math.log(0.75 / 0.5)) / 2                                 # mean over rows of KL(a_i || b_i)
    tr = (0.5 + 0.75) - (0.75 + 0.5)
    assert soft_eigenspace_loss(pa.log(), pb.log(), gamma=0.3).item() == pytest.approx(kl + 0.3 * tr ** 2)
    pb2 = torch.tensor([[[0.9, 0.1], [0.5, 0.5]]], dtype=D)
    with_trace, without = (soft_eigenspace_loss(pa.log(), pb2.log(), g).item() for g in (2.0, 0.0))
    assert with_trace - without == pytest.approx(2.0 * (1.25 - 1.4) ** 2)
    torch.manual_seed(5)
    e1 = torch.randn(2, 5, 5, dtype=D, requires_grad=True)
    e2 = torch.randn(2, 5, 5, dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b: soft_eigenspace_loss(torch.log_softmax(a, -1), torch.log_softmax(b, -1), 0.5), (e1, e2))
    assert torch.autograd.gradcheck(lambda a, b: released_eigenspace_loss(a, b), (e1, e2))


def test_released_eigenspace_loss_matches_its_written_formula():
    rng = np.random.default_rng(6)
    e1, e2 = rng.normal(size=(2, 4, 4)), rng.normal(size=(2, 4, 4))
    q = np.exp(e1) / np.exp(e1).sum(1, keepdims=True)                       # softmax over dim 1 (columns)
    p = np.exp(e2) / np.exp(e2).sum(1, keepdims=True)
    kl = np.mean(p * (np.log(p) - np.log(q)))                                 # KLDiv, element-wise mean
    l1 = np.mean(np.abs(np.trace(q, axis1=1, axis2=2) - np.trace(p, axis1=1, axis2=2)))  # traces of the softmaxes
    got = released_eigenspace_loss(torch.from_numpy(e1), torch.from_numpy(e2)).item()
    assert got == pytest.approx(30 * (kl + 1e-2 * l1))


def test_released_eigenspace_trace_is_taken_on_the_column_softmax():
    """A 2 x 2 case by hand: E1 = [[0, 0], [ln 3, 0]] has column softmax S1 = [[1/4, 1/2], [3/4, 1/2]] (tr 3/4);
    E2 = 0 has S2 = 1/2 everywhere (tr 1). KL element-wise mean = (1/2 ln 2 + 1/2 ln 2/3) / 4 = ln(4/3) / 8;
    the raw energies' traces are both 0, so a trace on the energies would give no trace term."""
    e1 = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0]]], dtype=D)
    e2 = torch.zeros(1, 2, 2, dtype=D)
    expect = 30 * (math.log(4 / 3) / 8 + 1e-2 * abs(0.75 - 1.0))
    assert released_eigenspace_loss(e1, e2).item() == pytest.approx(expect, rel=1e-12)
