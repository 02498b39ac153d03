"""Synthetic scribbles drawn the way ScribbleSup's annotators draw them.

Objects: one stroke along the longest path of the skeleton of the object's eroded visible region
(so strokes sit in the object's interior: the annotation bias BLPSeg's Fig. 1 documents).
Background: 1-3 smooth free-hand strokes through the background, the first one starting at an
image edge: annotators' background strokes reach the border, and a generator whose background
strokes never reach it makes pCE models paint false objects along the border (an artefact).

Skeletons come from ``skimage.morphology.skeletonize``, distances from
``scipy.ndimage.distance_transform_edt``, the skeleton's longest path from two breadth-first
sweeps with ``scipy.sparse.csgraph``.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse.csgraph import breadth_first_order, connected_components
from skimage.measure import approximate_polygon
from skimage.morphology import skeletonize

from scribbleseg.data.strokes import Stroke


@dataclasses.dataclass(frozen=True)
class ScribbleConfig:
    """Knobs of the scribble generator.

    Attributes:
        margin: erosion depth (px) before skeletonising an object (capped at half its thickness).
        length: (min, max) fraction of the skeleton's longest path that a stroke covers.
        background_strokes: (min, max) background strokes; the first one starts at the image edge.
        background_length: (min, max) length of a background stroke as a fraction of the image side.
    """

    margin: float = 3.0
    length: tuple[float, float] = (0.6, 1.0)
    background_strokes: tuple[int, int] = (1, 3)
    background_length: tuple[float, float] = (0.3, 0.8)


def _longest_path(skel: np.ndarray) -> np.ndarray:
    """(H, W) bool skeleton -> (L, 2) (row, col) pixels of its longest path (exact on trees)."""
    rr, cc = np.nonzero(skel)
    n = len(rr)
    if n <= 1:
        return np.stack([rr, cc], axis=1)
    index = -np.ones(skel.shape, dtype=np.int64)
    index[rr, cc] = np.arange(n)
    rows, cols = [], []
    for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):  # 8-neighbour edges, each once
        r2, c2 = rr + dr, cc + dc
        ok = (r2 >= 0) & (r2 < skel.shape[0]) & (c2 >= 0) & (c2 < skel.shape[1])
        j = np.full(n, -1)
        j[ok] = index[r2[ok], c2[ok]]
        rows.append(np.nonzero(j >= 0)[0]), cols.append(j[j >= 0])
    r, c = np.concatenate(rows), np.concatenate(cols)
    g = sparse.coo_matrix((np.ones(len(r)), (r, c)), shape=(n, n)).tocsr()
    g = g + g.T
    _, lab = connected_components(g, directed=False)  # keep the largest skeleton component
    start = int(np.nonzero(lab == np.bincount(lab).argmax())[0][0])
    order, _ = breadth_first_order(g, start, directed=False)
    a = int(order[-1])  # farthest node from start (BFS order ends at the deepest level)
    order, pred = breadth_first_order(g, a, directed=False, return_predecessors=True)
    b = int(order[-1])
    path = [b]
    while path[-1] != a:
        path.append(int(pred[path[-1]]))
    return np.stack([rr[path], cc[path]], axis=1)


def _to_points(path_rc: np.ndarray) -> np.ndarray:
    """(L, 2) (row, col) -> simplified (P, 2) (x, y) polyline within 0.5 px of the path."""
    pts = approximate_polygon(path_rc.astype(float), tolerance=0.5) if len(path_rc) > 2 else path_rc
    return np.asarray(pts, dtype=float)[:, ::-1]


def object_stroke(rng: np.random.Generator, region: np.ndarray, cls: int, instance: int,
                  cfg: ScribbleConfig) -> Stroke | None:
    """One stroke along the interior of ``region`` ((H, W) bool); None if the region is empty."""
    if not region.any():
        return None
    rows, cols = np.nonzero(region)
    y0, x0 = rows.min(), cols.min()
    region = region[y0:rows.max() + 1, x0:cols.max() + 1]  # work on the bounding box (speed)
    lab, n = ndimage.label(region)
    if n > 1:  # annotators scribble the main visible part
        region = lab == 1 + int(np.argmax(ndimage.sum(region, lab, np.arange(1, n + 1))))
    dist = ndimage.distance_transform_edt(region)
    core = dist >= min(cfg.margin, max(1.0, 0.5 * dist.max()))
    skel = skeletonize(core)
    if not skel.any():
        r, c = np.unravel_index(np.argmax(dist), dist.shape)
        return Stroke(cls, np.array([[c + x0, r + y0]], dtype=float), instance)
    path = _longest_path(skel) + np.array([y0, x0])  # back to image coordinates
    frac = rng.uniform(*cfg.length)
    keep = max(1, int(round(frac * len(path))))
    start = int(rng.integers(0, len(path) - keep + 1))
    return Stroke(cls, _to_points(path[start:start + keep]), instance)


def _walk(rng: np.random.Generator, allowed: np.ndarray, start: tuple[float, float], heading: float,
          max_len: int) -> np.ndarray:
    """Smooth random walk of unit steps inside ``allowed``; returns (L, 2) (row, col) visited pixels."""
    h, w = allowed.shape
    y, x = start
    turn = 0.0
    out = []
    for _ in range(max_len):
        r, c = int(round(y)), int(round(x))
        if not (0 <= r < h and 0 <= c < w) or not allowed[r, c]:
            break
        if not out or out[-1] != (r, c):
            out.append((r, c))
        turn = 0.85 * turn + rng.normal(0.0, 0.08)  # smooth curvature, like a hand-drawn line
        heading += turn
        y, x = y + np.sin(heading), x + np.cos(heading)
    return np.array(out, dtype=float).reshape(-1, 2)


def background_strokes(rng: np.random.Generator, background: np.ndarray, cfg: ScribbleConfig) -> list[Stroke]:
    """Background strokes in ``background`` ((H, W) bool), eroded away from objects only."""
    h, w = background.shape
    pad = np.pad(background, 1, constant_values=True)  # the image edge is not an object boundary
    core = ndimage.distance_transform_edt(pad)[1:-1, 1:-1] >= cfg.margin
    if not core.any():
        core = background
    n = int(rng.integers(cfg.background_strokes[0], cfg.background_strokes[1] + 1))
    strokes = []
    for k in range(n):
        best = np.zeros((0, 2))
        for _try in range(20):
            max_len = int(rng.uniform(*cfg.background_length) * max(h, w))
            if k == 0:  # start on a random image edge, heading inward
                side = int(rng.integers(4))
                t = rng.uniform(0, (w if side < 2 else h) - 1)
                y, x, heading = [(0, t, np.pi / 2), (h - 1, t, -np.pi / 2), (t, 0, 0.0), (t, w - 1, np.pi)][side]
                heading += rng.uniform(-0.7, 0.7)
            else:
                rr, cc = np.nonzero(core)
                j = int(rng.integers(len(rr)))
                y, x, heading = rr[j], cc[j], rng.uniform(0, 2 * np.pi)
            path = _walk(rng, core, (float(y), float(x)), heading, max_len)
            if len(path) > len(best):
                best = path
            if len(best) >= 0.5 * max_len:
                break
        if len(best):
            strokes.append(Stroke(0, _to_points(best), -1))
    return strokes


def generate_strokes(rng: np.random.Generator, cls_map: np.ndarray, inst: np.ndarray,
                     cfg: ScribbleConfig) -> list[Stroke]:
    """All strokes of one scene: one per visible object, then the background strokes."""
    strokes = []
    for j in range(int(inst.max()) + 1):
        region = inst == j
        if region.any():
            s = object_stroke(rng, region, int(cls_map[region][0]), j, cfg)
            if s is not None:
                strokes.append(s)
    return strokes + background_strokes(rng, cls_map == 0, cfg)
