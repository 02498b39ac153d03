"""Per-image pseudo-labels of a training split, looked up by batch index (the CDSP method's input).

:class:`PseudoLabels` is a frozen dataclass whose only field is ``key``, a hash of the label arrays:
inside a method dataclass it enters the experiment key (``dataclasses.asdict`` keeps fields only), so a
run's cache key changes when its pseudo-labels change, and ``dataclasses.replace`` on the method keeps
them. The arrays ride along as attributes:

- ``labels`` (N, H, W) uint8, index = index into the training split, stored unflipped.

Flips: :func:`scribbleseg.train.to_batch` flips image, mask and scribble of some samples and says which
in ``batch["flip"]`` (N,) bool; :meth:`PseudoLabels.batch_labels` mirrors those labels. A batch that
carries ``"pseudo"`` (N, H, W) (a Dataset whose transform crops / scales the pseudo-label together
with the image) is used as is. Distance maps are recomputed from the batch's labels, so they follow the
same flips (:mod:`scribbleseg.cdsp.distance_maps`).
"""
from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import torch


@dataclasses.dataclass(frozen=True)
class PseudoLabels:
    key: str

    @classmethod
    def from_array(cls, labels: np.ndarray, images: np.ndarray) -> PseudoLabels:
        """Pseudo-labels (N, H, W) of the split whose images (N, H, W, 3) uint8 they belong to."""
        labels = np.ascontiguousarray(labels, dtype=np.uint8)
        if labels.ndim != 3 or images.shape[:3] != labels.shape:
            raise ValueError(f"labels {labels.shape} must be (N, H, W) matching images {images.shape}")
        digest = hashlib.sha1(repr(labels.shape).encode() + labels.tobytes()).hexdigest()[:16]
        obj = cls(f"pl-{digest}")
        object.__setattr__(obj, "labels", labels)
        return obj

    def __len__(self) -> int:
        return len(self.labels)

    def flips(self, batch: dict) -> np.ndarray:
        """(N,) bool: which samples of ``batch`` are mirrored with respect to the stored split."""
        if "flip" not in batch:
            raise ValueError("the batch has no 'flip' entry (scribbleseg.train.to_batch provides it); without it the "
                             "stored pseudo-labels cannot follow the loop's flips")
        return np.asarray(batch["flip"].cpu() if torch.is_tensor(batch["flip"]) else batch["flip"], dtype=bool)

    def batch_labels(self, batch: dict) -> torch.Tensor:
        """(N, H, W) long pseudo-labels of ``batch``, flipped like its images, on the batch's device."""
        scribble = batch["scribble"]
        if "pseudo" in batch:
            return batch["pseudo"].to(scribble.device).long()
        if not hasattr(self, "labels"):
            raise ValueError(f"PseudoLabels({self.key!r}) carries no arrays: build it with PseudoLabels.from_array")
        idx = np.asarray(batch["index"])
        labels = self.labels[idx]                                                    # (N, H, W)
        if labels.shape[1:] != tuple(scribble.shape[-2:]):
            raise ValueError(f"stored pseudo-labels are {labels.shape[1:]} but the batch is {tuple(scribble.shape[-2:])}: "
                             "cropping / scaling transforms must carry the pseudo-label in batch['pseudo']")
        flips = self.flips(batch)
        labels = np.where(flips[:, None, None], labels[:, :, ::-1], labels)
        return torch.from_numpy(np.ascontiguousarray(labels)).long().to(scribble.device)
