"""Stage 1 of CDSP (Zhang et al., "Scribble Hides Class", AAAI 2024): the multi-label classifier of
Eq. (4) and its class activation maps, Eq. (6).

    k = image-level classes of an image = the classes its scribbles carry                         (4)
    CAM_k(I) = ReLU( sum_{i=1}^C W_{i,k} F_i ),   F = C(I) in R^{C x HW}                          (6)

The classifier is a segmentation network's feature extractor ("small": SmallSegNet's stride-4 decoder
features; a torchvision backbone name: its last stage, stride 16), global average pooling and a
fully connected layer, trained with binary cross-entropy on the image-level labels. Class 0 is the
background (as in every dataset here): the classifier has K - 1 outputs, one per foreground class
(output j is class j + 1); the background of the pseudo-label comes from thresholding the CAMs
(:mod:`scribbleseg.cdsp.pseudo_labels`).

Shapes: image (N, 3, H, W); scribble (N, H, W) long with IGNORE_INDEX; image labels (N, K - 1);
features (N, C, h, w); CAMs (N, K - 1, h, w).
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scribbleseg.constants import IGNORE_INDEX
from scribbleseg.data.folder import SplitData
from scribbleseg.train import fit_epoch, to_batch
from scribbleseg.models.small import SmallSegNet
from scribbleseg.models.backbones import build_backbone


def image_labels(scribble: torch.Tensor, num_classes: int) -> torch.Tensor:
    """k of Eq. (4): (N, K - 1) float multi-hot of the foreground classes present in each image's scribbles."""
    present = torch.stack([torch.bincount(s[s != IGNORE_INDEX].flatten(), minlength=num_classes)[:num_classes] > 0
                           for s in scribble])                                 # (N, K)
    return present[:, 1:].float()                                              # background dropped


class CAMClassifier(nn.Module):
    """Feature extractor + global average pooling + FC to K - 1 foreground classes.

    Args:
        features: module mapping (N, 3, H, W) to (N, C, h, w). feat_dim: C. num_outputs: K - 1.

    forward(x) -> {"features": F (N, C, h, w), "logits": (N, K - 1)}; :meth:`cams` gives Eq. (6).
    """

    def __init__(self, features: nn.Module, feat_dim: int, num_outputs: int):
        super().__init__()
        self.extractor = features
        self.fc = nn.Linear(feat_dim, num_outputs)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.extractor(x)                                                  # (N, C, h, w)
        return {"features": f, "logits": self.fc(f.mean((2, 3)))}               # GAP then FC

    def cams(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. (6): (N, K - 1, h, w) = ReLU(sum_i W_ik F_i) (the FC bias does not enter)."""
        f = self.extractor(x)                                                  # (N, C, h, w)
        return torch.relu(torch.einsum("kc,nchw->nkhw", self.fc.weight, f))    # (6)


class _SmallFeatures(nn.Module):
    def __init__(self, width: int):
        super().__init__()

        self.net = SmallSegNet(1, width)
        self.net.classifier = nn.Identity()                                    # only its features are used
        self.dim = self.net.feature_dim

    def forward(self, x):
        return self.net.features(x)                                            # (N, 3w, H/4, W/4)


class _BackboneFeatures(nn.Module):
    def __init__(self, name: str, weights: str | None):
        super().__init__()

        self.net = build_backbone(name, 16, weights)
        self.dim = self.net.out_channels

    def forward(self, x):
        return self.net(x)["out"]                                              # (N, C, H/16, W/16)


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    """Training of the stage-1 classifier (a plain loop; "short" vs "long" training = ``epochs``).

    Attributes:
        model: "small" (SmallSegNet features, ``width``) or a backbone name ("resnet50", ...).
        epochs, batch_size, lr, weight_decay: AdamW with a constant learning rate. flip: random
        horizontal flips. seed: initialisation, batch order and flips. weights: None or "imagenet".
    """

    model: str = "small"
    width: int = 16
    epochs: int = 10
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    flip: bool = True
    seed: int = 0
    weights: str | None = None


def build_classifier(cfg: ClassifierConfig, num_classes: int) -> CAMClassifier:
    """The classifier of ``cfg`` for K = ``num_classes`` classes (K - 1 outputs), initialised from ``cfg.seed``."""
    torch.manual_seed(cfg.seed)
    feats = _SmallFeatures(cfg.width) if cfg.model == "small" else _BackboneFeatures(cfg.model, cfg.weights)
    return CAMClassifier(feats, feats.dim, num_classes - 1)


def train_classifier(data: SplitData, cfg: ClassifierConfig = ClassifierConfig(), device=None,
                     log=None) -> tuple[CAMClassifier, list[dict]]:
    """Train the multi-label classifier on an in-memory split with BCE on the scribbles' image labels.

    Returns:
        (classifier in eval mode, one row per epoch: {"epoch", "bce", "seconds"}).
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = build_classifier(cfg, data.num_classes).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n, rows = len(data), []
    steps = max(1, n // cfg.batch_size)
    for epoch in range(cfg.epochs):
        model.train()
        rng = np.random.default_rng([cfg.seed, epoch, 1])
        order = rng.permutation(n)
        flips = rng.random(n) < 0.5 if cfg.flip else np.zeros(n, dtype=bool)
        t0 = time.time()
        batches = (to_batch(data, idx, flips[idx], device)
                   for idx in (order[s * cfg.batch_size:(s + 1) * cfg.batch_size] for s in range(steps)))
        history = fit_epoch(model, opt, batches, lambda m, batch: {"bce": F.binary_cross_entropy_with_logits(
            m(batch["image"])["logits"], image_labels(batch["scribble"], data.num_classes))})  # Eq. (4) targets
        rows.append({"epoch": epoch + 1, "bce": sum(h["bce"] for h in history) / steps,
                     "seconds": round(time.time() - t0, 2)})
        if log:
            log(f"classifier epoch {epoch + 1}/{cfg.epochs} bce={rows[-1]['bce']:.4f}")
    return model.eval(), rows
