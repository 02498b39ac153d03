"""The URSS network (Pan et al., ICCV 2021), Fig. 2 and Sec. 4: a segmentation network with the
random walk embedded on the final layer right before the classifier,

    f^{L-1} = base.features(x),  (f^L, P, E) = walk(f^{L-1})  (Eq. 5-6),  logits = base.classifier(f^L).

``walk`` is a :class:`~scribbleseg.urss.random_walk.RandomWalk` (paper), a
:class:`~scribbleseg.urss.random_walk.PositionAttention` (released code) or None (no random walk:
f^L = f^{L-1}, and no P is returned). The base network's classifier is reused.

Output dict: "features_in" f^{L-1} (N, D, h, w), "features" f^L (N, D, h, w), "logits" (N, K, h, w),
and with a walk "transition" P (N, M, M) and "energy" E (N, M, M), M = h w.
"""
from __future__ import annotations

import torch
from torch import nn

from scribbleseg.models.base import SegmentationModel


class URSSNet(SegmentationModel):
    def __init__(self, base: SegmentationModel, walk: nn.Module | None):
        super().__init__()
        self.base, self.walk = base, walk
        self.classifier = base.classifier
        self.output_stride = base.output_stride

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """f^L (N, D, h, w): the features the classifier reads."""
        f = self.base.features(x)
        return f if self.walk is None else self.walk(f)[0]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.base.features(x)                                          # f^{L-1} (N, D, h, w)
        out = {"features_in": f}
        if self.walk is not None:
            f_l, out["transition"], out["energy"] = self.walk(f)           # (5)-(6), (N, M, M)
        else:
            f_l = f
        out["features"] = f_l
        out["logits"] = self.classifier(f_l)                               # (N, K, h, w)
        return out
