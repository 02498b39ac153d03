"""Baselines: partial cross-entropy on scribbles, and full-mask supervision.

Args (dataclass fields):
    target: "scribble" (pCE, the weakly-supervised baseline) or "mask" (full supervision).

``losses(model, batch)`` takes batch["image"] (N, 3, H, W) and batch[target] (N, H, W) and returns
{"ce": scalar}.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from scribbleseg.losses import partial_cross_entropy
from scribbleseg.models.base import upsample


@dataclasses.dataclass(frozen=True)
class PartialCE:
    target: str = "scribble"

    NAME: ClassVar[str] = "scribbleseg.methods.baseline.PartialCE"  # the cache key's name (stable across moves)

    def __post_init__(self):
        if self.target not in ("scribble", "mask"):
            raise ValueError(f"PartialCE.target must be 'scribble' or 'mask', got {self.target!r}")

    def losses(self, model: torch.nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        out = model(batch["image"])
        logits = upsample(out["logits"], batch[self.target].shape[-2:])  # (N, K, H, W)
        return {"ce": partial_cross_entropy(logits, batch[self.target])}
