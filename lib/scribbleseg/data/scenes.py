"""Scene composer of the embedded benchmark: Fashion-MNIST objects pasted on real photos.

Every scene is a deterministic function of (seed, split, index). Objects are colourised, rescaled
and pasted with their exact mask; later objects occlude earlier ones, and an object hidden beyond
``max_occlusion`` is drawn again. Clutter is unlabelled distractor patches cut from other photos.
Backgrounds are random crops of the CC0 / public photos and textures scikit-image bundles offline.
"""
from __future__ import annotations

import dataclasses
from functools import lru_cache

import numpy as np
from skimage import data as skdata
from skimage.color import gray2rgb, hsv2rgb
from skimage.draw import ellipse
from PIL import Image

BACKGROUNDS = (
    "brick", "grass", "gravel", "astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon",
    "page", "text", "hubble_deep_field", "immunohistochemistry", "retina", "cell", "clock",
    "colorwheel", "stereo_motorcycle",
)


@dataclasses.dataclass(frozen=True)
class SceneConfig:
    """Difficulty knobs of the scenes (all are params of the notebooks).

    Attributes:
        size: output side in pixels (square scenes).
        objects: (min, max) objects per scene, inclusive.
        object_size: (min, max) longest side of a pasted object, in pixels.
        max_occlusion: largest fraction of an object that later objects may hide.
        clutter: (min, max) unlabelled distractor patches per scene.
        class_hue: jitter of a class-specific hue (class k has base hue k / 10), as a fraction of the
            colour circle; None gives every object a random tint (colour carries no class information).
    """

    size: int = 128
    objects: tuple[int, int] = (1, 4)
    object_size: tuple[int, int] = (24, 64)
    max_occlusion: float = 0.5
    clutter: tuple[int, int] = (0, 2)
    class_hue: float | None = 0.05


@lru_cache(maxsize=1)
def background_photos() -> tuple[np.ndarray, ...]:
    """The bundled scikit-image photos as (H, W, 3) uint8 arrays."""
    photos = []
    for name in BACKGROUNDS:
        img = getattr(skdata, name)()
        img = img[0] if isinstance(img, tuple) else img  # stereo_motorcycle returns a pair
        img = gray2rgb(img) if img.ndim == 2 else img[..., :3]
        photos.append(np.ascontiguousarray(img, dtype=np.uint8))
    return tuple(photos)


def _crop(rng: np.random.Generator, photo: np.ndarray, size: int) -> np.ndarray:
    """Random square crop (side between size and the photo's short side), resized to size x size."""
    h, w = photo.shape[:2]
    side = int(rng.integers(min(size, h, w), min(h, w) + 1))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = Image.fromarray(photo[y:y + side, x:x + side]).resize((size, size), Image.BILINEAR)
    crop = np.asarray(crop, dtype=np.float32) / 255.0  # (size, size, 3) in [0, 1]
    return crop[:, ::-1].copy() if rng.random() < 0.5 else crop


def _colourise(rng: np.random.Generator, gray: np.ndarray, label: int, class_hue: float | None) -> np.ndarray:
    """(h, w) in [0, 1] -> (h, w, 3): the photo's shading times a tint (random, or around the class's hue)."""
    if class_hue is None:
        tint = rng.uniform(0.15, 1.0, size=3)
    else:
        hue = (label / 10 + rng.uniform(-class_hue, class_hue)) % 1.0
        tint = hsv2rgb(np.array([[[hue, rng.uniform(0.55, 1.0), 1.0]]]))[0, 0]
    tint = np.maximum(tint, 1e-3) / max(tint.max(), 1e-3)
    gain = rng.uniform(0.6, 1.0)
    return np.clip(gray[..., None] * tint * gain * 1.3, 0.0, 1.0)


def compose_scene(rng: np.random.Generator, cfg: SceneConfig, objects: np.ndarray, masks: np.ndarray,
                  labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Compose one scene.

    Args:
        rng: the scene's own generator.
        cfg: difficulty knobs.
        objects, masks, labels: the object pool, (M, 28, 28) uint8, (M, 28, 28) bool, (M,) in 0..9.

    Returns:
        image (S, S, 3) uint8, class map (S, S) uint8 (0 = background, Fashion label + 1 on objects),
        instance map (S, S) int16 (-1 = background, 0.. = object order).
    """
    s = cfg.size
    photos = background_photos()
    img = _crop(rng, photos[rng.integers(len(photos))], s)
    for _ in range(int(rng.integers(cfg.clutter[0], cfg.clutter[1] + 1))):  # unlabelled distractors
        patch = _crop(rng, photos[rng.integers(len(photos))], s)
        rr, cc = ellipse(rng.uniform(0, s), rng.uniform(0, s), rng.uniform(4, s / 5), rng.uniform(4, s / 5),
                         shape=(s, s), rotation=rng.uniform(0, np.pi))
        img[rr, cc] = patch[rr, cc]
    cls_map = np.zeros((s, s), dtype=np.uint8)
    inst = np.full((s, s), -1, dtype=np.int16)
    n_obj = int(rng.integers(cfg.objects[0], cfg.objects[1] + 1))
    placed = 0
    for _attempt in range(4 * n_obj):
        if placed == n_obj:
            break
        k = int(rng.integers(len(objects)))
        side = int(rng.integers(cfg.object_size[0], cfg.object_size[1] + 1))
        gray = np.asarray(Image.fromarray(objects[k]).resize((side, side), Image.BILINEAR), np.float32) / 255.0
        m = np.asarray(Image.fromarray(masks[k].astype(np.uint8) * 255).resize((side, side), Image.BILINEAR)) > 127
        if rng.random() < 0.5:
            gray, m = gray[:, ::-1], m[:, ::-1]
        y, x = int(rng.integers(-side // 4, s - 3 * side // 4)), int(rng.integers(-side // 4, s - 3 * side // 4))
        full = np.zeros((s, s), dtype=bool)  # the object's mask in scene coordinates
        ys, xs = slice(max(y, 0), min(y + side, s)), slice(max(x, 0), min(x + side, s))
        sub = (slice(ys.start - y, ys.stop - y), slice(xs.start - x, xs.stop - x))
        full[ys, xs] = m[sub]
        if full.sum() < 0.5 * m.sum():  # mostly outside the frame
            continue
        # Occlusion check: the new object may not hide too much of any earlier one.
        hidden_ok = all((full & (inst == j)).sum() <= cfg.max_occlusion * max((inst == j).sum(), 1)
                        for j in range(placed))
        if not hidden_ok:
            continue
        colour = _colourise(rng, gray, int(labels[k]), cfg.class_hue)
        img[ys, xs][m[sub]] = colour[sub][m[sub]]
        cls_map[full] = labels[k] + 1
        inst[full] = placed
        placed += 1
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8), cls_map, inst
