"""BLPSeg: scribble-head WCE (Eq. 1-2), annotation probability, BLP / focal loss (Eq. 9-11), LAM (Eq. 3-5)."""
import math

import pytest
import torch

from scribbleseg.constants import IGNORE_INDEX
from scribbleseg.blpseg.losses import annotation_probability, blp_loss, focal_loss, scribble_head_loss
from scribbleseg.losses import partial_cross_entropy
from scribbleseg.blpseg.lam import LAM, LowLevelFeatures, dense_lam, local_lam

U = IGNORE_INDEX


def test_scribble_head_wce_hand_computed():
    logits = torch.zeros(1, 3, 1, 2)                   # K = 2 classes + the empty class: p = 1/3 each
    target = torch.tensor([[[0, U]]])
    expect = (math.log(3) + 0.02 * math.log(3)) / 2    # 1/N (w_0 log 3 + w_empty log 3)
    assert scribble_head_loss(logits, target).item() == pytest.approx(expect)
    assert scribble_head_loss(logits, target, normalize="weights").item() == pytest.approx(math.log(3))


def test_annotation_probability_renormalised_or_sliced():
    torch.manual_seed(0)
    s = torch.randn(2, 4, 3, 3)
    assert torch.allclose(annotation_probability(s).sum(1), torch.ones(2, 3, 3))
    sliced = annotation_probability(s, renormalize=False)
    assert torch.allclose(sliced.sum(1), 1 - torch.softmax(s, 1)[:, -1])


def test_blp_hand_computed_and_limits():
    logits = torch.zeros(1, 2, 1, 2)                   # p_seg = 0.5 everywhere
    target = torch.tensor([[[0, U]]])
    p_scrib = torch.full((1, 2, 1, 2), 0.5)
    delta = (1 - 0.5 * 0.5) ** 2                       # (11)
    assert blp_loss(logits, p_scrib, target).item() == pytest.approx(delta * math.log(2))
    assert blp_loss(logits, p_scrib, target, normalize="weights").item() == pytest.approx(math.log(2), rel=1e-6)
    torch.manual_seed(1)
    z, t = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    t[0, :2] = U
    ps = torch.rand(2, 3, 4, 4).softmax(1)
    pce = partial_cross_entropy(z, t)
    assert blp_loss(z, ps, t, gamma=0.0).item() == pytest.approx(pce.item(), rel=1e-6)       # gamma = 0: CE
    assert blp_loss(z, torch.zeros_like(ps), t).item() == pytest.approx(pce.item(), rel=1e-6)  # p_scrib -> 0: weight 1
    assert blp_loss(z, ps, t).item() < pce.item()                                         # weights <= 1
    assert focal_loss(z, t, gamma=0.0).item() == pytest.approx(pce.item(), rel=1e-6)


def test_blp_empty_scribbles_zero_not_nan():
    z = torch.randn(2, 3, 4, 4, requires_grad=True)
    t = torch.full((2, 4, 4), U)
    for loss in (blp_loss(z, torch.rand(2, 3, 4, 4), t), blp_loss(z, torch.rand(2, 3, 4, 4), t, normalize="weights"),
                 focal_loss(z, t)):
        assert loss.item() == 0.0
        loss.backward()
        assert torch.isfinite(z.grad).all()


def test_blp_detach_weight_changes_only_the_gradient():
    torch.manual_seed(2)
    z = torch.randn(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 3, (1, 4, 4))
    ps = torch.rand(1, 3, 4, 4, dtype=torch.float64).softmax(1)
    a, b = blp_loss(z, ps, t), blp_loss(z, ps, t, detach_weight=True)
    assert a.item() == pytest.approx(b.item())
    ga, = torch.autograd.grad(a, z)
    gb, = torch.autograd.grad(b, z)
    assert not torch.allclose(ga, gb)


def test_blp_and_focal_gradcheck():
    torch.manual_seed(3)
    z = torch.randn(1, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    s = torch.randn(1, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 3, (1, 3, 3))
    t[0, 0] = U
    assert torch.autograd.gradcheck(lambda a, b: blp_loss(a, annotation_probability(b), t), (z, s))
    assert torch.autograd.gradcheck(lambda a, b: blp_loss(a, annotation_probability(b, False), t, normalize="weights"), (z, s))
    assert torch.autograd.gradcheck(lambda a: focal_loss(a, t), (z,))
    assert torch.autograd.gradcheck(lambda b: scribble_head_loss(b, t), (s,))


def _eq4(f, sigma, h, w):
    """A of Eq. (4)-(5) written out: P_low softmax over k of f_k . f_j, P_dis Gaussian, column-normalised."""
    fl = f.flatten(1)                                                   # (D, M)
    p_low = torch.softmax(fl.T @ fl, dim=0)                             # P_low(i, j), normalised over i
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    s = torch.stack([ys, xs], -1).reshape(-1, 2).double()
    p_dis = torch.exp(-torch.cdist(s, s) ** 2 / (2 * sigma ** 2))
    num = p_low * p_dis
    return num / num.sum(0, keepdim=True)


def test_lam_matrix_is_equation_4_and_columns_sum_to_one():
    torch.manual_seed(4)
    x, f = torch.randn(1, 3, 4, 5, dtype=torch.float64), torch.randn(1, 6, 4, 5, dtype=torch.float64)
    out, a = dense_lam(x, 1.5, f_low=f, return_matrix=True)
    assert torch.allclose(a[0], _eq4(f[0], 1.5, 4, 5))
    assert torch.allclose(a.sum(1), torch.ones(1, 20, dtype=torch.float64))
    assert torch.allclose(out.flatten(2), x.flatten(2) @ a)            # (3) X_out = X_in A


@pytest.mark.parametrize("similarity", [("low", "distance"), ("distance",), ("low", "high", "distance")])
def test_dense_and_local_lam_agree(similarity):
    torch.manual_seed(5)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    fl, fh = torch.randn(2, 4, 16, 16, dtype=torch.float64) * 0.5, torch.randn(2, 4, 16, 16, dtype=torch.float64) * 0.5
    mask = torch.rand(2, 16, 16) > 0.3
    for m in (None, mask):
        d = dense_lam(x, 1.5, fl, fh, similarity, m)
        loc = local_lam(x, 1.5, fl, fh, similarity, m, truncate=4.5)   # window 15 x 15 inside a 16 x 16 grid
        assert (d - loc).abs().max() < 1e-4


def test_lam_region_restricts_sources():
    torch.manual_seed(6)
    x, f = torch.randn(1, 2, 3, 3, dtype=torch.float64), torch.randn(1, 3, 3, 3, dtype=torch.float64)
    labelled = torch.zeros(1, 3, 3, dtype=torch.bool)
    labelled[0, 1, 1] = True
    out, a = dense_lam(x, 6.0, f, source_mask=labelled, return_matrix=True)
    assert (a[0, 4] == 1).all() and (a[0].sum(0) == 1).all()           # the only source takes all the weight
    assert torch.allclose(out, x[:, :, 1:2, 1:2].expand_as(out))


def test_lam_gradcheck_including_learnable_sigma():
    torch.manual_seed(7)
    lam = LAM(sigma=1.2, learn_sigma=True).double()
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    f = torch.randn(1, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: lam(a, b), (x, f))
    lam(x, f).sum().backward()
    assert lam.log_sigma.grad is not None and torch.isfinite(lam.log_sigma.grad)
    assert torch.autograd.gradcheck(lambda a, b: local_lam(a, 1.2, b, truncate=2.0), (x, f))


def test_lam_options_named():
    with pytest.raises(ValueError, match="subset"):
        LAM(similarity=("colour",))
    with pytest.raises(ValueError, match="impl"):
        LAM(impl="sparse")
    feats = LowLevelFeatures(8)(torch.randn(2, 3, 32, 32))
    assert feats.shape == (2, 8, 8, 8)


def test_released_self_training_rule():
    from scribbleseg.blpseg.method import BLPSeg

    logits = torch.zeros(1, 3, 1, 3)
    logits[0, :, 0, 0] = torch.tensor([0.0, 9.0, 0.0])   # confident class 1, present in the scribbles
    logits[0, :, 0, 1] = torch.tensor([0.0, 0.0, 9.0])   # confident class 2, absent from the scribbles -> masked
    scribble = torch.tensor([[[U, U, 1]]])
    out = BLPSeg(self_train="released").pseudo_labels(logits, scribble)
    assert out.tolist() == [[[1, U, 1]]]                  # pixel 1: class 2 masked, rest < 0.9; pixel 2: scribble
    assert BLPSeg().pseudo_labels(logits, scribble).tolist() == [[[1, 2, 0]]]  # paper: argmax everywhere


def test_released_self_training_always_allows_background():
    """The released class vector always holds background (class 0): a confident background pixel keeps its
    pseudo-label in an image without scribbles and in one with a foreground stroke only."""
    from scribbleseg.blpseg.method import BLPSeg

    logits = torch.zeros(2, 3, 1, 3)
    logits[:, :, 0, 0] = torch.tensor([9.0, 0.0, 0.0])    # confident background in both images
    logits[:, :, 0, 1] = torch.tensor([0.0, 0.0, 9.0])    # confident class 2, in neither image's scribbles
    scribble = torch.tensor([[[U, U, U]], [[U, U, 1]]])   # image 0: no scribble; image 1: a class-1 stroke only
    out = BLPSeg(self_train="released").pseudo_labels(logits, scribble)
    assert out.tolist() == [[[0, U, U]], [[0, U, 1]]]


def test_released_heads_have_no_batchnorm():
    from torch import nn

    from scribbleseg.blpseg.method import BLPSeg
    from scribbleseg.models.small import SmallSegNet

    def norms(method):
        net = method.wrap(SmallSegNet(4, width=4), 4)
        return [type(m) for h in (net.seg_head, net.scrib_head) for m in h if isinstance(m, nn.BatchNorm2d)]

    assert len(norms(BLPSeg(lam=False))) == 4 and norms(BLPSeg(lam=False, head_batchnorm=False)) == []
    released = BLPSeg(lam=False, head_batchnorm=False).wrap(SmallSegNet(4, width=4), 4)
    assert [type(m) for m in released.seg_head] == [nn.Conv2d, nn.ReLU, nn.Conv2d, nn.ReLU, nn.Conv2d]


def test_blpseg_trains_resumes_and_reloads(tiny_dataset, tmp_path, monkeypatch):
    from scribbleseg.data.folder import ScribbleVariant
    from scribbleseg.experiment import run_experiment
    from scribbleseg.blpseg.method import BLPSeg
    from scribbleseg.train import TrainConfig

    cfg_ds, root = tiny_dataset
    monkeypatch.setattr("scribbleseg.experiment.ensure_embedded", lambda c: root)
    cfg = TrainConfig(width=4, epochs=2, batch_size=8, lr=1e-2)
    for method in (BLPSeg(self_train_from=3, hidden=8, low_dim=8), BLPSeg(region="unlabelled", loss="focal", hidden=8),
                   BLPSeg(lam=False, loss="ce", hidden=8),
                   BLPSeg(normalize="weights", detach_weight=True, renormalize_scrib=False, detach_scribble_features=True,
                          detach_scrib_in_loss=True, self_train="released", self_train_from=0, hidden=8)):
        r = run_experiment(cfg_ds, ScribbleVariant(), cfg, method, log=lambda *_: None, root=tmp_path)
        assert set(r.history[-1]) >= ({"scribble_head", "seg"} if method.loss == "blp" else {"seg"}) and all(
            math.isfinite(h["loss"]) for h in r.history)
        model = r.load_model(method)
        assert 0 <= r.metrics["miou"] <= 100 and (model.lam is not None) == method.lam
        with torch.no_grad():  # the reloaded network is the trained one: its val mIoU is the stored one
            from scribbleseg.evaluate import evaluate
            from scribbleseg.experiment import load_data
            assert evaluate(model, load_data(cfg_ds, "val"))["miou"] == pytest.approx(r.metrics["miou"])
    with pytest.raises(ValueError, match="BLPSeg.region"):
        BLPSeg(region="edges")


def test_label_diffusion_expands_within_superpixels_only():
    import numpy as np

    from scribbleseg.data.label_diffusion import expand_scribble

    img = np.zeros((32, 32, 3), np.uint8)
    img[:, 16:] = 200                                        # two flat halves: superpixels never cross x = 16
    scr = np.full((32, 32), U, np.uint8)
    scr[10:20, 5], scr[10:20, 25] = 1, 2
    out = expand_scribble(img, scr, n_segments=8)
    assert (out[scr != U] == scr[scr != U]).all()              # scribbles kept
    assert (out[:, :16][out[:, :16] != U] == 1).all() and (out[:, 16:][out[:, 16:] != U] == 2).all()
    assert (out != U).sum() > 4 * (scr != U).sum()            # expanded
    conflict = scr.copy()
    conflict[12, 6] = 2                                      # two classes in one superpixel: no expansion there
    out2 = expand_scribble(img, conflict, n_segments=8)
    from skimage.segmentation import slic

    seg = slic(img, n_segments=8, compactness=10.0, start_label=0)
    here = seg == seg[12, 6]
    assert (out2[here] == conflict[here]).all()               # the conflicting superpixel keeps only its scribbles
    other = seg[10, 5]                                        # the other superpixel of the class-1 stroke
    assert other != seg[12, 6] and (scr[seg == other] == 1).any()
    assert (out2[seg == other] == 1).all()                    # it is still expanded, whole


# The BLP loss at the labelled pixels from the grid logits (blpseg/labelled.py, issue 15): the same function as
# upsampling both heads and calling blp_loss; checked against that form (float64 values and gradients, float32),
# by hand, by gradcheck, and through BLPSeg.losses on both of its paths.

def _grid_case(seed=0, n=3, k=4, h=5, w=6, size=(20, 24), p=0.2, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k, h, w, generator=g, dtype=dtype).requires_grad_()
    s = torch.randn(n, k + 1, h, w, generator=g, dtype=dtype).requires_grad_()
    t = torch.where(torch.rand(n, *size, generator=g) < p, torch.randint(0, k, (n, *size), generator=g), U)
    t[-1] = U                                                                 # an image without scribbles
    return z, s, t


def _full_resolution_blp(z, s, t, gamma=2.0, normalize="pixels", detach_weight=False, renormalize=True,
                         detach_scrib=False):
    """The form replaced: both heads upsampled to the label size, annotation probability, blp_loss."""
    from scribbleseg.models.base import upsample

    p = annotation_probability(upsample(s, t.shape[-2:]), renormalize)
    return blp_loss(upsample(z, t.shape[-2:]), p.detach() if detach_scrib else p, t, gamma, normalize, detach_weight)


@pytest.mark.parametrize("hw, size", [((5, 6), (20, 24)), ((5, 6), (5, 6)), ((4, 6), (17, 23)), ((6, 6), (4, 5))],
                         ids=["x4", "same", "ragged", "down"])
def test_upsample_at_equals_upsample_at_the_pixels(hw, size):
    from scribbleseg.blpseg.labelled import labelled_pixels, upsample_at
    from scribbleseg.models.base import upsample

    z, _, t = _grid_case(1, h=hw[0], w=hw[1], size=size, p=0.5)
    yx, label, keep = labelled_pixels(t)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        g = z.detach().to(dtype)
        got = upsample_at(g, size, yx).permute(0, 2, 1)[keep]                # (P, K)
        want = upsample(g, size).permute(0, 2, 3, 1)[t != U]
        assert got.dtype == dtype and (got - want).abs().max().item() < tol
    assert torch.equal(label[keep], t[t != U]) and (label[~keep] == 0).all()


def test_labelled_pixels_by_hand():
    from scribbleseg.blpseg.labelled import labelled_pixels

    t = torch.tensor([[[U, 2], [1, U]], [[U, U], [U, 0]]])
    yx, label, keep = labelled_pixels(t)
    assert yx.tolist() == [[[0, 1], [1, 0]], [[1, 1], [0, 0]]]               # row-major; image 1 padded
    assert label.tolist() == [[2, 1], [0, 0]] and keep.tolist() == [[True, True], [True, False]]


def test_blp_loss_from_grid_by_hand():
    """Grid = label size, zero logits: p_seg = 1/2, p_scrib = 1/2 (softmax over the first K = 2 of 3), one
    labelled pixel: BL = (1 - 1/4)^2 log 2, as in test_blp_hand_computed_and_limits."""
    from scribbleseg.blpseg.labelled import blp_loss_from_grid

    z, s, t = torch.zeros(1, 2, 1, 2), torch.zeros(1, 3, 1, 2), torch.tensor([[[0, U]]])
    assert blp_loss_from_grid(z, s, t).item() == pytest.approx((1 - 0.25) ** 2 * math.log(2))
    assert blp_loss_from_grid(z, s, t, normalize="weights").item() == pytest.approx(math.log(2), rel=1e-6)
    assert blp_loss_from_grid(z, s, t, renormalize=False).item() == pytest.approx((1 - 1 / 6) ** 2 * math.log(2))


OPTIONS = [{}, {"normalize": "weights"}, {"detach_weight": True}, {"renormalize": False}, {"detach_scrib": True},
           {"gamma": 0.5}, {"normalize": "weights", "detach_weight": True, "renormalize": False, "detach_scrib": True}]


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(o) or "paper")
def test_blp_loss_from_grid_equals_the_full_resolution_form(opts):
    from scribbleseg.blpseg.labelled import blp_loss_from_grid

    z, s, t = _grid_case(2)
    new, old = blp_loss_from_grid(z, s, t, **opts), _full_resolution_blp(z, s, t, **opts)
    assert abs(new.item() - old.item()) < 1e-12
    g_new = torch.autograd.grad(new, (z, s), allow_unused=True)
    g_old = torch.autograd.grad(old, (z, s), allow_unused=True)
    for a, b in zip(g_new, g_old):
        b = torch.zeros_like(a) if b is None else b                           # s unused when detached
        assert (a - b).abs().max().item() < 1e-12
    z32, s32 = (x.detach().float().requires_grad_() for x in (z, s))
    assert abs(blp_loss_from_grid(z32, s32, t, **opts).item() - old.item()) < 1e-5


def test_blp_loss_from_grid_without_labels_is_zero_and_gradcheck():
    from scribbleseg.blpseg.labelled import blp_loss_from_grid

    z, s, t = _grid_case(3, n=2, k=3, h=3, w=3, size=(7, 8), p=0.3)
    empty = torch.full_like(t, U)
    for normalize in ("pixels", "weights"):
        loss = blp_loss_from_grid(z, s, empty, normalize=normalize)
        assert loss.item() == 0.0
        assert all(torch.isfinite(g).all() for g in torch.autograd.grad(loss, (z, s)))
    assert torch.autograd.gradcheck(lambda a, b: blp_loss_from_grid(a, b, t), (z, s))
    assert torch.autograd.gradcheck(lambda a, b: blp_loss_from_grid(a, b, t, normalize="weights", renormalize=False),
                                    (z, s))


def _old_losses(method, model, batch):
    """BLPSeg.losses as it was: both heads upsampled to the label size, then the losses of (1) and (9)."""
    from scribbleseg.models.base import upsample

    out = model(batch["image"])
    size = batch["scribble"].shape[-2:]
    logits, scrib = upsample(out["logits"], size), upsample(out["scrib_logits"], size)
    target = batch["scribble"]
    if method.self_train_from is not None and batch["step"] >= method.self_train_from:
        target = method.pseudo_labels(logits, batch["scribble"])
    p = annotation_probability(scrib, method.renormalize_scrib)
    p = p.detach() if method.detach_scrib_in_loss else p
    return {"scribble_head": scribble_head_loss(scrib, batch["scribble"], method.empty_weight, method.normalize),
            "seg": blp_loss(logits, p, target, method.gamma, method.normalize, method.detach_weight)}


@pytest.mark.parametrize("sparse", [0.25, 0.0, 1.0], ids=["default", "always-full", "always-labelled"])
def test_blpseg_losses_equal_the_previous_form(sparse, monkeypatch):
    """Values and parameter gradients of BLPSeg.losses against the previous full-resolution code, float64,
    with the labelled-pixel path (scribbles), the full-resolution path (self-training's dense pseudo-labels),
    and either forced by SPARSE_FRACTION."""
    from scribbleseg.blpseg import method as blp_method
    from scribbleseg.blpseg.method import BLPSeg
    from scribbleseg.models.small import SmallSegNet

    monkeypatch.setattr(blp_method, "SPARSE_FRACTION", sparse)
    g = torch.Generator().manual_seed(4)
    scribble = torch.where(torch.rand(2, 32, 32, generator=g) < 0.05, torch.randint(0, 3, (2, 32, 32), generator=g), U)
    batch = {"image": torch.randn(2, 3, 32, 32, generator=g, dtype=torch.float64), "scribble": scribble, "step": 5}
    for method in (BLPSeg(hidden=8, low_dim=8, sigma=1.5), BLPSeg(lam=False, hidden=8),
                   BLPSeg(hidden=8, low_dim=8, normalize="weights", detach_weight=True, renormalize_scrib=False,
                          detach_scrib_in_loss=True),
                   BLPSeg(hidden=8, low_dim=8, self_train_from=0),
                   BLPSeg(hidden=8, self_train_from=0, self_train="released")):
        torch.manual_seed(0)
        model = method.wrap(SmallSegNet(3, width=4), 3).double().eval()       # eval: BatchNorm is a fixed map
        new, old = method.losses(model, batch), _old_losses(method, model, batch)
        assert set(new) == set(old)
        for key in old:
            assert abs(new[key].item() - old[key].item()) < 1e-10, (method, key)
        params = list(model.parameters())
        g_new = torch.autograd.grad(sum(new.values()), params, allow_unused=True)
        g_old = torch.autograd.grad(sum(old.values()), params, allow_unused=True)
        for a, b in zip(g_new, g_old):
            assert (a is None) == (b is None) and (a is None or (a - b).abs().max().item() < 1e-10)
