"""BLPSeg figures and tables: per-pixel BLP loss, Eq. (13) distributions, precision by distance, the LAM
column, label diffusion as a scribble variant, the table helpers and the headless widget cell."""
import dataclasses

import numpy as np
import pytest
import torch

from scribbleseg.blpseg import analysis, study
from scribbleseg.constants import IGNORE_INDEX as U
from scribbleseg.blpseg.losses import blp_loss, blp_loss_map, blp_weight


def test_blp_weight_and_loss_map_hand_computed():
    p_scrib = torch.tensor([0.5, 0.5]).view(1, 2, 1, 1).expand(1, 2, 1, 2).contiguous()
    logits = torch.zeros(1, 2, 1, 2)                                        # p_seg = 1/2 everywhere
    assert blp_weight(p_scrib, torch.softmax(logits, 1), 2.0)[0, 0, 0, 0].item() == pytest.approx(0.75 ** 2)
    target = torch.tensor([[[0, U]]])
    m = blp_loss_map(logits, p_scrib, target, 2.0)
    assert m[0, 0, 0].item() == pytest.approx(0.5625 * np.log(2)) and m[0, 0, 1].item() == 0  # unlabelled: 0
    assert m.sum().item() == pytest.approx(blp_loss(logits, p_scrib, target).item())       # 1 labelled pixel


def test_blp_loss_map_mean_is_the_loss():
    g = torch.Generator().manual_seed(0)
    logits, p = torch.randn(2, 3, 4, 5, generator=g), torch.rand(2, 3, 4, 5, generator=g)
    t = torch.randint(0, 3, (2, 4, 5), generator=g).masked_fill(torch.rand(2, 4, 5, generator=g) < 0.5, U)
    m = blp_loss_map(logits, p, t)
    assert m.sum() / (t != U).sum() == pytest.approx(blp_loss(logits, p, t).item())


def test_distributions_soft_weights_reduce_to_hard_counts():
    """Eq. (13) with lambda = 1 on scribble pixels and 0 elsewhere is the scribble distribution of Fig. 1."""
    rng = np.random.default_rng(0)
    masks = np.zeros((2, 16, 16), np.uint8)
    masks[:, 4:12, 3:13] = 1
    scr = np.full_like(masks, U)
    scr[:, 8, 5:11], scr[:, 1, 1:14] = 1, 0
    p_scrib = np.zeros((2, 2, 16, 16))
    for c in (0, 1):
        p_scrib[:, c][scr == c] = 1.0                                         # max_c p = 1 on scribbles, else 0
    p_seg = rng.random((2, 2, 16, 16))
    hists, edges = analysis.distance_distributions(masks, scr, p_scrib, p_seg, bins=5)
    np.testing.assert_allclose(hists["annotation probability"], hists["scribble"])
    assert not np.allclose(hists["scribble"], hists["mask"]) and len(edges) == 6
    assert all(h.sum() == pytest.approx(1) for h in hists.values())


def test_precision_by_distance_orders_predictions():
    masks = np.zeros((1, 20, 20), np.uint8)
    masks[0, 5:15, 5:15] = 2
    good, edge_wrong = masks.copy(), masks.copy()
    edge_wrong[0, 5, 5:15] = 0                                              # errors on the object's edge
    p_good, n = analysis.precision_by_distance(good, masks, bins=4)
    p_bad, _ = analysis.precision_by_distance(edge_wrong, masks, bins=4)
    assert (p_good == 1).all() and n.sum() == 400
    assert p_bad[0] < 1 and (p_bad[1:] == 1).all()                          # only the lowest-distance bin drops


def test_difference_map_and_object_cell():
    mask = np.array([[0, 1], [1, U]], np.uint8)
    p = np.zeros((2, 2, 2))
    p[1, 0, 1], p[0, 0, 0] = 0.75, 1.0
    np.testing.assert_allclose(analysis.difference_map(p, mask), [[0.0, 0.25], [1.0, 0.0]])
    big = np.zeros((32, 32), np.uint8)
    big[8:24, 16:32] = 3
    r, c = analysis.object_cell(big, stride=4)
    assert big[r * 4, c * 4] == 3 and analysis.object_cell(np.zeros((32, 32), np.uint8)) == (4, 4)


def _net(similarity=("distance",)):
    from scribbleseg.blpseg.model import BLPSegNet
    from scribbleseg.models.small import SmallSegNet
    from scribbleseg.blpseg.lam import LAM

    torch.manual_seed(0)
    base = SmallSegNet(3, width=4)
    return BLPSegNet(base, 3, base.classifier.in_channels, hidden=8, lam=LAM(2.0, similarity), low_dim=4).eval()


def test_lam_column_is_a_distribution_peaked_at_the_target():
    net = _net()
    col = analysis.lam_column(net, torch.randn(3, 32, 32), (3, 5))
    assert col.shape == (8, 8) and col.sum() == pytest.approx(1, abs=1e-5)
    assert np.unravel_index(col.argmax(), col.shape) == (3, 5)              # distance only: the target itself
    wide = analysis.lam_column(net, torch.randn(3, 32, 32), (3, 5), sigma=8.0)
    assert wide.max() < col.max()                                           # a wider kernel spreads A[:, j]
    maps = analysis.head_maps(net, torch.randn(2, 3, 32, 32))
    assert maps["p_scrib"].shape == (2, 3, 32, 32) and torch.allclose(maps["p_seg"].sum(1), torch.ones(2, 32, 32))
    assert (maps["p_scrib"].sum(1) < 1).all()                               # (K+1)-way softmax sliced to K


def test_loss_maps_use_the_argmax_pseudo_label():
    logits = torch.tensor([[[[2.0, -1.0]], [[0.0, 3.0]]]])                  # (1, 2, 1, 2): argmax 0 then 1
    out = analysis.loss_maps(logits, torch.zeros_like(logits), gamma=2.0)
    assert out["pseudo"].tolist() == [[[0, 1]]] and torch.allclose(out["weight"], torch.ones(1, 1, 2))  # p_scrib 0
    assert torch.allclose(out["loss"], -torch.log_softmax(logits, 1).max(1).values)


def test_label_diffusion_variant_loads_expanded_labels_and_keeps_default_keys(tiny_dataset, monkeypatch):
    from scribbleseg.data.folder import ScribbleVariant, load_split
    from scribbleseg.experiment import experiment_key
    from scribbleseg.constants import EMBEDDED_CLASSES
    from scribbleseg.baseline import PartialCE
    from scribbleseg.train import TrainConfig

    cfg, root = tiny_dataset
    plain, ld = load_split(root, "train", EMBEDDED_CLASSES), load_split(root, "train", EMBEDDED_CLASSES, ScribbleVariant(superpixels=50))
    lab = plain.scribbles != U
    assert (ld.scribbles[lab] == plain.scribbles[lab]).all() and ld.labelled_fraction() > 2 * plain.labelled_fraction()
    assert (ld.scribbles[ld.scribbles != U] == ld.masks[ld.scribbles != U]).mean() > 0.8
    k = lambda v: experiment_key(cfg, v, TrainConfig(), PartialCE())  # noqa: E731
    assert k(ScribbleVariant())[1]["variant"] == {f.name: getattr(ScribbleVariant(), f.name)
                                                 for f in dataclasses.fields(ScribbleVariant) if f.name != "superpixels"}
    assert k(ScribbleVariant(superpixels=50))[0] != k(ScribbleVariant())[0]


def test_recipe_and_compare():
    assert study.recipe(2.0) == {"sigma": 2.0, "gamma": 2.0, "empty_weight": 0.02}
    assert study.recipe(2.0, self_training="paper", self_train_from=5)["self_train"] == "paper"
    with pytest.raises(ValueError, match="self_training"):
        study.recipe(2.0, self_training="sometimes")
    with pytest.raises(ValueError, match="self_train_from"):
        study.recipe(2.0, self_training="released")
    from scribbleseg.experiment import RunResult

    def runs(*v):
        return [RunResult("k", None, {"train": {"seed": s}}, {"miou": x}, [], 0.0, True) for s, x in enumerate(v)]

    r = {"a": runs(70, 71, 72), "b": runs(72, 73, 74), "c": runs(69, 70, 71), "d": runs(71, 70)}
    lines = study.compare(r, "a", {"a": 1.0, "b": 2.0})
    assert lines[0].startswith("b - a: +2.00") and "better" in lines[0] and "paper +1.00" in lines[0]
    assert "worse" in lines[1] and "paper" not in lines[1]
    assert lines[2].startswith("d - a: +0.00") and "2 seeds" in lines[2]              # paired over seeds 0 and 1
    assert study.same_sign(r, "a", {"a": 1.0, "b": 2.0, "c": 2.0}) == {"b": True, "c": False}
    t = study.table("T", r, {"b": 75.0}).to_dict()["rows"]
    assert [row["paper"] for row in t] == [None, 75.0, None, None] and t[1]["mean"] == pytest.approx(73)


def test_interactive_cell_draws_a_plain_figure_headless(monkeypatch):
    import matplotlib.figure

    from scribbleseg.lab import plots

    monkeypatch.setenv("SCRIBBLESEG_BATCH", "1")
    calls = []

    def draw(gamma=2.0):
        calls.append(gamma)
        return plots.grid([[plots.heat(np.full((4, 4), gamma / 5))]])

    fig = plots.interactive(draw, gamma=(0.0, 5.0, 0.5))
    assert isinstance(fig, matplotlib.figure.Figure) and calls == [2.0]
    assert plots.heat(np.array([[0.0, 1.0]])).shape == (1, 2, 3)


def test_released_low_level_projection_and_stable_keys():
    from scribbleseg.experiment import experiment_key
    from scribbleseg.blpseg.method import BLPSeg
    from scribbleseg.data.embedded import EmbeddedConfig
    from scribbleseg.data.folder import ScribbleVariant
    from scribbleseg.blpseg.lam import LowLevelFeatures
    from scribbleseg.train import TrainConfig

    torch.manual_seed(0)
    low = LowLevelFeatures(6, project=True)
    x = torch.randn(2, 3, 16, 16)
    f = torch.nn.functional.layer_norm(low.conv(x).permute(0, 2, 3, 1), (6,), low.norm.weight, low.norm.bias)
    expected = torch.nn.functional.conv2d(f.permute(0, 3, 1, 2), low.project.weight, low.project.bias)  # 1x1 after LN
    assert torch.allclose(low(x), expected, atol=1e-6)
    assert LowLevelFeatures(6).project is None
    key = lambda m: experiment_key(EmbeddedConfig(), ScribbleVariant(), TrainConfig(), m)  # noqa: E731
    assert "low_projection" not in key(BLPSeg())[1]["method"] and key(BLPSeg(low_projection=True))[0] != key(BLPSeg())[0]
    assert BLPSeg(low_projection=True).wrap(_net().base, 3).low.project is not None
