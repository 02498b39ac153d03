"""URSS as a training method: the wrapped network, loss (11)'s terms, released-code options, two-stage training."""
import math

import pytest
import torch
from scribbleseg.constants import IGNORE_INDEX
from scribbleseg.urss.method import URSS
from scribbleseg.models.base import upsample
from scribbleseg.models.small import SmallSegNet
from scribbleseg.urss.entropy import soft_entropy
from scribbleseg.urss.random_walk import PositionAttention, RandomWalk

U = IGNORE_INDEX


def _batch(n=2, size=32, k=3, step=0):
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(n, 3, size, size, generator=g) * 255
    scribble = torch.full((n, size, size), U)
    scribble[:, 4:8, 4:20] = 1
    scribble[:, 20:24, 8:12] = 0
    return {"image": (rgb / 255 - 0.45) / 0.25, "rgb": rgb, "scribble": scribble, "index": torch.arange(n),
            "step": step}


def _model(method, k=3):
    torch.manual_seed(0)
    return method.wrap(SmallSegNet(k, width=4), k)


def test_wrapped_network_puts_the_walk_before_the_classifier():
    for walk, cls in (("paper", RandomWalk), ("attention", PositionAttention), ("none", type(None))):
        model = _model(URSS(random_walk=walk, alpha=0.5)).eval()
        assert isinstance(model.walk, cls)
        x = _batch()["image"]
        out = model(x, matrices=True)
        assert out["logits"].shape == (2, 3, 8, 8) and out["features_in"].shape == (2, 12, 8, 8)
        assert torch.allclose(out["logits"], model.classifier(out["features"]))
        assert torch.allclose(model.features(x), out["features"])
        if walk == "none":
            assert "transition" not in out and torch.equal(out["features"], out["features_in"])
        else:
            assert out["transition"].shape == (2, 64, 64)
            assert torch.allclose(out["transition"].sum(-1), torch.ones(2, 64))


@pytest.mark.parametrize("method", [
    URSS(), URSS(entropy="plain"), URSS(entropy="none", random_walk="none"),
    URSS(self_supervision="eigenspace", transform="flip"), URSS(self_supervision="eigenspace", transform="translate"),
    URSS(self_supervision="eigenspace", random_walk="none"), URSS(self_supervision="features_in"),
    URSS(self_supervision="features_out", transform="translate"), URSS.released(self_supervision="eigenspace"),
    URSS.released(self_supervision="eigenspace", transform="translate"),
    URSS.released(self_supervision="features_in", transform="translate"),
])
def test_losses_finite_with_gradients(method):
    model = _model(method)
    terms = method.losses(model, _batch(step=3))
    expect = {"ce"} | ({"entropy"} if method.entropy != "none" else set())
    expect |= {"ss"} if method.self_supervision else set()
    assert set(terms) == expect and all(torch.isfinite(v) and v.ndim == 0 for v in terms.values())
    sum(terms.values()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_entropy_options_match_their_formulas():
    batch = _batch()
    batch["boundary"] = torch.zeros(2, 32, 32, dtype=torch.bool)
    batch["boundary"][:, :, 6:10] = True                                   # crosses the class-1 scribble
    model = _model(URSS())
    with torch.no_grad():
        logits = model(batch["image"])["logits"]
        paper = URSS().losses(model, batch)["entropy"]
        grid_b = torch.zeros(2, 8, 8, dtype=torch.bool)
        grid_b[:, :, 1:3] = True                                           # pixel columns 6-7 and 8-9: half a cell each
        assert paper.item() == pytest.approx(soft_entropy(logits, grid_b).item(), rel=1e-6)
        released = URSS.released().losses(model, batch)["entropy"]         # full resolution, boundary mask only
        full = upsample(logits, (32, 32), align_corners=True)
        assert released.item() == pytest.approx(soft_entropy(full, batch["boundary"]).item(), rel=1e-6)
        kept = URSS(entropy_resolution="full", entropy_keep_scribbles=True, align_corners=True)  # ours, an option
        expect = soft_entropy(full, batch["boundary"], batch["scribble"])
        assert kept.losses(model, batch)["entropy"].item() == pytest.approx(expect.item(), rel=1e-6)
        assert released.item() != pytest.approx(expect.item(), rel=1e-6)


def test_released_entropy_ignores_scribbles_on_the_boundary():
    """Hand-built: 1 x 3 full-resolution logits, the scribbled first pixel on the pseudo-boundary. The released
    mask is 1 - B only, so the scribbled boundary pixel is excluded: the mean over the other two pixels."""
    logits = torch.zeros(1, 2, 1, 3)
    logits[0, :, 0, 1] = torch.tensor([math.log(3.0), 0.0])               # entropy h1; pixels 0 and 2: log 2
    h1 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    batch = {"image": torch.zeros(1, 3, 1, 3), "scribble": torch.tensor([[[0, U, U]]]),
             "boundary": torch.tensor([[[True, False, False]]])}
    got = URSS.released()._entropy(logits, batch)
    assert not URSS.released().entropy_keep_scribbles
    assert got.item() == pytest.approx((h1 + math.log(2)) / 2, abs=1e-6)


def test_released_upsampling_aligns_corners():
    """The released CE term upsamples 2 x 2 logits to 4 x 4 with align_corners=True. By hand, for logit columns
    (0, 3): corner-aligned, pixel column 1 sits 1/3 of the way (logit 1.0); half-pixel aligned (ours), at
    source x = (1 + 0.5) / 2 - 0.5 = 0.25 (logit 0.75)."""
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 0, :, 1] = 3.0                                              # class 0 logit: 0 left, 3 right
    scribble = torch.full((1, 4, 4), U)
    scribble[0, 0, 1] = 1                                                 # one labelled pixel, class 1
    batch = {"image": torch.zeros(1, 3, 4, 4), "scribble": scribble}
    model = lambda x: {"logits": logits}                                  # noqa: E731  (a fixed prediction)
    z0 = {True: 1.0, False: 0.75}                                         # class-0 logit at pixel (0, 1)
    for aligned in (True, False):
        ce = URSS(entropy="none", align_corners=aligned).losses(model, batch)["ce"]
        assert ce.item() == pytest.approx(math.log(1 + math.exp(z0[aligned])), rel=1e-6)  # -log softmax_1
    assert URSS.released().align_corners and not URSS().align_corners



def test_cached_boundaries_follow_the_training_loops_flips(tiny_dataset):
    import numpy as np
    from scribbleseg.constants import EMBEDDED_CLASSES
    from scribbleseg.data.folder import load_split
    from scribbleseg.train import to_batch
    from scribbleseg.urss.boundaries import cache_info, clear_cache, pseudo_boundaries

    data = load_split(tiny_dataset[1], "train", EMBEDDED_CLASSES)
    idx = np.array([3, 0, 7, 5, 3, 1])
    flips = np.array([True, False, True, False, False, True])
    batch = to_batch(data, idx, flips, torch.device("cpu"))
    clear_cache()
    method = URSS(n_segments=16)
    got = method.pseudo_boundaries(batch).numpy()
    for i, (j, f) in enumerate(zip(idx, flips)):
        b = pseudo_boundaries(data.images[j], n_segments=16)                    # the unflipped training image
        assert np.array_equal(got[i], np.flip(b, 1) if f else b)
    assert cache_info()["misses"] == 5 and cache_info()["hits"] == 1            # image 3 twice: computed once
    assert np.array_equal(got[0], np.flip(got[4], 1))
    # fallback: recomputed on batch["rgb"] as it is, when asked or when the batch has no "flip" (DataLoader / VOC)
    per_batch = URSS(n_segments=16, boundaries="batch").pseudo_boundaries(batch).numpy()
    no_flip = URSS(n_segments=16).pseudo_boundaries({k: v for k, v in batch.items() if k != "flip"}).numpy()
    assert np.array_equal(no_flip, per_batch) and cache_info()["hits"] == 1   # the cache was not touched
    for i, j in enumerate(idx):
        assert np.array_equal(per_batch[i], pseudo_boundaries(np.ascontiguousarray(
            data.images[j, :, ::-1] if flips[i] else data.images[j]), n_segments=16))
    assert np.array_equal(per_batch[~flips], got[~flips])
    # both paths train: finite terms with gradients
    for m, b in ((method, batch), (URSS(n_segments=16), {k: v for k, v in batch.items() if k != "flip"})):
        model = _model(m, len(data.class_names))
        terms = m.losses(model, b)
        assert torch.isfinite(terms["entropy"])
        sum(terms.values()).backward()
    clear_cache()


def test_boundaries_field_enters_the_key():
    from scribbleseg.experiment import _method_spec

    assert _method_spec(URSS(boundaries="batch"))["boundaries"] == "batch"
    assert _method_spec(URSS())["boundaries"] == "cached"
    with pytest.raises(ValueError, match="URSS.boundaries"):
        URSS(boundaries="disk")

def test_detached_teacher_changes_only_the_gradient():
    batch = _batch(step=1)
    grads = []
    for detach in (False, True):
        method = URSS(self_supervision="eigenspace", entropy="none", detach_teacher=detach, transform="flip")
        model = _model(method)
        ss = method.losses(model, batch)["ss"]
        grads.append((ss.item(), torch.autograd.grad(ss, model.base.stem[0].weight)[0]))
    assert grads[0][0] == pytest.approx(grads[1][0]) and not torch.allclose(grads[0][1], grads[1][1])


def test_grid_stride_uses_the_models_output_stride():
    from scribbleseg.urss.method import grid_stride

    class DeepLabLike:
        output_stride = 8

    assert grid_stride(DeepLabLike(), (465, 465), (59, 59)) == 8   # DeepLab's crop: 59 = (465 - 1) / 8 + 1
    assert grid_stride(object(), (128, 128), (32, 32)) == 4
    with pytest.raises(ValueError, match="multiple"):
        grid_stride(object(), (30, 30), (8, 8))
    with pytest.raises(ValueError, match="URSS.transform"):
        URSS(transform="rotate")


def test_urss_two_stage_training_and_reload(tiny_dataset, tmp_path, monkeypatch):
    from scribbleseg.data.folder import ScribbleVariant
    from scribbleseg.evaluate import evaluate
    from scribbleseg.experiment import load_data, run_experiment
    from scribbleseg.train import TrainConfig

    cfg_ds, root = tiny_dataset
    monkeypatch.setattr("scribbleseg.experiment.ensure_embedded", lambda c: root)
    from scribbleseg.urss.boundaries import cache_info, clear_cache

    cfg = TrainConfig(width=4, epochs=2, batch_size=8, lr=1e-2)
    clear_cache()
    for stage1, stage2 in ((URSS(), URSS(self_supervision="eigenspace")),
                           (URSS.released(), URSS.released(self_supervision="eigenspace", transform="translate"))):
        first = run_experiment(cfg_ds, ScribbleVariant(), cfg, stage1, log=lambda *_: None, root=tmp_path)
        second = run_experiment(cfg_ds, ScribbleVariant(), cfg, stage2, log=lambda *_: None, root=tmp_path, init=first)
        assert set(first.history[-1]) >= {"ce", "entropy"} and set(second.history[-1]) >= {"ce", "entropy", "ss"}
        assert all(math.isfinite(h["loss"]) for h in first.history + second.history)
        assert second.spec["init"] == first.key
        model = second.load_model(stage2)
        with torch.no_grad():
            assert evaluate(model, load_data(cfg_ds, "val"))["miou"] == pytest.approx(second.metrics["miou"])
    n = len(load_data(cfg_ds, "train"))                       # 4 runs x 2 epochs, boundaries computed once per image
    assert cache_info()["misses"] == n and cache_info()["hits"] == 7 * n
    clear_cache()
