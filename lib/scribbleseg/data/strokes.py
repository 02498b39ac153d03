"""Scribbles as strokes: ScribbleSup's XML format, rasterisation, and URSS's drop / shrink variants.

A scribble annotation is a list of :class:`Stroke` polylines, each tagged with a class. This is how
ScribbleSup (Lin et al., CVPR 2016) ships its PASCAL annotations::

    <annotation><filename>2007_000032.jpg</filename><size><width>500</width><height>281</height></size>
      <polygon><tag>plane</tag><point><X>10</X><Y>20</Y></point>...</polygon> ...
    </annotation>

The embedded benchmark writes the same XML (plus an optional ``<instance>`` tag per stroke, which
ScribbleSup lacks), so one rasteriser serves both, and drop / shrink act on strokes, not pixels.

Variants from URSS (Pan et al., ICCV 2021), Sec. 5.1 / Fig. 6:

- *scribble-drop*: every object independently loses all its scribbles with probability r;
- *scribble-shrink*: every scribble is shrunk by ratio r toward its middle (r = 1 leaves a point).

Rasterisation is hand-written on top of ``skimage.draw.line`` because no library rasterises
polylines into a label map with "first class wins" semantics and a square brush.
"""
from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.draw import line

from scribbleseg.constants import IGNORE_INDEX


@dataclasses.dataclass(frozen=True)
class Stroke:
    """One scribble stroke.

    Attributes:
        cls: class index (0 = background).
        points: (P, 2) float array of (x, y) vertices in pixel coordinates, P >= 1.
        instance: object id the stroke belongs to (-1 when unknown, as in ScribbleSup).
    """

    cls: int
    points: np.ndarray
    instance: int = -1


def write_xml(path: Path, strokes: list[Stroke], filename: str, size: tuple[int, int],
              class_names: tuple[str, ...]) -> None:
    """Write strokes as ScribbleSup XML. ``size`` is (height, width)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = filename
    sz = ET.SubElement(root, "size")
    ET.SubElement(sz, "width").text = str(size[1])
    ET.SubElement(sz, "height").text = str(size[0])
    for s in strokes:
        poly = ET.SubElement(root, "polygon")
        ET.SubElement(poly, "tag").text = class_names[s.cls]
        if s.instance >= 0:
            ET.SubElement(poly, "instance").text = str(s.instance)
        for x, y in np.asarray(s.points):
            pt = ET.SubElement(poly, "point")
            ET.SubElement(pt, "X").text = f"{x:g}"
            ET.SubElement(pt, "Y").text = f"{y:g}"
    Path(path).write_text(ET.tostring(root, encoding="unicode"))


def read_xml(path: Path, class_names: tuple[str, ...]) -> tuple[list[Stroke], tuple[int, int]]:
    """Read ScribbleSup XML. Returns (strokes, (height, width)).

    Raises ValueError naming the file for malformed XML, an unknown tag, or a stroke without points.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
        size = (int(root.findtext("size/height")), int(root.findtext("size/width")))
    except (ET.ParseError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: not a valid ScribbleSup XML file ({e}); re-extract or regenerate it") from e
    index = {n: i for i, n in enumerate(class_names)}
    strokes = []
    for k, poly in enumerate(root.iter("polygon")):
        tag = (poly.findtext("tag") or "").strip()
        if tag not in index:
            raise ValueError(f"{path}: stroke {k} has unknown class tag {tag!r}; expected one of {list(class_names)}")
        pts = [(float(p.findtext("X")), float(p.findtext("Y"))) for p in poly.iter("point")]
        if not pts:
            raise ValueError(f"{path}: stroke {k} ({tag}) has no <point>")
        strokes.append(Stroke(index[tag], np.array(pts, dtype=np.float64), int(poly.findtext("instance", "-1"))))
    return strokes, size


def rasterize(strokes: list[Stroke], size: tuple[int, int], width: int = 3,
              clip_to: np.ndarray | None = None) -> np.ndarray:
    """Draw strokes into a label map.

    Args:
        strokes: polylines; vertices outside the image are clipped.
        size: (H, W).
        width: brush width in pixels (1 or an odd number; BLPSeg's code draws 1 px, rloss/URSS/CDSP 3 px).
        clip_to: optional (H, W) class map: a pixel keeps the stroke's class only where clip_to equals it.

    Returns:
        (H, W) uint8 map, class index on stroke pixels, IGNORE_INDEX elsewhere. Where strokes of
        different classes overlap, the earlier stroke wins.
    """
    if width < 1 or width % 2 == 0:
        raise ValueError(f"stroke width must be 1 or an odd number of pixels, got {width}")
    h, w = size
    out = np.full((h, w), IGNORE_INDEX, dtype=np.uint8)
    brush = np.ones((width, width), dtype=bool)
    for s in strokes:
        pts = np.rint(np.asarray(s.points)).astype(int)  # (P, 2) as (x, y)
        hit = np.zeros((h, w), dtype=bool)
        rr, cc = [pts[0, 1]], [pts[0, 0]]
        for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
            r, c = line(y0, x0, y1, x1)
            rr.extend(r), cc.extend(c)
        rr, cc = np.array(rr), np.array(cc)
        keep = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        hit[rr[keep], cc[keep]] = True
        if width > 1:
            hit = ndimage.binary_dilation(hit, structure=brush)
        if clip_to is not None:
            hit &= clip_to == s.cls
        out[hit & (out == IGNORE_INDEX)] = s.cls
    return out


def drop_strokes(strokes: list[Stroke], rate: float, rng: np.random.Generator,
                 keep_background: bool = True) -> list[Stroke]:
    """URSS scribble-drop: each object loses all its strokes with probability ``rate``.

    Objects are identified by ``instance``; strokes with unknown instance (-1) count as their own
    object. Background strokes are kept unless ``keep_background`` is False. rate = 0 is the identity.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"drop rate must lie in [0, 1], got {rate}")
    objects = sorted({(s.cls, s.instance if s.instance >= 0 else -1 - k) for k, s in enumerate(strokes)})
    dropped = {o for o in objects if rng.random() < rate}
    out = []
    for k, s in enumerate(strokes):
        key = (s.cls, s.instance if s.instance >= 0 else -1 - k)
        if (keep_background and s.cls == 0) or key not in dropped:
            out.append(s)
    return out


def shrink_stroke(stroke: Stroke, rate: float) -> Stroke:
    """URSS scribble-shrink of one stroke: keep the middle (1 - rate) of its arc length.

    rate = 0 returns the stroke unchanged; rate = 1 leaves the single point at the middle of the arc.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"shrink rate must lie in [0, 1], got {rate}")
    p = np.asarray(stroke.points, dtype=np.float64)  # (P, 2)
    if rate == 0.0 or len(p) == 1:
        return stroke
    seg = np.linalg.norm(np.diff(p, axis=0), axis=1)  # (P-1,)
    s = np.concatenate([[0.0], np.cumsum(seg)])  # (P,) arc length at each vertex
    total = s[-1]
    a, b = total * rate / 2, total * (1 - rate / 2)  # kept arc interval [a, b]
    x = np.interp([a, b], s, p[:, 0])
    y = np.interp([a, b], s, p[:, 1])
    inner = p[(s > a) & (s < b)]
    pts = np.vstack([[x[0], y[0]], inner, [x[1], y[1]]]) if b > a else np.array([[x[0], y[0]]])
    return dataclasses.replace(stroke, points=pts)


def shrink_strokes(strokes: list[Stroke], rate: float) -> list[Stroke]:
    """URSS scribble-shrink applied to every stroke (background included)."""
    return [shrink_stroke(s, rate) for s in strokes]
