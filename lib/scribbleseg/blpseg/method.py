"""BLPSeg (Wang et al., IEEE TIP 2023) as a training method: loss (12) = WCE (1) + BL (9), with the LAM,
and self-training (Sec. IV-B).

``wrap(base, K)`` turns the configured network into a :class:`~scribbleseg.blpseg.model.BLPSegNet`
(the training loop calls it); ``losses(model, batch)`` returns {"scribble_head": WCE, "seg": BL} with the BLP
loss, {"seg": CE or focal} otherwise (the scribble head is then left untrained, as in Table I's rows
without BLP).
Both heads' losses are those of their logits upsampled to the label size; the BLP loss on scribbles is evaluated
at the labelled pixels only (:mod:`~scribbleseg.blpseg.labelled`, the same function; ``SPARSE_FRACTION``), the
scribble head's WCE (all pixels) and the other losses at full resolution. Self-training: from global step
``self_train_from`` on, the segmentation head's target is its own prediction sharpened to one-hot
(paper), or with ``self_train="released"`` the released code's rule: argmax restricted to the image-level
classes, unlabelled where the max probability < ``self_train_threshold``, scribble pixels override. The
released data pipeline builds the class vector after mapping unlabelled pixels to class 0, so background
(class 0) is always among the image's classes: an image without scribbles keeps its confident background
pseudo-labels, and one without a background stroke still allows background. (The released rule also unlabels
padded crop pixels, which its pipeline marks 255 apart from unscribbled ones, K; ours marks both IGNORE_INDEX,
so padding can receive a pseudo-label: a difference on padded VOC crops only.)

Released-code options (default = paper), see :mod:`scribbleseg.blpseg.losses`: ``normalize="weights"``,
``detach_weight``, ``renormalize_scrib=False``, ``detach_scribble_features`` (scribble head on detached
decoder features), ``detach_scrib_in_loss`` (p_scrib detached in BL), ``low_projection`` (a 1x1 convolution
after the LayerNorm of the LAM's low-level features), ``head_batchnorm=False`` (the released heads are
"1x1 conv + ReLU" twice and a 1x1 classifier, without BatchNorm; ours follow the paper's "conv + BN + ReLU"
reading of Fig. 4, our choice since the paper does not name the normalisation). The released code also aggregates logits before upsampling
and uses no temperature, as the paper's Eq. (4)-(8) and this implementation do.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
import torch.nn.functional as F

from scribbleseg.blpseg.model import BLPSegNet
from scribbleseg.constants import IGNORE_INDEX
from scribbleseg.data.grid import labels_to_grid
from scribbleseg.blpseg.labelled import blp_loss_from_grid
from scribbleseg.blpseg.losses import annotation_probability, blp_loss, focal_loss, scribble_head_loss
from scribbleseg.losses import partial_cross_entropy
from scribbleseg.method import check_choices
from scribbleseg.models.base import upsample
from scribbleseg.blpseg.lam import LAM
from scribbleseg.distributed import unwrap

SPARSE_FRACTION = 0.25
"""The BLP loss is evaluated at the labelled pixels from the grid logits (:mod:`~scribbleseg.blpseg.labelled`,
the same function) where at most this fraction of the target is labelled (scribbles), else at full resolution
(self-training's dense pseudo-labels). Measured break-even on the cpu benchmark: between 50 % and 100 %."""


@dataclasses.dataclass(frozen=True)
class BLPSeg:
    lam: bool = True
    sigma: float = 6.0
    similarity: tuple = ("low", "distance")
    learn_sigma: bool = False
    region: str = "all"
    lam_impl: str = "dense"
    loss: str = "blp"
    gamma: float = 2.0
    empty_weight: float = 0.02
    hidden: int = 64
    low_dim: int = 32
    self_train_from: int | None = None
    self_train: str = "paper"
    self_train_threshold: float = 0.9
    normalize: str = "pixels"
    detach_weight: bool = False
    renormalize_scrib: bool = True
    detach_scribble_features: bool = False
    detach_scrib_in_loss: bool = False
    low_projection: bool = False
    head_batchnorm: bool = True

    NAME: ClassVar[str] = "scribbleseg.methods.blpseg.BLPSeg"  # the cache key's name (stable across moves)
    KEY_OPTIONAL: ClassVar[dict] = {"low_projection": False, "head_batchnorm": True}  # added later: enters the cache key only when set

    CHOICES: ClassVar[dict] = {"region": ("all", "labelled", "unlabelled"), "loss": ("blp", "ce", "focal"),
                               "self_train": ("paper", "released"), "normalize": ("pixels", "weights")}

    def __post_init__(self):
        check_choices(self, self.CHOICES)
        object.__setattr__(self, "similarity", tuple(self.similarity))

    def wrap(self, base, num_classes: int) -> BLPSegNet:
        lam = LAM(self.sigma, self.similarity, self.learn_sigma, self.lam_impl) if self.lam else None
        return BLPSegNet(base, num_classes, base.classifier.in_channels, self.hidden, lam, self.low_dim,
                         self.detach_scribble_features, self.low_projection, self.head_batchnorm)

    def _sources(self, scribble: torch.Tensor, size, k: int):
        if not self.lam or self.region == "all":
            return None
        labelled = labels_to_grid(scribble, size, k) != IGNORE_INDEX               # (N, h, w)
        return labelled if self.region == "labelled" else ~labelled

    def pseudo_labels(self, logits: torch.Tensor, scribble: torch.Tensor) -> torch.Tensor:
        """Self-training target (N, H, W) from full-resolution segmentation logits (N, K, H, W)."""
        p = torch.softmax(logits.detach(), 1)
        if self.self_train == "paper":
            return p.argmax(1)                                                      # one-hot sharpening
        k = p.shape[1]
        present = torch.stack([torch.bincount(s[s != IGNORE_INDEX], minlength=k)[:k] > 0 for s in scribble])  # (N, K)
        present[:, 0] = True                                                        # background always (released data)
        p = p * present[:, :, None, None]                                           # classes of the image only
        conf, label = p.max(1)
        label = label.masked_fill(conf < self.self_train_threshold, IGNORE_INDEX)
        return torch.where(scribble != IGNORE_INDEX, scribble, label)               # scribbles override

    def losses(self, model: torch.nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        scribble = batch["scribble"]
        size = scribble.shape[-2:]
        grid = (batch["image"].shape[-2] // 4, batch["image"].shape[-1] // 4)
        out = model(batch["image"], self._sources(scribble, grid, unwrap(model).seg_head[-1].out_channels))
        self_train = self.self_train_from is not None and batch.get("step", 0) >= self.self_train_from
        logits = upsample(out["logits"], size) if self_train or self.loss != "blp" else None  # (N, K, H, W)
        target = self.pseudo_labels(logits, scribble) if self_train else scribble
        if self.loss != "blp":  # Table I without BLP: no head loss, so the scribble head is not upsampled either
            if self.loss == "ce":
                return {"seg": partial_cross_entropy(logits, target)}
            return {"seg": focal_loss(logits, target, self.gamma, self.normalize, self.detach_weight)}
        scrib = upsample(out["scrib_logits"], size)                                 # (N, K+1, H, W)
        terms = {"scribble_head": scribble_head_loss(scrib, scribble, self.empty_weight, self.normalize)}  # (1)
        opts = (self.gamma, self.normalize, self.detach_weight)
        if (target != IGNORE_INDEX).sum() <= SPARSE_FRACTION * target.numel():     # scribbles: at labelled pixels
            terms["seg"] = blp_loss_from_grid(out["logits"], out["scrib_logits"], target, *opts,
                                              self.renormalize_scrib, self.detach_scrib_in_loss)  # (9), same function
        else:                                                                       # pseudo-labels: full resolution
            p_scrib = annotation_probability(scrib, self.renormalize_scrib)
            if self.detach_scrib_in_loss:
                p_scrib = p_scrib.detach()
            terms["seg"] = blp_loss(logits if logits is not None else upsample(out["logits"], size), p_scrib, target,
                                    *opts)
        return terms                                                                # (12) L = WCE (1) + BL (9), summed by the loop
