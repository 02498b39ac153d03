"""The engine: determinism, resume after a kill without lost work, the results cache, empty scribbles."""
import csv

import numpy as np
import pytest
import torch

from scribbleseg.constants import EMBEDDED_CLASSES, IGNORE_INDEX
from scribbleseg.data.folder import ScribbleVariant, load_split
from scribbleseg.experiment import experiment_key, run_experiment
from scribbleseg.baseline import PartialCE
from scribbleseg.train import TrainConfig, train

CFG = TrainConfig(width=4, epochs=2, batch_size=8, lr=1e-2)


@pytest.fixture(scope="module")
def split(tiny_dataset):
    return load_split(tiny_dataset[1], "train", EMBEDDED_CLASSES)


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.state_dict().values() if p.dtype.is_floating_point])


def test_same_seed_same_weights(split, tmp_path):
    a, _ = train(CFG, PartialCE(), split, tmp_path / "a", log=lambda *_: None)
    b, _ = train(CFG, PartialCE(), split, tmp_path / "b", log=lambda *_: None)
    assert torch.equal(_params(a), _params(b))
    c, _ = train(TrainConfig(**{**CFG.__dict__, "seed": 1}), PartialCE(), split, tmp_path / "c", log=lambda *_: None)
    assert not torch.equal(_params(a), _params(c))


def test_resume_after_kill_equals_uninterrupted(split, tmp_path):
    full, rows_full = train(CFG, PartialCE(), split, tmp_path / "full", log=lambda *_: None)
    # "kill" after epoch 1: train a one-epoch-long prefix by interrupting inside epoch 2
    calls = {"n": 0}

    class Killer(PartialCE):
        def losses(self, model, batch):
            calls["n"] += 1
            if calls["n"] > len(split.ids) // CFG.batch_size:  # first step of epoch 2
                raise KeyboardInterrupt
            return super().losses(model, batch)

    with pytest.raises(KeyboardInterrupt):
        train(CFG, Killer(), split, tmp_path / "killed", log=lambda *_: None)
    assert (tmp_path / "killed" / "ckpt.pt").exists()
    logs = []
    resumed, rows = train(CFG, PartialCE(), split, tmp_path / "killed", log=logs.append)
    assert any("resuming" in m for m in logs)
    assert torch.equal(_params(full), _params(resumed))
    assert [r["epoch"] for r in rows] == [1, 2]
    with open(tmp_path / "killed" / "metrics.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2]


def test_no_scribble_pixel_trains_without_nan(split, tmp_path):
    empty = type(split)(split.ids, split.images, split.masks, np.full_like(split.scribbles, IGNORE_INDEX),
                        split.strokes, split.class_names)
    model, rows = train(CFG, PartialCE(), empty, tmp_path / "e", log=lambda *_: None)
    assert all(r["ce"] == 0.0 for r in rows)
    assert torch.isfinite(_params(model)).all()


def test_results_cache_trains_once(tiny_dataset, tmp_path, monkeypatch):
    cfg_ds, root = tiny_dataset
    monkeypatch.setattr("scribbleseg.experiment.ensure_embedded", lambda c: root)
    first = run_experiment(cfg_ds, ScribbleVariant(), CFG, PartialCE(), log=lambda *_: None, root=tmp_path)
    again = run_experiment(cfg_ds, ScribbleVariant(), CFG, PartialCE(), log=lambda *_: None, root=tmp_path)
    assert not first.cached and again.cached
    assert again.metrics == first.metrics and 0 <= first.metrics["miou"] <= 100
    assert torch.equal(_params(first.load_model()), _params(again.load_model()))
    # every part of the configuration enters the key
    k = experiment_key(cfg_ds, ScribbleVariant(), CFG, PartialCE())[0]
    assert k != experiment_key(cfg_ds, ScribbleVariant(drop=0.5), CFG, PartialCE())[0]
    assert k != experiment_key(cfg_ds, ScribbleVariant(), CFG, PartialCE("mask"))[0]
    assert k != experiment_key(cfg_ds, ScribbleVariant(), TrainConfig(**{**CFG.__dict__, "lr": 0.1}), PartialCE())[0]


def test_bad_optimizer_and_schedule_named(split, tmp_path):
    with pytest.raises(ValueError, match="optimizer"):
        train(TrainConfig(**{**CFG.__dict__, "optimizer": "adam"}), PartialCE(), split, tmp_path / "o")
    with pytest.raises(ValueError, match="schedule"):
        train(TrainConfig(**{**CFG.__dict__, "schedule": "cos"}), PartialCE(), split, tmp_path / "s")
    with pytest.raises(ValueError, match="target"):
        PartialCE("masks")


def test_evaluate_with_crf_and_multiscale(split, tmp_path):
    pytest.importorskip("pydensecrf")
    from scribbleseg.crf import dense_crf
    from scribbleseg.evaluate import evaluate, predict_split
    from scribbleseg.inference import predict
    from scribbleseg.train import to_batch

    model, _ = train(CFG, PartialCE("mask"), split, tmp_path / "m", log=lambda *_: None)
    plain = evaluate(model, split)
    refined = evaluate(model, split, crf=True, scales=(0.75, 1.0), flip=True)
    for m in (plain, refined):
        assert 0 <= m["miou"] <= 100 and m["num_classes"] == len(EMBEDDED_CLASSES)
    # the CRF path is the argmax of dense_crf on the image and the multi-scale probabilities
    labels = predict_split(model, split, crf=True, scales=(0.75, 1.0), flip=True)
    probs = predict(model, to_batch(split, np.arange(1), None, torch.device("cpu"))["image"], (0.75, 1.0), True)
    expect = dense_crf(split.images[0], probs[0].numpy()).argmax(0)
    assert np.array_equal(labels[0], expect)


def test_two_stage_starts_from_the_first_stage(tiny_dataset, tmp_path, monkeypatch):
    """Stage 2 loads stage 1's weights (epochs=0 leaves them untouched), and its key names stage 1's."""
    from scribbleseg.potts.study import TwoStage, length_variant

    cfg_ds, root = tiny_dataset
    monkeypatch.setattr("scribbleseg.experiment.ensure_embedded", lambda c: root)
    monkeypatch.setenv("SCRIBBLESEG_CACHE", str(tmp_path))
    two = TwoStage(cfg_ds, {"width": 4, "epochs": 1, "batch_size": 8}, {"width": 4, "epochs": 0, "batch_size": 8},
                   log=lambda *_: None)
    first, second = two.first(1.0, 0), two.second(PartialCE(), 1.0, 0)
    assert torch.equal(_params(first.load_model()), _params(second.load_model()))
    assert second.spec["init"] == first.key
    assert experiment_key(cfg_ds, ScribbleVariant(), CFG, PartialCE(), init="x")[0] != \
        experiment_key(cfg_ds, ScribbleVariant(), CFG, PartialCE())[0]
    assert length_variant(1.0) == ScribbleVariant() and length_variant(0.0).shrink == 1.0
    assert length_variant(0.3).shrink == 0.7
    with pytest.raises(ValueError, match="length ratio"):
        length_variant(1.5)


def test_describe_states_the_recipe_of_the_config():
    from scribbleseg.train import TrainConfig, describe

    text = describe(TrainConfig(epochs=4), 2000)
    assert text.startswith("small width 16, AdamW lr 0.002, weight decay 0.0001, one-cycle (10% linear warm-up")
    assert "batch 16, 4 epochs (500 steps)" in text and "from scratch" in text
    sgd = describe(TrainConfig(model="deeplabv2", backbone="resnet101", output_stride=8, optimizer="sgd",
                               schedule="poly", weights="imagenet"))
    assert sgd.startswith("deeplabv2 resnet101 OS8, SGD (momentum 0.9)") and "poly decay (power 0.9)" in sgd
    assert "steps" not in sgd and "ImageNet weights" in sgd


def test_released_options_added_later_enter_the_key_only_when_set():
    """Options added after runs were cached (KEY_OPTIONAL) leave the default keys as they were."""
    from scribbleseg.data.embedded import EmbeddedConfig
    from scribbleseg.data.folder import ScribbleVariant
    from scribbleseg.experiment import experiment_key
    from scribbleseg.blpseg.method import BLPSeg
    from scribbleseg.cdsp.method import CDSP
    from scribbleseg.urss.method import URSS
    from scribbleseg.train import TrainConfig

    def key(m):
        return experiment_key(EmbeddedConfig(), ScribbleVariant(), TrainConfig(), m)

    for default, changed, field in [(URSS(), URSS(translation="crop"), "translation"),
                                    (URSS(), URSS(align_corners=True), "align_corners"),
                                    (CDSP(segc=False, dc=False, lorm=False), CDSP(segc=False, dc=False, lorm=False,
                                                                                  align_corners=True), "align_corners"),
                                    (BLPSeg(), BLPSeg(head_batchnorm=False), "head_batchnorm")]:
        assert field not in key(default)[1]["method"] and field in key(changed)[1]["method"]
        assert key(default)[0] != key(changed)[0]
    released = CDSP.released(segc=False, dc=False, lorm=False)
    assert (released.scribble_seeds, released.frame_is_boundary, released.del_count, released.align_corners) == \
        ("foreground", True, "terms", True)
