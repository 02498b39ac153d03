"""The embedded benchmark: determinism, exact masks, scribble placement, border-reaching background strokes."""
import dataclasses
import filecmp

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from scribbleseg.constants import EMBEDDED_CLASSES, IGNORE_INDEX
from scribbleseg.data.embedded import EmbeddedConfig, build_embedded, embedded_config
from scribbleseg.data.fashion import clean_objects, load_fashion_mnist
from scribbleseg.data.folder import ScribbleVariant, load_split
from scribbleseg.data.scenes import SceneConfig, compose_scene
from scribbleseg.data.scribblegen import ScribbleConfig, _longest_path, generate_strokes
from scribbleseg.data.strokes import rasterize


@pytest.fixture(scope="module")
def pool():
    imgs, labels = load_fashion_mnist("test")
    return clean_objects(imgs[:600], labels[:600])


def test_fashion_pool_masks_are_clean(pool):
    images, masks, labels = pool
    assert len(images) > 400 and masks.shape[1:] == (28, 28) and set(np.unique(labels)) <= set(range(10))
    assert all(m.sum() >= 60 for m in masks)


def test_build_is_deterministic_and_parallel_equals_serial(tmp_path):
    cfg = EmbeddedConfig(n_train=6, n_val=2, scene=SceneConfig(size=64, object_size=(16, 32)))
    build_embedded(tmp_path / "a", cfg, workers=1)
    build_embedded(tmp_path / "b", cfg, workers=1)
    cmp = filecmp.dircmp(tmp_path / "a" / "SegmentationClass", tmp_path / "b" / "SegmentationClass")
    assert not cmp.diff_files and len(cmp.same_files) == 8
    assert (tmp_path / "a" / "scribble_annotation" / "train_00003.xml").read_text() == \
        (tmp_path / "b" / "scribble_annotation" / "train_00003.xml").read_text()
    other = dataclasses.replace(cfg, seed=1)
    build_embedded(tmp_path / "c", other, workers=1)
    assert (tmp_path / "a" / "scribble_annotation" / "train_00000.xml").read_text() != \
        (tmp_path / "c" / "scribble_annotation" / "train_00000.xml").read_text()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_scribbles_stay_in_their_region_and_label_every_object(pool, seed):
    rng = np.random.default_rng(seed)
    img, cls_map, inst = compose_scene(rng, SceneConfig(), *pool)
    assert img.shape == (128, 128, 3) and img.dtype == np.uint8
    assert set(np.unique(cls_map)) <= set(range(len(EMBEDDED_CLASSES)))
    strokes = generate_strokes(rng, cls_map, inst, ScribbleConfig())
    kept = total = 0
    for s in strokes:  # every stroke's 1-px centre-line, unclipped, stays inside its own class region
        lab = rasterize([s], cls_map.shape, width=1)
        assert np.all(cls_map[lab != IGNORE_INDEX] == s.cls)
        if s.cls > 0:  # ... and inside its own object
            assert np.all(inst[lab != IGNORE_INDEX] == s.instance)
        wide = rasterize([s], cls_map.shape, width=3)
        total += (wide != IGNORE_INDEX).sum()
        kept += (rasterize([s], cls_map.shape, width=3, clip_to=cls_map) != IGNORE_INDEX).sum()
    assert kept >= 0.9 * total  # clipping the 3-px brush to the mask trims only thin parts
    visible = {int(j) for j in np.unique(inst) if j >= 0}
    assert {s.instance for s in strokes if s.cls > 0} == visible
    assert any(s.cls == 0 for s in strokes)


def test_background_strokes_reach_the_image_border(pool):
    rng = np.random.default_rng(0)
    touches = 0
    for _ in range(30):
        _, cls_map, inst = compose_scene(rng, SceneConfig(), *pool)
        lab = rasterize(generate_strokes(rng, cls_map, inst, ScribbleConfig()), cls_map.shape, 3)
        frame = np.concatenate([lab[:2].ravel(), lab[-2:].ravel(), lab[:, :2].ravel(), lab[:, -2:].ravel()])
        touches += bool((frame == 0).any())
    assert touches >= 24  # the first background stroke starts at an edge (unless an object covers it)


def test_longest_path_of_an_L_shape():
    skel = np.zeros((6, 6), dtype=bool)
    skel[1, 1:5] = True
    skel[1:5, 1] = True
    path = _longest_path(skel)
    # 8-connected: the corner (1, 1) is cut diagonally, so 6 pixels from one arm end to the other
    assert len(path) == 6 and {tuple(path[0]), tuple(path[-1])} == {(1, 4), (4, 1)}


def test_split_loads_with_variants(tiny_dataset):
    _, root = tiny_dataset
    base = load_split(root, "train", EMBEDDED_CLASSES)
    assert base.images.shape == (24, 64, 64, 3) and base.scribbles.shape == (24, 64, 64)
    assert 0.005 < base.labelled_fraction() < 0.2
    assert np.all((base.scribbles == IGNORE_INDEX) | (base.scribbles == base.masks))
    thin = load_split(root, "train", EMBEDDED_CLASSES, ScribbleVariant(width=1))
    assert thin.labelled_fraction() < base.labelled_fraction()
    same = load_split(root, "train", EMBEDDED_CLASSES, ScribbleVariant(drop=0.0))
    assert np.array_equal(same.scribbles, base.scribbles)
    dropped = load_split(root, "train", EMBEDDED_CLASSES, ScribbleVariant(drop=1.0))
    assert not np.any((dropped.scribbles > 0) & (dropped.scribbles != IGNORE_INDEX))  # background only
    points = load_split(root, "train", EMBEDDED_CLASSES, ScribbleVariant(width=1, shrink=1.0))
    for lab, strokes in zip(points.scribbles, points.strokes):
        assert (lab != IGNORE_INDEX).sum() <= len(strokes)  # at most one pixel per stroke


def test_embedded_config_rejects_unknown_knob():
    with pytest.raises(ValueError, match="objekts"):
        embedded_config(objekts=[1, 2])
    cfg = embedded_config(objects=[2, 3], length=[0.5, 0.9], n_train=10)
    assert cfg.scene.objects == (2, 3) and cfg.scribble.length == (0.5, 0.9) and cfg.n_train == 10


def test_missing_fashion_mnist_says_what_to_install(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*a, **k):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")
    monkeypatch.setenv("SCRIBBLESEG_FASHION_DIR", str(tmp_path))  # an empty folder: no files
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    from scribbleseg.data.fashion import load_fashion_mnist

    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist") as e:
        load_fashion_mnist("train")
    assert str(tmp_path) in str(e.value)  # names the folder it looked in
