"""VOC-sized synthetic items, for timing the paper profile's data path and steps without the dataset.

:class:`SyntheticVOC` yields what :class:`~scribbleseg.data.voc.VOCScribbleDataset` yields, at VOC's image size
(500 x 375 by default): a JPEG-decoded image (the JPEG bytes are made once, so every item pays a real decode,
as reading VOC from disk does), a mask of a few rectangles of random classes on background, scribbles (one
horizontal stroke through each rectangle and one on the background, 3 px wide, 255 elsewhere) and optionally the
mask as "pseudo" (CDSP's pseudo-labels). Numbers trained on it mean nothing; it exists for benchmarks.
"""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from scribbleseg.constants import IGNORE_INDEX, VOC_CLASSES


class SyntheticVOC(Dataset):
    """Args:
        n: number of items. size: (H, W) of every image. transform: as VOCScribbleDataset's (e.g. the paper's
        RandomScaleCropFlip). with_pseudo: add "pseudo" (= the mask). seed: the content.
    """

    class_names = VOC_CLASSES

    def __init__(self, n: int = 64, size: tuple[int, int] = (375, 500), transform=None, with_pseudo: bool = False,
                 seed: int = 0):
        self.n, self.size, self.transform, self.with_pseudo = n, tuple(size), transform, with_pseudo
        g = np.random.default_rng(seed)
        h, w = self.size
        self.masks, self.scribbles, self.jpegs = [], [], []
        for _ in range(n):
            mask = np.zeros((h, w), np.int64)
            scribble = np.full((h, w), IGNORE_INDEX, np.int64)
            scribble[5:8, 5:w // 4] = 0
            for _ in range(g.integers(1, 4)):
                y0, x0 = g.integers(0, h // 2), g.integers(0, w // 2)
                y1, x1 = y0 + g.integers(h // 8, h // 2), x0 + g.integers(w // 8, w // 2)
                cls = int(g.integers(1, len(VOC_CLASSES)))
                mask[y0:y1, x0:x1] = cls
                yc = (y0 + y1) // 2
                scribble[yc - 1:yc + 2, x0 + 2:x1 - 2] = cls
            colours = g.integers(0, 256, (len(VOC_CLASSES), 3))
            img = colours[mask] + g.normal(0, 12, (h, w, 3))                      # (H, W, 3)
            buf = io.BytesIO()
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
            self.masks.append(mask), self.scribbles.append(scribble), self.jpegs.append(buf.getvalue())

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        img = np.asarray(Image.open(io.BytesIO(self.jpegs[i])).convert("RGB"))   # (H, W, 3) uint8
        item = {"id": f"synthetic_{i:05d}", "image": torch.from_numpy(img.transpose(2, 0, 1).copy()),
                "mask": torch.from_numpy(self.masks[i]), "scribble": torch.from_numpy(self.scribbles[i])}
        if self.with_pseudo:
            item["pseudo"] = torch.from_numpy(self.masks[i])
        return self.transform(item) if self.transform is not None else item
