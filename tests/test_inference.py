"""Tests for scribbleseg.inference.predict and scribbleseg.crf.dense_crf."""
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from scribbleseg.inference import predict
from scribbleseg.models.base import SegmentationModel, upsample

torch.set_num_threads(1)
K = 3


class TinyNet(SegmentationModel):
    """conv3x3 -> BN -> ReLU -> avgpool(2) (output stride 2) -> dropout -> 1x1 classifier."""

    output_stride = 2

    def __init__(self, symmetric: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        if symmetric:  # mirror-symmetric kernels make the whole net flip-equivariant
            with torch.no_grad():
                self.conv.weight.copy_((self.conv.weight + self.conv.weight.flip(-1)) / 2)
        self.bn = nn.BatchNorm2d(6)
        self.drop = nn.Dropout2d(0.5)
        self.classifier = nn.Conv2d(6, K, 1)

    def features(self, x):
        return self.drop(F.avg_pool2d(F.relu(self.bn(self.conv(x))), 2))


def images(n=2, h=8, w=12):
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(1))


def test_shape_and_probabilities():
    x = images()
    for scales, flip in [((1.0,), False), ((0.5, 1.0, 1.5), True)]:
        p = predict(TinyNet(), x, scales=scales, flip=flip)
        assert p.shape == (2, K, 8, 12) and not p.requires_grad
        assert torch.all(p >= 0)
        torch.testing.assert_close(p.sum(1), torch.ones(2, 8, 12))


def test_multiscale_is_average_of_scales():
    model, x = TinyNet().eval(), images()
    with torch.no_grad():
        manual = [upsample(model(F.interpolate(x, size=(int(8 * s), int(12 * s)), mode="bilinear",
                                               align_corners=False))["logits"], (8, 12)).softmax(1)
                  for s in (0.5, 1.5)]
    torch.testing.assert_close(predict(model, x, scales=(0.5, 1.5)), (manual[0] + manual[1]) / 2)


def test_flip_equivariance():
    x = images()
    sym = TinyNet(symmetric=True)
    p = predict(sym, x)
    torch.testing.assert_close(predict(sym, x.flip(-1)), p.flip(-1))
    torch.testing.assert_close(predict(sym, x, flip=True), p)  # flipping adds nothing here
    # with flip averaging, any model becomes flip-equivariant
    gen = TinyNet()
    torch.testing.assert_close(predict(gen, x.flip(-1), scales=(1.0, 1.5), flip=True),
                               predict(gen, x, scales=(1.0, 1.5), flip=True).flip(-1))


def test_eval_mode_used_and_restored():
    model, x = TinyNet(), images()
    model.train()
    model.bn.eval()  # mixed modes must come back exactly
    running = model.bn.running_mean.clone()
    p1, p2 = predict(model, x), predict(model, x)
    torch.testing.assert_close(p1, p2)  # dropout off: deterministic
    torch.testing.assert_close(model.bn.running_mean, running)
    assert model.training and model.drop.training and not model.bn.training


def test_bad_scales():
    with pytest.raises(ValueError, match="scales"):
        predict(TinyNet(), images(), scales=(0.0,))


def test_dense_crf_shape_and_boundary():
    pytest.importorskip("pydensecrf.densecrf", reason="pip install pydensecrf2")
    from scribbleseg.crf import dense_crf

    h, w = 16, 20
    image = np.zeros((h, w, 3), dtype=np.uint8)
    image[:, w // 2:] = 255                      # left black, right white
    truth = np.zeros((h, w), dtype=np.int64)
    truth[:, w // 2:] = 1
    rng = np.random.default_rng(0)
    p1 = np.where(truth == 1, 0.6, 0.4) + rng.uniform(-0.25, 0.25, size=(h, w))
    p1 = np.clip(p1, 0.05, 0.95)
    probs = np.stack([1 - p1, p1]).astype(np.float32)
    refined = dense_crf(image, probs)
    assert refined.shape == (2, h, w) and refined.dtype == np.float32
    np.testing.assert_allclose(refined.sum(0), 1.0, atol=1e-4)
    err_before = (probs.argmax(0) != truth).mean()
    err_after = (refined.argmax(0) != truth).mean()
    assert err_before > 0.05 and err_after < err_before / 2
    # a Fortran-ordered probability array gives the same result
    refined_f = dense_crf(image, np.asfortranarray(probs))
    np.testing.assert_allclose(refined_f, refined, atol=1e-5)


def test_dense_crf_missing_package_says_how_to_install(monkeypatch):
    from scribbleseg.crf import dense_crf

    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    with pytest.raises(ImportError, match="pip install pydensecrf2"):
        dense_crf(np.zeros((2, 2, 3), np.uint8), np.full((2, 2, 2), 0.5, np.float32))
