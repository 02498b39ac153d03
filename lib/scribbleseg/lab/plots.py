"""Figures: label colouring, sample grids, scribble variants, distance histograms, overlays; seaborn for the
statistical ones (per-seed points with mean and confidence interval, robustness lines).

Every function returns a matplotlib Figure; :func:`save` writes it as PNG (for ``figures/``).
Colours follow PASCAL VOC's palette; unlabelled (255) pixels are drawn white or transparent.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from scribbleseg import distributed
from scribbleseg.constants import IGNORE_INDEX
from scribbleseg.data.io import voc_palette
from scribbleseg.lab.config import headless

_PAL = np.array(voc_palette(), dtype=np.uint8).reshape(256, 3)


def colorize(label: np.ndarray, unlabelled=(255, 255, 255)) -> np.ndarray:
    """(H, W) class map -> (H, W, 3) uint8 RGB; IGNORE_INDEX pixels get ``unlabelled``."""
    rgb = _PAL[label].copy()
    rgb[label == IGNORE_INDEX] = unlabelled
    return rgb


def overlay(image: np.ndarray, label: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Blend the colourised labelled pixels of ``label`` over ``image`` ((H, W, 3) uint8)."""
    out = image.astype(np.float32)
    lab = label != IGNORE_INDEX
    out[lab] = (1 - alpha) * out[lab] + alpha * _PAL[label[lab]]
    return out.round().astype(np.uint8)


def grid(panels: list[list[np.ndarray]], titles: list[str] | None = None, size: float = 1.9):
    """Rows of images (RGB arrays) with optional column titles; returns the Figure."""
    rows, cols = len(panels), max(len(r) for r in panels)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for i, row in enumerate(panels):
        for j in range(cols):
            ax = axes[i, j]
            ax.axis("off")
            if j < len(row):
                ax.imshow(row[j], interpolation="nearest")
            if titles and i == 0 and j < len(titles):
                ax.set_title(titles[j], fontsize=9)
    fig.tight_layout()
    return fig


def sample_grid(data, indices, preds: dict[str, np.ndarray] | None = None):
    """Image | scribbles over image | mask | (one column per prediction set) for each index."""
    preds = preds or {}
    panels = [[data.images[i], overlay(data.images[i], data.scribbles[i], 0.9), colorize(data.masks[i])]
              + [colorize(p[i]) for p in preds.values()] for i in indices]
    return grid(panels, ["image", "scribbles", "mask", *preds])


def distance_histograms(hists: dict[str, np.ndarray], edges: np.ndarray, title: str = ""):
    """Line plot of binned distributions P(X) (BLPSeg Fig. 1 / Eq. 13) over relative distance X."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    centres = 0.5 * (edges[1:] + edges[:-1])
    for name, h in hists.items():
        ax.plot(centres, h, marker="o", ms=3, label=name)
    ax.set_xlabel("relative distance to the nearest object boundary")
    ax.set_ylabel("P(X)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def bar_with_std(names: list[str], means, stds, ylabel: str = "mIoU (%)", title: str = "", rotation: float = 0):
    """Bars with error bars (mean ± std over seeds); ``rotation`` turns the names (degrees)."""
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(names), 3.2 + 0.02 * rotation))
    ax.bar(names, means, yerr=stds, capsize=4, color="#6a9fd4")
    if rotation:
        ax.tick_params(axis="x", labelrotation=rotation)
    for k, m in enumerate(means):
        ax.text(k, m, f"{m:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def seed_points(records: list[dict], x: str, y: str = "mIoU (%)", hue: str | None = None, title: str = "",
                rotation: float = 0, max_width: float = 14.0):
    """Every seed's value as a point, with the mean and its 95% confidence interval (seaborn's bootstrap, seeded:
    the same figure every run) per ``x`` (and ``hue``); ``records``: one dict per run, e.g.
    {"method": "pCE", "column": "scribbles", "mIoU (%)": 64.6}. One seed: the point and its mean, no interval."""
    df = pd.DataFrame(records)
    n, k = df[x].nunique(), 1 if hue is None else df[hue].nunique()
    fig, ax = plt.subplots(figsize=(min(max_width, 1.6 + n * (0.6 + 0.2 * k)), 3.4 + 0.02 * rotation))
    sns.stripplot(data=df, x=x, y=y, hue=hue, dodge=hue is not None, jitter=0.04, alpha=0.5, size=4, ax=ax, legend=False,
                  palette="deep" if hue else None, color=None if hue else "#4c72b0")
    sns.pointplot(data=df, x=x, y=y, hue=hue, dodge=0.8 - 0.8 / k if hue else False, errorbar=("ci", 95), seed=0,
                  linestyle="none", markers="D", markersize=4, capsize=0.15, err_kws={"linewidth": 1.2}, ax=ax,
                  palette="deep" if hue else None, color=None if hue else "#c44e52")
    if rotation:
        ax.tick_params(axis="x", labelrotation=rotation)
    if hue is not None:
        ax.legend(fontsize=7, title=hue, title_fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def robustness(records: list[dict], x: str, y: str = "mIoU (%)", hue: str = "method", title: str = ""):
    """One line per ``hue`` (method) of ``y`` against ``x`` (e.g. the shrink rate), the mean over seeds with its 95%
    confidence interval as a band (seaborn, seeded bootstrap)."""
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    sns.lineplot(data=pd.DataFrame(records), x=x, y=y, hue=hue, errorbar=("ci", 95), seed=0, marker="o", ax=ax)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def soft_colorize(y: np.ndarray) -> np.ndarray:
    """Soft labels (K, H, W) -> (H, W, 3) uint8: the convex combination sum_k y^k colour_k (Potts Fig. 7)."""
    k = y.shape[0]
    return np.einsum("khw,kc->hwc", y, _PAL[:k].astype(np.float32)).round().clip(0, 255).astype(np.uint8)


def lines_with_std(x, series: dict, xlabel: str, ylabel: str = "mIoU (%)", title: str = ""):
    """One line per series over ``x``: ``series[name] = (means, stds)``, std drawn as error bars."""
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for name, (means, stds) in series.items():
        ax.errorbar(x, means, yerr=stds, marker="o", ms=3, capsize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def save(fig, path: Path) -> Path:
    """Write ``fig`` as PNG (dpi 110), creating folders; returns the path. Under torchrun only rank 0 writes."""
    path = Path(path)
    if not distributed.is_main():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def heat(values: np.ndarray, vmin: float = 0.0, vmax: float = 1.0, cmap: str = "jet") -> np.ndarray:
    """(H, W) scalar map -> (H, W, 3) uint8 through a colormap (for :func:`grid` panels)."""
    v = np.clip((np.asarray(values, dtype=np.float64) - vmin) / max(vmax - vmin, 1e-12), 0, 1)
    return (plt.get_cmap(cmap)(v)[..., :3] * 255).round().astype(np.uint8)


def interactive(draw, **sliders):
    """A widget cell that still draws a plain figure headless.

    Calls ``draw()`` with its defaults and returns that Figure (it is what papermill / nbval store).
    In an interactive Jupyter session (ipywidgets importable; not :func:`~scribbleseg.lab.config.headless`, as under
    ``scribbleseg.lab.run``, which injects ``headless = True``, or ``make test``, which sets SCRIBBLESEG_BATCH=1, so
    that stored outputs hold no widget state) it also shows ``ipywidgets.interact(draw, **sliders)`` below it, e.g.
    ``gamma=(0.0, 5.0, 0.5)``.
    """
    fig = draw()
    if not headless():
        try:
            import ipywidgets
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:
            return fig
        if type(get_ipython()).__name__ == "ZMQInteractiveShell":
            def show(**kw):
                f = draw(**kw)
                display(f)
                plt.close(f)

            ipywidgets.interact(show, **sliders)
    return fig
