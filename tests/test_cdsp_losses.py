"""CDSP stage 2: basic supervision (Eq. 7-9), LoRM (Eq. 10-13), distance maps (Eq. 14, 16), DEL (Eq. 15, 17, 18)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scribbleseg.cdsp.distance_entropy import distance_entropy, distance_entropy_loss, entropy_map
from scribbleseg.cdsp.distance_maps import distance_maps, foreground_boundary, pseudo_label_distance, scribble_distance
from scribbleseg.cdsp.lorm import LoRM, foreground_mask, lorm_loss, rectify, similarity
from scribbleseg.cdsp.supervision import basic_supervision, smoothed_cross_entropy
from scribbleseg.constants import IGNORE_INDEX
from scribbleseg.losses import partial_cross_entropy

U = IGNORE_INDEX


# ---------------------------------------------------------------- Eq. (7)-(9)

def test_smoothed_ce_equals_torch_label_smoothing():
    torch.manual_seed(0)
    z, t = torch.randn(2, 5, 4, 6), torch.randint(0, 5, (2, 4, 6))
    t[0, :2] = U
    for eps in (0.0, 0.1, 0.3):
        ref = F.cross_entropy(z, t, ignore_index=U, label_smoothing=eps)          # mean over labelled pixels
        assert smoothed_cross_entropy(z, t, eps).item() == pytest.approx(ref.item(), rel=1e-6)
        assert partial_cross_entropy(z, t, eps).item() == pytest.approx(ref.item(), rel=1e-6)
    zero = smoothed_cross_entropy(z.requires_grad_(), torch.full_like(t, U))
    zero.backward()
    assert zero.item() == 0.0 and torch.isfinite(z.grad).all()


def test_basic_supervision_terms():
    z = torch.zeros(1, 4, 1, 2)                                                    # p = 1/4 everywhere
    out = basic_supervision(z, torch.tensor([[[1, U]]]), torch.tensor([[[2, 3]]]))
    assert out["segs"].item() == pytest.approx(math.log(4))
    assert out["segc"].item() == pytest.approx(math.log(4))                        # (1 - e) log 4 + e log 4


# ---------------------------------------------------------------- Eq. (14), (16)

def _brute(seeds, lam):
    """min_j floor(min(sqrt(e^lam ((m - m')^2 + (n - n')^2)), 255)) / 255, 1 with no seed."""
    h, w = seeds.shape
    pts = np.argwhere(seeds)
    out = np.ones((h, w))
    for m in range(h):
        for n in range(w):
            for mm, nn in pts:
                v = np.floor(min(np.sqrt(math.exp(lam) * ((m - mm) ** 2 + (n - nn) ** 2)), 255.0)) / 255.0
                out[m, n] = min(out[m, n], v)
    return out


def _brute_boundary(label, frame):
    fg = (label != 0) & (label != U)
    h, w = label.shape
    b = np.zeros_like(fg)
    for m in range(h):
        for n in range(w):
            if not fg[m, n]:
                continue
            for dm, dn in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                mm, nn = m + dm, n + dn
                inside = 0 <= mm < h and 0 <= nn < w
                if (inside and not fg[mm, nn]) or (not inside and frame):
                    b[m, n] = True
    return b


@pytest.mark.parametrize("lam", [0.0, 1.0, 6.0, 9.0])
def test_distance_maps_match_brute_force(lam):
    rng = np.random.default_rng(int(lam * 10))
    for _ in range(3):
        label = rng.choice([0, 1, 2, U], size=(9, 11), p=[0.5, 0.2, 0.2, 0.1]).astype(np.uint8)
        label[2:7, 3:9] = 1                                                        # a region with an interior
        scribble = np.full((9, 11), U, np.uint8)
        scribble[4, 2:9], scribble[0, 0:3] = 1, 0
        for frame in (False, True):
            assert (foreground_boundary(label, frame) == _brute_boundary(label, frame)).all()
            assert np.array_equal(pseudo_label_distance(label, lam, frame), _brute(_brute_boundary(label, frame), lam))
        assert np.array_equal(scribble_distance(scribble, lam), 1 - _brute(scribble != U, lam))
        fg_seeds = (scribble != U) & (scribble != 0)                               # released: foreground scribbles
        assert np.array_equal(scribble_distance(scribble, lam, seeds="foreground"), 1 - _brute(fg_seeds, lam))


def test_distance_maps_zero_where_they_should_be():
    label = np.zeros((20, 20), np.uint8)
    label[5:15, 5:15] = 3
    d_c = pseudo_label_distance(label, lam=2.0)
    b = foreground_boundary(label)
    assert (d_c[b] == 0).all() and (d_c[~b] > 0).all() and d_c.max() <= 1       # 0 on the boundary only
    assert d_c[10, 10] == pytest.approx(np.floor(math.exp(1.0) * 4) / 255)      # 4 px from the boundary row 14
    assert (pseudo_label_distance(np.zeros((4, 4), np.uint8), 2.0) == 1).all()  # no foreground: no boundary
    scr = np.full((20, 20), U, np.uint8)
    scr[0, 0] = 0
    d_s = scribble_distance(scr, lam=8.0)                                        # reach 255 / e^4 = 4.7 px
    dist = np.hypot(*np.indices((20, 20)))
    assert d_s[0, 0] == 1 and (d_s[dist >= 255 / math.exp(4)] == 0).all() and (d_s[dist < 255 / math.exp(4)] > 0).all()
    assert (scribble_distance(scr, 8.0, seeds="foreground") == 0).all()           # only a background scribble
    assert (scribble_distance(np.full((4, 4), U, np.uint8), 1.0) == 0).all()     # no scribble at all


def test_distance_maps_follow_flips():
    rng = np.random.default_rng(3)
    scr = torch.from_numpy(rng.choice([0, 1, U], size=(2, 12, 16), p=[0.05, 0.05, 0.9])).long()
    pl = torch.zeros(2, 12, 16, dtype=torch.long)
    pl[:, 3:9, 2:7] = 2
    d_s, d_c = distance_maps(scr, pl, 1.0, 4.0)
    f_s, f_c = distance_maps(scr.flip(-1), pl.flip(-1), 1.0, 4.0)
    assert torch.equal(f_s, d_s.flip(-1)) and torch.equal(f_c, d_c.flip(-1))
    assert distance_maps(None, pl)[0] is None


# ---------------------------------------------------------------- Eq. (15), (17), (18)

def test_distance_entropy_hand_computed_and_zero_weights():
    k = 3
    z = torch.zeros(1, k, 2, 3)                                                    # H = log 3 at every pixel
    d = torch.tensor([[[0.0, 0.5, 1.0], [0.0, 0.0, 0.25]]])
    assert distance_entropy(z, d).item() == pytest.approx((1.75 * math.log(3)) / 3)   # / N = 3 non-zero weights
    z2 = z.clone()
    z2[0, :, d[0] == 0] = torch.randn(k, 3)                                      # zero-weight pixels do not count
    assert distance_entropy(z2, d).item() == pytest.approx(distance_entropy(z, d).item())
    sharp = z.clone()
    sharp[0, 0] = 3.0
    assert distance_entropy(sharp, d) < distance_entropy(z, d)                    # minimises the entropy
    zl = torch.randn(1, k, 2, 3, requires_grad=True)
    loss = distance_entropy(zl, torch.zeros(1, 2, 3))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(zl.grad).all()
    both = distance_entropy_loss(z, d, torch.ones_like(d))
    assert both["ds"].item() == pytest.approx(distance_entropy(z, d).item()) and both["dc"].item() == pytest.approx(math.log(3))


def test_distance_entropy_released_count():
    z = torch.zeros(1, 2, 1, 3)
    z[0, 0, 0, 0] = 1000.0                                                       # one-hot: H = 0 exactly
    d = torch.tensor([[[1.0, 1.0, 0.5]]])
    h = entropy_map(z)[0, 0]
    assert h[0] == 0
    assert distance_entropy(z, d, count="terms").item() == pytest.approx((h[1] + 0.5 * h[2]).item() / 2)  # sum / count_nonzero(dH)
    assert distance_entropy(z, d).item() == pytest.approx((h[1] + 0.5 * h[2]).item() / 3)


def test_distance_entropy_gradcheck():
    torch.manual_seed(1)
    z = torch.randn(2, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    d = torch.rand(2, 3, 4, dtype=torch.float64)
    d[0, 0] = 0
    assert torch.autograd.gradcheck(lambda a: distance_entropy(a, d), (z,))
    assert torch.autograd.gradcheck(lambda a: distance_entropy(a, d, count="terms"), (z,))


# ---------------------------------------------------------------- Eq. (10)-(13)

def _eq10(q, k):
    """A_ij = exp(cos(q_i, k_j)) / sum_j' exp(cos(q_i, k_j')) written with loops, (M, M)."""
    qf, kf = q.flatten(1), k.flatten(1)                                          # (C, M)
    m = qf.shape[1]
    cos = torch.tensor([[float(qf[:, i] @ kf[:, j] / (qf[:, i].norm() * kf[:, j].norm())) for j in range(m)]
                        for i in range(m)], dtype=q.dtype)
    return cos.exp() / cos.exp().sum(1, keepdim=True)


def test_lorm_similarity_is_equation_10():
    torch.manual_seed(2)
    q, k = torch.randn(1, 4, 2, 3, dtype=torch.float64), torch.randn(1, 4, 2, 3, dtype=torch.float64)
    a = similarity(q, k)
    assert torch.allclose(a[0], _eq10(q[0], k[0])) and torch.allclose(a.sum(2), torch.ones(1, 6, dtype=torch.float64))


def test_lorm_mask_hand_made():
    torch.manual_seed(3)
    f = torch.randn(1, 2, 2, 2, dtype=torch.float64)
    a = torch.softmax(torch.randn(1, 4, 4, dtype=torch.float64), 2)
    mask = torch.tensor([[[0.0, 1.0], [0.0, 0.0]]], dtype=torch.float64)          # one foreground position, j = 1
    ff = f.flatten(2)[0]                                                         # (C, M)
    out = rectify(f, a, mask, 2.0).flatten(2)[0]                                 # paper: keys masked
    for i in range(4):
        assert torch.allclose(out[:, i], 2.0 * a[0, i, 1] * ff[:, 1])           # F^_i = delta A_i1 F_1
    out_q = rectify(f, a, mask, 2.0, mask_on="query").flatten(2)[0]              # released: query rows masked
    for i in range(4):
        expect = 2.0 * (a[0, i] * ff).sum(1) if i == 1 else torch.zeros(2, dtype=torch.float64)
        assert torch.allclose(out_q[:, i], expect)
    const = torch.ones(1, 3, 2, 2, dtype=torch.float64)                          # equal features, full mask:
    assert torch.allclose(rectify(const, a, torch.ones(1, 2, 2, dtype=torch.float64), 1.0), const)  # rows sum to 1


def test_lorm_module_shapes_delta_and_loss():
    torch.manual_seed(4)
    lorm = LoRM(6)
    f = torch.randn(2, 6, 4, 5)
    mask = (torch.rand(2, 4, 5) > 0.5).float()
    f_hat, loss = lorm(f, mask)
    assert f_hat.shape == f.shape and lorm.delta.item() == 1.0
    assert loss.item() == pytest.approx(F.mse_loss(f, f_hat).item())              # (13)
    loss.backward()
    assert lorm.delta.grad is not None and lorm.query.weight.grad is not None
    assert torch.equal(lorm(f, torch.zeros(2, 4, 5))[0], torch.zeros_like(f))    # no foreground: F^ = 0


def test_lorm_released_loss_and_mask_downsampling():
    f, g = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([1.0, 2.0, 1.0, 0.0])
    assert lorm_loss(f, g, "nonzero").item() == pytest.approx((4 + 16) / 2)       # sum / count_nonzero
    assert lorm_loss(f, g).item() == pytest.approx(20 / 4)
    assert lorm_loss(f, f, "nonzero").item() == 0.0
    label = torch.zeros(1, 4, 4, dtype=torch.long)
    label[0, 0, 0] = 5                                                           # one foreground pixel in a corner
    label[0, 2:, 2:] = 1                                                         # a full foreground cell
    label[0, 0, 3] = U
    assert foreground_mask(label, (2, 2)).tolist() == [[[0.0, 0.0], [0.0, 1.0]]]  # majority of each 2 x 2 cell
    bil = F.interpolate(label.masked_fill(label == U, 0).float()[:, None], size=(2, 2), mode="bilinear",
                        align_corners=True)[:, 0] > 0
    assert torch.equal(foreground_mask(label, (2, 2), "bilinear"), bil.float())
    assert foreground_mask(label, (2, 2), "bilinear").tolist() == [[[1.0, 0.0], [0.0, 1.0]]]  # corner samples


def test_lorm_gradcheck():
    torch.manual_seed(5)
    lorm = LoRM(3).double()
    f = torch.randn(1, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]], dtype=torch.float64)
    for mask_on in ("key", "query"):
        lorm.mask_on = mask_on
        assert torch.autograd.gradcheck(lambda x: lorm(x, mask)[1], (f,))
        assert torch.autograd.gradcheck(lambda x: lorm(x, mask)[0], (f,))
    lorm.mask_on = "key"

    def loss_of_query_weight(wq):                                                # gradient reaches the projections
        q = F.conv2d(f, wq, lorm.query.bias)
        return lorm_loss(f, rectify(f, similarity(q, lorm.key(f)), mask, lorm.delta))

    assert torch.autograd.gradcheck(loss_of_query_weight, (lorm.query.weight.detach().clone().requires_grad_(),))


def test_cdsp_released_upsampling_aligns_corners():
    """L_segs with 2 x 2 logits (class-0 columns 0 and 3) upsampled to 4 x 4: at pixel (0, 1) the class-0 logit is
    1.0 corner-aligned (released) and 0.75 half-pixel aligned (ours), so -log p_1 = log(1 + e^z0)."""
    import math

    import pytest
    import torch

    from scribbleseg.cdsp.method import CDSP

    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 0, :, 1] = 3.0
    scribble = torch.full((1, 4, 4), 255)
    scribble[0, 0, 1] = 1
    batch = {"image": torch.zeros(1, 3, 4, 4), "scribble": scribble}
    for aligned, z0 in ((True, 1.0), (False, 0.75)):
        method = CDSP(segc=False, ds=False, dc=False, lorm=False, align_corners=aligned)
        segs = method.losses(lambda x: {"logits": logits}, batch)["segs"]
        assert segs.item() == pytest.approx(math.log(1 + math.exp(z0)), rel=1e-6)
