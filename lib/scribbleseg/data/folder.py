"""Load a split of a VOC-layout dataset into memory, with its scribbles rasterised.

The embedded benchmark is small (2,400 images of 128 x 128: under 150 MB decoded), so a split is
held as arrays and batches are cut from them with no worker processes: deterministic and fast on
2 cores. Scribble variants (stroke width, URSS drop / shrink) are applied to the strokes when the
split is loaded, from their own seed, so every run of a variant sees the same labels.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from scribbleseg.constants import IGNORE_INDEX
from scribbleseg.data.io import check_same_size, read_ids, read_image, read_label
from scribbleseg.data.strokes import Stroke, drop_strokes, rasterize, read_xml, shrink_strokes
from scribbleseg.data.label_diffusion import expand_scribble


@dataclasses.dataclass(frozen=True)
class ScribbleVariant:
    """How strokes become training labels.

    Attributes:
        width: brush width in pixels (1 as in BLPSeg's code, 3 as in rloss / URSS / CDSP).
        drop: URSS scribble-drop rate r (each object loses its strokes with probability r).
        shrink: URSS scribble-shrink rate r (r = 1 leaves a point per stroke).
        seed: seed of the drop draw (fixed per variant, independent of the training seed).
        clip: clip stroke pixels to their class in the mask (the embedded set's strokes are drawn
            inside their region, clipping only trims the brush at thin parts; off for real data).
        superpixels: label diffusion (BLPSeg Table VI): if > 0, the rasterised scribbles are expanded
            over about this many SLIC superpixels per image (:mod:`scribbleseg.data.label_diffusion`);
            0 (default) keeps the scribbles. Enters the cache key only when set.
    """

    width: int = 3
    drop: float = 0.0
    shrink: float = 0.0
    seed: int = 0
    clip: bool = True
    superpixels: int = 0


@dataclasses.dataclass
class SplitData:
    """A split in memory. images (N, H, W, 3) uint8; masks, scribbles (N, H, W) uint8 (255 = unlabelled)."""

    ids: list[str]
    images: np.ndarray
    masks: np.ndarray
    scribbles: np.ndarray
    strokes: list[list[Stroke]]
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def labelled_fraction(self) -> float:
        """Fraction of pixels carrying a scribble label."""
        return float((self.scribbles != IGNORE_INDEX).mean())


def apply_variant(strokes: list[Stroke], variant: ScribbleVariant, rng: np.random.Generator) -> list[Stroke]:
    """Drop, then shrink, one image's strokes."""
    if variant.drop > 0:
        strokes = drop_strokes(strokes, variant.drop, rng)
    if variant.shrink > 0:
        strokes = shrink_strokes(strokes, variant.shrink)
    return strokes


def diffuse_labels(image: np.ndarray, scribble: np.ndarray, variant: ScribbleVariant) -> np.ndarray:
    """``scribble`` expanded over superpixels if ``variant.superpixels`` > 0 (label diffusion), else itself."""
    if variant.superpixels <= 0:
        return scribble

    return expand_scribble(image, scribble, n_segments=variant.superpixels)


def load_split(root: Path, split: str, class_names: tuple[str, ...], variant: ScribbleVariant = ScribbleVariant(),
               scribble_dir: str = "scribble_annotation", mask_dir: str = "SegmentationClass",
               limit: int | None = None) -> SplitData:
    """Read ``root/ImageSets/Segmentation/<split>.txt`` and every image, mask and scribble file it lists.

    Args:
        root: dataset folder in VOC layout.
        split: split name ("train", "val", "trainaug", ...).
        class_names: class names, index = label value; scribble XML tags must be among them.
        variant: scribble rasterisation, URSS drop / shrink and label diffusion.
        scribble_dir, mask_dir: sub-folders of root holding the XML strokes and the class PNGs.
        limit: read only the first ``limit`` ids (quick runs).

    Returns:
        SplitData. All images must share one size (the embedded set); real VOC images differ in
        size and are loaded per item by :mod:`scribbleseg.data.voc`.

    Raises:
        FileNotFoundError / ValueError naming the file for a missing folder or file, a corrupt
        image or label, label values outside the classes and 255, or an image/label size mismatch.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist; build the embedded set with "
                                "`make data` or point the `data_root` parameter at your copy")
    ids = read_ids(root, split)[:limit]
    rng = np.random.default_rng([variant.seed, 7])
    images, masks, scribbles, all_strokes = [], [], [], []
    for sid in ids:
        img_path, mask_path = root / "JPEGImages" / f"{sid}.jpg", root / mask_dir / f"{sid}.png"
        img = read_image(img_path)
        mask = read_label(mask_path, len(class_names))
        check_same_size(img, mask, img_path, mask_path)
        strokes, size = read_xml(root / scribble_dir / f"{sid}.xml", class_names)
        if size != mask.shape:
            raise ValueError(f"{root / scribble_dir / sid}.xml says {size[1]}x{size[0]} but {mask_path} is "
                             f"{mask.shape[1]}x{mask.shape[0]} (width x height)")
        strokes = apply_variant(strokes, variant, rng)
        scribble = rasterize(strokes, mask.shape, variant.width, clip_to=mask if variant.clip else None)
        scribbles.append(diffuse_labels(img, scribble, variant))
        images.append(img), masks.append(mask), all_strokes.append(strokes)
    if len({m.shape for m in masks}) > 1:
        raise ValueError(f"{root}: images of different sizes; use scribbleseg.data.voc for per-item loading")
    return SplitData(ids, np.stack(images), np.stack(masks), np.stack(scribbles), all_strokes, tuple(class_names))
