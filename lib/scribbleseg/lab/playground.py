"""The scribble playground (notebooks/04_scribble_playground.ipynb): strokes on one image, and what each method
makes of them.

A :class:`Sketch` is one image with its strokes (ScribbleSup polylines, :class:`~scribbleseg.data.strokes.Stroke`).
A *view* is a function ``view(inputs) -> {title: panel}`` of :meth:`Sketch.inputs`; each paper folder has its views
(``scribbleseg.<paper>.playground``: the propagations that need no training, and the trained networks' maps), which
the notebook hands to :func:`compute` and :func:`figure`. A panel is one of

- an (H, W) map in [0, 1] (entropy, an annotation probability, a rescaled eigenvector): drawn with a colour map;
- a (K, h, w) soft labelling (rows of a distribution over classes, any grid): drawn as sum_k y_k colour_k;
- an (h, w) integer class map (a prediction): drawn in the label palette;
- an (H, W, 3) uint8 picture.

Headless (papermill, nbval) the notebook draws :func:`figure` for a stored stroke set (the dataset's own strokes of
the image, or a ScribbleSup XML file); in JupyterLab :mod:`scribbleseg.lab.canvas` redraws it after each stroke.
:meth:`Sketch.save` writes the strokes as ScribbleSup XML, the format :func:`scribbleseg.data.voc.rasterize_scribblesup`
and the embedded benchmark read, so a drawn set can join a dataset's scribbles and train a run.

Shapes: image (H, W, 3) uint8; inputs: image (1, 3, H, W) normalised, rgb (1, 3, H, W) on 0-255, scribble (1, H, W).
"""
from __future__ import annotations

import dataclasses
import io
import textwrap
from pathlib import Path
from typing import Callable

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from scribbleseg.constants import IGNORE_INDEX
from scribbleseg.data.folder import SplitData
from scribbleseg.data.strokes import Stroke, rasterize, read_xml, write_xml
from scribbleseg.lab.plots import colorize, heat, overlay, soft_colorize
from scribbleseg.train import MEAN, STD


@dataclasses.dataclass
class Sketch:
    """One image and the strokes drawn on it (mutable: the canvas adds and removes strokes).

    Args:
        image: (H, W, 3) uint8. class_names: the dataset's classes (index 0 background).
        strokes: the strokes so far. width: brush width in pixels for :meth:`label`. name: the image's id.
    """

    image: np.ndarray
    class_names: tuple[str, ...]
    strokes: list[Stroke] = dataclasses.field(default_factory=list)
    width: int = 3
    name: str = "image"

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.image.shape[:2])

    def add(self, cls: int, points) -> None:
        """Append a stroke of class ``cls`` through ``points`` ((P, 2) (x, y) pixels, P >= 1)."""
        if not 0 <= int(cls) < len(self.class_names):
            raise ValueError(f"stroke class {cls} is not one of the {len(self.class_names)} classes {self.class_names}")
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)          # (P, 2)
        if len(pts) == 0:
            raise ValueError("a stroke needs at least one point")
        self.strokes.append(Stroke(int(cls), pts))

    def undo(self) -> None:
        if self.strokes:
            self.strokes.pop()

    def clear(self) -> None:
        self.strokes.clear()

    def label(self) -> np.ndarray:
        """The rasterised scribble (H, W) uint8, IGNORE_INDEX off the strokes (the earlier stroke wins)."""
        return rasterize(self.strokes, self.size, self.width)

    def save(self, path: Path) -> Path:
        """Write the strokes as ScribbleSup XML (tags are class names; sizes (H, W) of the image)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_xml(path, self.strokes, f"{self.name}.jpg", self.size, self.class_names)
        return path

    def load(self, path: Path) -> None:
        """Replace the strokes with those of a ScribbleSup XML file drawn on an image of this size."""
        strokes, size = read_xml(Path(path), self.class_names)
        if tuple(size) != self.size:
            raise ValueError(f"{path}: strokes drawn on a {size[0]} x {size[1]} image, this one is "
                             f"{self.size[0]} x {self.size[1]}; load strokes saved for this image")
        self.strokes[:] = strokes

    def inputs(self, device: torch.device | str = "cpu") -> dict:
        """The batch of one a method reads: image (1, 3, H, W) normalised as in training, rgb (1, 3, H, W) on
        0-255, scribble (1, H, W) long (IGNORE_INDEX off the strokes), num_classes."""
        rgb = torch.from_numpy(np.ascontiguousarray(self.image)).permute(2, 0, 1)[None].float()  # (1, 3, H, W)
        return {"image": ((rgb / 255 - MEAN) / STD).to(device), "rgb": rgb.to(device),
                "scribble": torch.from_numpy(self.label()).long()[None].to(device),
                "num_classes": len(self.class_names)}


def from_split(data: SplitData, index: int, width: int = 3) -> Sketch:
    """Image ``index`` of a split with its stored strokes (a copy: drawing does not change ``data``)."""
    if not 0 <= index < len(data.ids):
        raise ValueError(f"image index {index} is outside the split's {len(data.ids)} images")
    return Sketch(data.images[index].copy(), tuple(data.class_names), list(data.strokes[index]), width,
                  str(data.ids[index]))


def from_upload(content: bytes, size: tuple[int, int], class_names, name: str = "upload", width: int = 3) -> Sketch:
    """A sketch without strokes of an uploaded picture (any format PIL reads), resized to ``size`` (H, W), the
    size the networks were trained at."""
    try:
        img = Image.open(io.BytesIO(content)).convert("RGB")
    except OSError as e:
        raise ValueError(f"{name}: not an image PIL can read ({e}); upload a PNG or JPEG") from e
    img = img.resize((size[1], size[0]), Image.BILINEAR)
    return Sketch(np.asarray(img, dtype=np.uint8).copy(), tuple(class_names), [], width, Path(name).stem)


def compute(sketch: Sketch, views: dict[str, Callable]) -> dict[str, dict[str, np.ndarray]]:
    """{view name: {title: panel}} of every view on the sketch's inputs (no gradient)."""
    inputs = sketch.inputs()
    with torch.no_grad():
        return {name: {t: _numpy(p) for t, p in view(inputs).items()} for name, view in views.items()}


def agreement(panel: np.ndarray, mask: np.ndarray) -> float | None:
    """Pixel accuracy (%) of a labelling panel against the image's mask (H, W): the argmax of a (K, h, w) soft
    labelling (cells where it is all zero do not count) or an (h, w) class map, nearest-upsampled to the mask;
    None for a map or picture panel, or when no pixel counts."""
    p = np.asarray(panel)
    if p.ndim == 3 and p.shape[-1] != 3:
        labels = np.where(p.sum(0) > 0, p.argmax(0), IGNORE_INDEX)          # (h, w)
    elif p.ndim == 2 and np.issubdtype(p.dtype, np.integer):
        labels = p
    else:
        return None
    rows = np.arange(mask.shape[0]) * labels.shape[0] // mask.shape[0]
    cols = np.arange(mask.shape[1]) * labels.shape[1] // mask.shape[1]
    up = labels[rows[:, None], cols[None, :]]                               # (H, W) nearest
    valid = (up != IGNORE_INDEX) & (mask != IGNORE_INDEX)
    return round(100.0 * float((up[valid] == mask[valid]).mean()), 2) if valid.any() else None


def _numpy(p) -> np.ndarray:
    return p.detach().cpu().numpy() if isinstance(p, torch.Tensor) else np.asarray(p)


def to_rgb(panel: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A panel (see the module docstring) as an (H, W, 3) uint8 picture of ``size``."""
    p = np.asarray(panel)
    if p.ndim == 3 and p.shape[-1] == 3 and p.dtype == np.uint8:
        rgb = p
    elif p.ndim == 3:                                                        # (K, h, w) soft labelling
        rgb = soft_colorize(p.astype(np.float32))
    elif np.issubdtype(p.dtype, np.integer):                                 # (h, w) class map
        rgb = colorize(p.astype(np.uint8))
    else:                                                                    # (H, W) map in [0, 1]
        rgb = heat(p)
    if rgb.shape[:2] != tuple(size):                                         # a grid: nearest, cells stay visible
        t = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()
        rgb = F.interpolate(t, size=size, mode="nearest")[0].permute(1, 2, 0).byte().numpy()
    return rgb


def figure(sketch: Sketch, panels: dict[str, dict[str, np.ndarray]], size: float = 1.8):
    """One row per view: the image with the strokes, then the view's panels, titled; returns the Figure."""
    cols = 1 + max((len(p) for p in panels.values()), default=0)
    fig, axes = plt.subplots(len(panels) or 1, cols, figsize=(size * cols, size * max(len(panels), 1)), squeeze=False)
    label = sketch.label()
    strokes = overlay(sketch.image, label, 1.0)
    for r, (name, row) in enumerate(panels.items() or {"strokes": {}}.items()):
        axes[r, 0].imshow(strokes, interpolation="nearest")
        axes[r, 0].set_ylabel(name, fontsize=8)
        for c, (title, panel) in enumerate(row.items(), start=1):
            axes[r, c].imshow(to_rgb(panel, sketch.size), interpolation="nearest")
            axes[r, c].set_title(textwrap.fill(title, 26), fontsize=7)
        for ax in axes[r]:
            ax.set_xticks([]), ax.set_yticks([])
            if not ax.images:
                ax.axis("off")
    axes[0, 0].set_title(f"{sketch.name}: {len(sketch.strokes)} strokes, "
                         f"{int((label != IGNORE_INDEX).sum())} px", fontsize=7)
    fig.tight_layout()
    return fig


def png(fig) -> bytes:
    """The figure as PNG bytes (for an ipywidgets.Image); closes it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
