"""scribbleseg.data.strokes (XML, rasterisation, URSS drop / shrink) and folder.load_split's errors."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from scribbleseg.data.folder import load_split
from scribbleseg.data.io import write_label
from scribbleseg.data.strokes import (Stroke, drop_strokes, rasterize, read_xml, shrink_stroke, shrink_strokes,
                                      write_xml)

NAMES = ("background", "cat", "dog")


def S(cls, pts, instance=-1):
    return Stroke(cls, np.array(pts, dtype=np.float64), instance)


def labelled(lab):
    return set(zip(*np.nonzero(lab != 255)))


def test_xml_round_trip(tmp_path):
    strokes = [S(1, [(0, 0), (2.5, 3), (7, 1)], instance=4), S(0, [(5, 5)]), S(2, [(1, 9), (3, 9)])]
    write_xml(tmp_path / "a.xml", strokes, "a.jpg", (12, 10), NAMES)
    back, size = read_xml(tmp_path / "a.xml", NAMES)
    assert size == (12, 10) and len(back) == 3
    for a, b in zip(strokes, back):
        assert a.cls == b.cls and a.instance == b.instance and np.array_equal(a.points, b.points)


def test_read_xml_errors_name_file(tmp_path):
    (tmp_path / "bad.xml").write_text("<annotation><size><width>3</width>")
    with pytest.raises(ValueError, match="bad.xml"):
        read_xml(tmp_path / "bad.xml", NAMES)
    write_xml(tmp_path / "cow.xml", [S(1, [(0, 0)])], "cow.jpg", (4, 4), ("background", "cow"))
    with pytest.raises(ValueError, match="cow.xml.*'cow'"):
        read_xml(tmp_path / "cow.xml", NAMES)


def test_rasterize_exact_pixels():
    s = [S(1, [(2, 3), (6, 3)])]
    assert labelled(rasterize(s, (8, 10), width=1)) == {(3, c) for c in range(2, 7)}
    wide = rasterize(s, (8, 10), width=3)
    assert labelled(wide) == {(r, c) for r in range(2, 5) for c in range(1, 8)} and (wide[2:5, 1:8] == 1).all()
    assert labelled(rasterize([S(2, [(4, 4)])], (8, 10), width=1)) == {(4, 4)}
    with pytest.raises(ValueError, match="width"):
        rasterize(s, (8, 10), width=2)


def test_rasterize_clip_overlap_and_outside():
    s = [S(1, [(2, 3), (6, 3)])]
    region = np.zeros((8, 10), np.uint8)
    region[:, :5] = 1
    clipped = rasterize(s, (8, 10), width=3, clip_to=region)
    assert labelled(clipped) == {(r, c) for r in range(2, 5) for c in range(1, 5)}
    a, b = S(1, [(0, 2), (4, 2)]), S(2, [(2, 0), (2, 4)])  # cross at (row 2, col 2)
    assert rasterize([a, b], (5, 5), width=1)[2, 2] == 1
    assert rasterize([b, a], (5, 5), width=1)[2, 2] == 2
    out = rasterize([S(1, [(-5, 2), (4, 2)]), S(2, [(20, 20), (30, 30)])], (5, 5), width=1)
    assert labelled(out) == {(2, c) for c in range(5)}


def test_drop_identity_and_full():
    strokes = [S(1, [(0, 0)], 0), S(0, [(1, 1)]), S(2, [(2, 2)], 1), S(0, [(3, 3)], 2)]
    assert all(a is b for a, b in zip(drop_strokes(strokes, 0.0, np.random.default_rng(0)), strokes, strict=True))
    kept = drop_strokes(strokes, 1.0, np.random.default_rng(0))
    assert [s.cls for s in kept] == [0, 0]
    with pytest.raises(ValueError):
        drop_strokes(strokes, 1.5, np.random.default_rng(0))


def test_drop_groups_by_instance():
    strokes = [S(1, [(k, 0)], k // 3) for k in range(9)]  # instances 0, 0, 0, 1, 1, 1, 2, 2, 2
    counts = set()
    for seed in range(20):
        kept = drop_strokes(strokes, 0.5, np.random.default_rng(seed))
        per_instance = [sum(s.instance == i for s in kept) for i in range(3)]
        assert set(per_instance) <= {0, 3}
        counts.add(len(kept))
    assert len(counts) > 1  # the draw varies with the seed


def test_shrink_hand_checked():
    line = S(1, [(0, 0), (10, 0)])
    assert shrink_stroke(line, 0.0) is line
    assert np.allclose(shrink_stroke(line, 0.5).points, [(2.5, 0), (7.5, 0)])
    bent = S(1, [(0, 0), (4, 0), (4, 4)])  # length 8, keep arc [2, 6]
    assert np.allclose(shrink_stroke(bent, 0.5).points, [(2, 0), (4, 0), (4, 2)])
    for s in (line, bent, S(2, [(1, 1), (7, 3), (2, 8), (9, 9)])):
        assert len(labelled(rasterize([shrink_stroke(s, 1.0)], (12, 12), width=1))) == 1
    assert [len(s.points) for s in shrink_strokes([line, bent], 0.0)] == [2, 3]


def test_load_split_errors(tmp_path):
    root = tmp_path / "data"
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("a\nb\n")
    for sid in "ab":
        (root / "JPEGImages").mkdir(exist_ok=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "JPEGImages" / f"{sid}.jpg")
        write_label(root / "SegmentationClass" / f"{sid}.png", np.full((8, 8), 1, np.uint8))
        (root / "scribble_annotation").mkdir(exist_ok=True)
        write_xml(root / "scribble_annotation" / f"{sid}.xml", [S(1, [(1, 1), (5, 1)])], f"{sid}.jpg", (8, 8), NAMES)
    assert load_split(root, "train", NAMES).scribbles.shape == (2, 8, 8)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_split(tmp_path / "nowhere", "train", NAMES)
    write_label(root / "SegmentationClass" / "b.png", np.full((8, 8), 7, np.uint8))
    with pytest.raises(ValueError, match=r"b\.png.*\[7\]"):
        load_split(root, "train", NAMES)
    write_label(root / "SegmentationClass" / "b.png", np.full((9, 8), 1, np.uint8))
    with pytest.raises(ValueError, match=r"b\.jpg.*b\.png"):
        load_split(root, "train", NAMES)
    (root / "JPEGImages" / "a.jpg").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"a\.jpg"):
        load_split(root, "train", NAMES)


# --- properties --------------------------------------------------------------------------------

H = W = 24
point = st.tuples(st.integers(0, W - 1), st.integers(0, H - 1))
polyline = st.lists(point, min_size=1, max_size=5)


@settings(max_examples=60, deadline=None)
@given(st.data(), st.sampled_from([1, 3]))
def test_clipped_strokes_stay_in_region(data, width):
    x0, y0 = data.draw(st.integers(0, W - 2)), data.draw(st.integers(0, H - 2))
    x1, y1 = data.draw(st.integers(x0 + 1, W)), data.draw(st.integers(y0 + 1, H))
    region = np.zeros((H, W), np.uint8)
    region[y0:y1, x0:x1] = 2
    inside = st.tuples(st.integers(x0, x1 - 1), st.integers(y0, y1 - 1))
    strokes = [S(2, p) for p in data.draw(st.lists(st.lists(inside, min_size=1, max_size=5), min_size=1, max_size=3))]
    lab = rasterize(strokes, (H, W), width, clip_to=region)
    assert ((lab == 255) | (region == 2)).all() and (lab[y0:y1, x0:x1] == 2).any()


# Straight strokes inside the image: for bent polylines that turn back, the shrunk ends round to
# pixels whose Bresenham path can leave the original one, e.g. [(0,0),(0,1),(2,1),(-1,0)] at r=0.25
# gains a pixel (found by hypothesis), so the property is stated where it holds exactly.
@settings(max_examples=80, deadline=None)
@given(st.lists(st.lists(point, min_size=2, max_size=2), min_size=1, max_size=3), st.floats(0, 1),
       st.sampled_from([1, 3]))
def test_shrink_never_adds_pixels(polys, rate, width):
    strokes = [S(1, p) for p in polys]
    before = len(labelled(rasterize(strokes, (H, W), width)))
    assert len(labelled(rasterize(shrink_strokes(strokes, rate), (H, W), width))) <= before


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), polyline, st.integers(-1, 3)), max_size=6), st.integers(0, 99))
def test_drop_zero_is_identity(items, seed):
    strokes = [S(c, p, i) for c, p, i in items]
    kept = drop_strokes(strokes, 0.0, np.random.default_rng(seed))
    assert len(kept) == len(strokes) and all(a is b for a, b in zip(kept, strokes))
