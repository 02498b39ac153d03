"""Reading and writing one sample in PASCAL VOC's folder layout, with errors that name the file.

Layout (VOC 2012 + ScribbleSup, and the embedded benchmark)::

    root/JPEGImages/<id>.jpg              RGB image
    root/SegmentationClass/<id>.png       palette PNG, class index per pixel, 255 = void
    root/<scribble_dir>/<id>.xml          ScribbleSup strokes (see scribbleseg.data.strokes)
    root/ImageSets/Segmentation/<split>.txt   one id per line
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from scribbleseg.constants import IGNORE_INDEX


def voc_palette() -> list[int]:
    """PASCAL VOC's colour map (bit-interleaved), 256 x RGB flattened; 255 is VOC's cream void colour."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    pal[3 * 255:3 * 256] = [224, 224, 192]
    return pal


def read_image(path: Path) -> np.ndarray:
    """Read an RGB image as (H, W, 3) uint8. Raises ValueError naming the file if it is corrupt."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image file missing: {path}")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path}: corrupt or unreadable image ({e}); re-extract or rebuild the dataset") from e


def read_label(path: Path, num_classes: int) -> np.ndarray:
    """Read a class-index PNG as (H, W) uint8 and check its values lie in [0, num_classes) or 255.

    Raises ValueError naming the file and the offending values otherwise.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"label file missing: {path}")
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise ValueError(f"mode {im.mode!r}, expected a palette ('P') or grayscale ('L') PNG of class indices")
            lab = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path}: corrupt or unreadable label file ({e})") from e
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    check_label_values(lab, num_classes, str(path))
    return lab


def check_label_values(lab: np.ndarray, num_classes: int, where: str) -> None:
    """Raise ValueError naming ``where`` if ``lab`` holds values outside [0, num_classes) and 255."""
    values = np.unique(lab)
    bad = values[(values >= num_classes) & (values != IGNORE_INDEX)]
    if len(bad):
        raise ValueError(f"{where}: label values {bad.tolist()} are outside the {num_classes} classes "
                         f"(0..{num_classes - 1}) and {IGNORE_INDEX} (unlabelled)")


def write_label(path: Path, lab: np.ndarray) -> None:
    """Write an (H, W) uint8 class map as a VOC palette PNG."""
    im = Image.fromarray(np.asarray(lab, dtype=np.uint8), mode="P")
    im.putpalette(voc_palette())
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def read_ids(root: Path, split: str) -> list[str]:
    """Ids listed in ``root/ImageSets/Segmentation/<split>.txt``."""
    f = Path(root) / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not f.exists():
        raise FileNotFoundError(f"split file missing: {f} (expected one image id per line)")
    return [line.split()[0] for line in f.read_text().splitlines() if line.strip()]


def check_same_size(image: np.ndarray, label: np.ndarray, image_path: Path, label_path: Path) -> None:
    """Raise ValueError naming both files when image and label sizes differ."""
    if image.shape[:2] != label.shape[:2]:
        raise ValueError(f"size mismatch: {image_path} is {image.shape[1]}x{image.shape[0]} but "
                         f"{label_path} is {label.shape[1]}x{label.shape[0]} (width x height)")
