"""The URSS network (Pan et al., ICCV 2021), Fig. 2 and Sec. 4: a segmentation network with the
random walk embedded on the final layer right before the classifier,

    f^{L-1} = base.features(x),  (f^L, P, E) = walk(f^{L-1})  (Eq. 5-6),  logits = base.classifier(f^L).

``walk`` is a :class:`~scribbleseg.urss.random_walk.RandomWalk` (paper), a
:class:`~scribbleseg.urss.random_walk.PositionAttention` (released code) or None (no random walk:
f^L = f^{L-1}, and no P is returned). The base network's classifier is reused.

Output dict: "features_in" f^{L-1} (N, D, h, w), "features" f^L (N, D, h, w), "logits" (N, K, h, w),
and with a walk "query", "key" (N, M, d) float32, the factors of its energies E = query key^T (one row per
position; for the paper's walk both are f^{L-1}), M = h w. The (N, M, M) "transition" P and "energy" E only with
``matrices=True`` (analysis): training never builds them (the walk is fused, the self-supervision uses
the factors). ``until`` stops early for the self-supervision's t_phi(x) pass, which reads no logits:
"factors" (f^{L-1}, query, key), "features" (+ f^L) or "logits" (everything, default).
"""
from __future__ import annotations

import torch
from torch import nn

from scribbleseg.models.base import SegmentationModel

UNTIL = ("factors", "features", "logits")


class URSSNet(SegmentationModel):
    def __init__(self, base: SegmentationModel, walk: nn.Module | None):
        super().__init__()
        self.base, self.walk = base, walk
        self.classifier = base.classifier
        self.output_stride = base.output_stride

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """f^L (N, D, h, w): the features the classifier reads."""
        f = self.base.features(x)
        return f if self.walk is None else self.walk.outputs(f)["features"]

    def forward(self, x: torch.Tensor, matrices: bool = False, until: str = "logits") -> dict[str, torch.Tensor]:
        if until not in UNTIL:
            raise ValueError(f"until must be one of {UNTIL}, got {until!r}")
        f = self.base.features(x)                                          # f^{L-1} (N, D, h, w)
        out = {"features_in": f}
        if self.walk is not None:
            out.update(self.walk.outputs(f, matrices, features=until != "factors"))  # (5)-(6)
        else:
            out["features"] = f
        if until == "logits":
            out["logits"] = self.classifier(out["features"])               # (N, K, h, w)
        return out
