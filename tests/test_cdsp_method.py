"""CDSP stage 1 (Eq. 4, 6: classifier, CAMs, pseudo-labels), the per-index pseudo-label store and the method."""
import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from scribbleseg.cdsp.classifier import CAMClassifier, ClassifierConfig, image_labels, train_classifier
from scribbleseg.cdsp.pseudo_labels import (cam_scores, pseudo_label_miou, pseudo_labels, scores_to_labels,
                                            threshold_sweep)
from scribbleseg.cdsp.store import PseudoLabels
from scribbleseg.constants import IGNORE_INDEX

U = IGNORE_INDEX


def test_image_labels_from_scribbles():
    s = torch.full((2, 3, 3), U)
    s[0, 0, 0], s[0, 1, 1], s[1, 2, 2] = 0, 2, 0
    assert image_labels(s, 4).tolist() == [[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]       # background dropped


def test_cam_of_hand_set_linear_classifier_is_equation_6():
    torch.manual_seed(0)
    c, k1 = 4, 3
    clf = CAMClassifier(nn.Identity(), c, k1)                                      # the input is F itself
    with torch.no_grad():
        clf.fc.weight.copy_(torch.randn(k1, c))
        clf.fc.bias.copy_(torch.randn(k1))
    f = torch.randn(2, c, 3, 5)
    cams = clf.cams(f)
    w = clf.fc.weight
    for n in range(2):
        for k in range(k1):
            expect = torch.relu(sum(w[k, i] * f[n, i] for i in range(c)))         # ReLU(sum_i W_ik F_i)
            assert torch.allclose(cams[n, k], expect, atol=1e-6)
    lin = torch.einsum("kc,nchw->nkhw", w, f)                                    # before the ReLU: GAP commutes
    assert torch.allclose(clf(f)["logits"], lin.mean((2, 3)) + clf.fc.bias, atol=1e-6)


def test_cam_scores_threshold_and_present_classes():
    cams = torch.zeros(1, 3, 1, 4)
    cams[0, 0] = torch.tensor([4.0, 2.0, 0.0, 0.0])                              # class 1: normalised 1, .5, 0, 0
    cams[0, 1] = torch.tensor([0.0, 0.0, 9.0, 0.0])                              # class 2 absent from the scribbles
    cams[0, 2] = torch.tensor([0.0, 3.0, 0.0, 1.0])                              # class 3: 0, 1, 0, 1/3
    present = torch.tensor([[1.0, 0.0, 1.0]])
    labels = scores_to_labels(cam_scores(cams, present, 0.4, (1, 4)))
    assert labels.tolist() == [[[1, 3, 0, 0]]]                                    # 1/3 < 0.4: background
    assert scores_to_labels(cam_scores(cams, present, 0.3, (1, 4))).tolist() == [[[1, 3, 0, 3]]]
    assert scores_to_labels(cam_scores(cams, torch.zeros(1, 3), 0.01, (1, 4))).tolist() == [[[0, 0, 0, 0]]]


def test_pseudo_label_miou():
    masks = np.array([[[0, 1], [1, U]]], np.uint8)
    assert pseudo_label_miou(masks.copy(), masks, 2) == 100.0
    assert pseudo_label_miou(np.array([[[0, 0], [1, 1]]]), masks, 2) == pytest.approx((50 + 50) / 2)
    assert pseudo_label_miou(np.array([[[0, U], [1, 1]]]), masks, 2) == 100.0      # unlabelled pseudo pixels skipped


@pytest.fixture(scope="module")
def tiny_train(tiny_dataset):
    from scribbleseg.constants import EMBEDDED_CLASSES
    from scribbleseg.data.folder import load_split

    return load_split(tiny_dataset[1], "train", EMBEDDED_CLASSES)


@pytest.fixture(scope="module")
def tiny_classifier(tiny_train):
    return train_classifier(tiny_train, ClassifierConfig(width=4, epochs=2, batch_size=8))


def test_classifier_trains_and_gives_pseudo_labels(tiny_train, tiny_classifier):
    model, rows = tiny_classifier
    assert len(rows) == 2 and all(math.isfinite(r["bce"]) for r in rows)
    labels = pseudo_labels(model, tiny_train, threshold=0.3, batch_size=10)
    assert labels.shape == tiny_train.masks.shape and labels.dtype == np.uint8 and labels.max() < tiny_train.num_classes
    present = image_labels(torch.from_numpy(tiny_train.scribbles).long(), tiny_train.num_classes).numpy()
    for lab, pres in zip(labels, present):                                       # only classes of the scribbles
        assert set(np.unique(lab)) <= {0} | {c + 1 for c in np.flatnonzero(pres)}
    sweep = threshold_sweep(model, tiny_train, (0.2, 0.5))
    assert set(sweep) == {0.2, 0.5} and all(0 <= v <= 100 for v in sweep.values())
    assert sweep[0.2] == pytest.approx(pseudo_label_miou(pseudo_labels(model, tiny_train, 0.2), tiny_train.masks, 11))
    crf = pseudo_labels(model, tiny_train, threshold=0.3, crf=True)
    assert crf.shape == labels.shape and crf.max() < tiny_train.num_classes
    with pytest.raises(ValueError, match="threshold"):
        pseudo_labels(model, tiny_train, threshold=1.5)


def test_store_key_replace_and_flips(tiny_train):
    from scribbleseg.cdsp.method import CDSP
    from scribbleseg.train import to_batch

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 11, tiny_train.masks.shape).astype(np.uint8)
    pl = PseudoLabels.from_array(labels, tiny_train.images)
    other = PseudoLabels.from_array(np.where(labels == 3, 0, labels), tiny_train.images)
    assert pl.key != other.key and pl == PseudoLabels.from_array(labels.copy(), tiny_train.images)
    method = CDSP(pseudo=pl)
    spec = json.dumps(dataclasses.asdict(method))                                # what the experiment key hashes
    assert pl.key in spec and "pseudo" in spec
    assert np.array_equal(dataclasses.replace(method, lorm=False).pseudo.labels, labels)   # replace keeps them
    idx = np.arange(len(tiny_train))
    flips = rng.random(len(idx)) < 0.5
    batch = to_batch(tiny_train, idx, flips, torch.device("cpu"))
    assert np.array_equal(pl.flips(batch), flips)                                 # to_batch says which
    expect = np.where(flips[:, None, None], labels[:, :, ::-1], labels)
    assert np.array_equal(pl.batch_labels(batch).numpy(), expect)
    assert np.array_equal(batch["scribble"].numpy(), np.where(flips[:, None, None], tiny_train.scribbles[:, :, ::-1],
                                                              tiny_train.scribbles))  # labels follow the images
    with pytest.raises(ValueError, match="flip"):
        pl.batch_labels({k: v for k, v in batch.items() if k != "flip"})
    with pytest.raises(ValueError, match="needs pseudo"):
        CDSP()
    with pytest.raises(ValueError, match="CDSP.lorm_mask"):
        CDSP(pseudo=pl, lorm_mask="rows")


def test_cdsp_trains_reloads_and_caches(tiny_dataset, tiny_train, tiny_classifier, tmp_path, monkeypatch):
    from scribbleseg.data.folder import ScribbleVariant
    from scribbleseg.evaluate import evaluate
    from scribbleseg.experiment import experiment_key, load_data, run_experiment
    from scribbleseg.cdsp.method import CDSP
    from scribbleseg.train import TrainConfig

    cfg_ds, root = tiny_dataset
    monkeypatch.setattr("scribbleseg.experiment.ensure_embedded", lambda c: root)
    pl = PseudoLabels.from_array(pseudo_labels(tiny_classifier[0], tiny_train, 0.3), tiny_train.images)
    cfg = TrainConfig(width=4, epochs=2, batch_size=8, lr=1e-2)
    released = CDSP(pseudo=pl, lorm_mask="query", lorm_downsample="bilinear", lorm_reduction="nonzero",
                    scribble_seeds="foreground", frame_is_boundary=True, del_count="terms")
    for method in (CDSP(pseudo=pl), released, CDSP(pseudo=pl, lorm_features="decoder", ds=False),
                   CDSP(segc=False, dc=False, lorm=False)):
        r = run_experiment(cfg_ds, ScribbleVariant(), cfg, method, log=lambda *_: None, root=tmp_path)
        on = {k for k in ("segs", "segc", "ds", "dc", "lorm") if getattr(method, k)}
        assert set(r.history[-1]) >= on and all(math.isfinite(h["loss"]) for h in r.history)
        model = r.load_model(method)
        with torch.no_grad():                                                    # the reloaded network is the trained one
            assert evaluate(model, load_data(cfg_ds, "val"))["miou"] == pytest.approx(r.metrics["miou"])
        assert run_experiment(cfg_ds, ScribbleVariant(), cfg, method, log=lambda *_: None, root=tmp_path).cached
    other = PseudoLabels.from_array(np.zeros_like(pl.labels), tiny_train.images)
    key = lambda m: experiment_key(cfg_ds, ScribbleVariant(), cfg, m)[0]
    assert key(CDSP(pseudo=pl)) != key(CDSP(pseudo=other))                       # new pseudo-labels, new run


def test_lorm_taps_the_last_backbone_stage():
    from scribbleseg.cdsp.model import CDSPNet
    from scribbleseg.models.build import build_model

    x = torch.randn(2, 3, 64, 64)
    for name, shape in (("small", (2, 32, 4, 4)), ("deeplabv3plus", (2, 512, 4, 4)), ("deeplabv2", (2, 512, 4, 4))):
        base = build_model(name, 5, backbone="resnet18", output_stride=16, width=4).eval()
        net = CDSPNet(base).eval()
        with torch.no_grad():
            out = net(x)
            assert tuple(out["lorm_features"].shape) == shape and net.lorm.query.in_channels == shape[1]
            assert torch.equal(out["logits"], base(x)["logits"])                  # LoRM leaves the prediction alone
            assert not base.features(x).requires_grad and "lorm_features" not in base(x)  # the hook is gone
    dec = CDSPNet(build_model("small", 5, width=4), source="decoder")
    assert dec(x)["lorm_features"].shape == (2, 12, 16, 16)
