"""The scribble playground (issue 17): sketches, ScribbleSup save / load, the panels, each paper's views on small
hand-made cases, and the canvas's mouse handling without a browser (tests/test_browser.py drives a real one)."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from scribbleseg.blpseg import playground as blpseg_views
from scribbleseg.blpseg.method import BLPSeg
from scribbleseg.cdsp import playground as cdsp_views
from scribbleseg.cdsp.distance_maps import scribble_distance
from scribbleseg.constants import IGNORE_INDEX
from scribbleseg.data.folder import SplitData
from scribbleseg.data.grid import onehot_on_grid
from scribbleseg.data.strokes import Stroke
from scribbleseg.lab import playground
from scribbleseg.lab.canvas import Canvas
from scribbleseg.potts import playground as potts_views
from scribbleseg.potts.method import SelfLabeling
from scribbleseg.train import TrainConfig, make_model
from scribbleseg.urss import playground as urss_views
from scribbleseg.urss.method import URSS

NAMES = ("background", "red", "blue")


def two_halves(h=16, w=16) -> np.ndarray:
    """Left half red, right half blue, (h, w, 3) uint8."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2, 0] = 220
    img[:, w // 2:, 2] = 220
    return img


def halves_sketch(h=16, w=16) -> playground.Sketch:
    s = playground.Sketch(two_halves(h, w), NAMES, width=1, name="halves")
    s.add(1, [(2, 2), (2, h - 3)])                                   # a vertical stroke in the red half
    s.add(2, [(w - 3, 2), (w - 3, h - 3)])                           # and one in the blue half
    return s


def halves_mask(h=16, w=16) -> np.ndarray:
    m = np.full((h, w), 1, np.uint8)
    m[:, w // 2:] = 2
    return m


def test_sketch_strokes_label_undo_clear_and_errors():
    s = halves_sketch()
    lab = s.label()
    assert lab[2, 2] == 1 and lab[13, 13] == 2 and lab[8, 8] == IGNORE_INDEX
    assert (lab != IGNORE_INDEX).sum() == 2 * 12
    s.undo()
    assert len(s.strokes) == 1 and (s.label() == 2).sum() == 0
    s.clear()
    assert s.strokes == [] and (s.label() == IGNORE_INDEX).all()
    s.undo()                                                          # nothing to undo: no error
    with pytest.raises(ValueError, match="stroke class 3 is not one of the 3 classes"):
        s.add(3, [(1, 1)])
    with pytest.raises(ValueError, match="at least one point"):
        s.add(1, np.zeros((0, 2)))


def test_save_and_load_round_trip_and_a_wrong_size_is_named(tmp_path):
    s = halves_sketch()
    path = s.save(tmp_path / "sub" / "halves.xml")
    assert "<tag>red</tag>" in path.read_text()
    back = playground.Sketch(two_halves(), NAMES, width=1)
    back.load(path)
    assert np.array_equal(back.label(), s.label())
    small = playground.Sketch(two_halves(8, 8), NAMES)
    with pytest.raises(ValueError, match=r"halves.xml: strokes drawn on a 16 x 16 image, this one is 8 x 8"):
        small.load(path)


def test_from_split_copies_and_from_upload_resizes():
    data = SplitData(["a", "b"], np.stack([two_halves(), two_halves()]), np.zeros((2, 16, 16), np.uint8),
                     np.full((2, 16, 16), IGNORE_INDEX, np.uint8), [[Stroke(1, np.array([[1.0, 1.0]]))], []], NAMES)
    s = playground.from_split(data, 0)
    s.add(2, [(5, 5)])
    assert len(data.strokes[0]) == 1 and s.name == "a" and len(s.strokes) == 2
    with pytest.raises(ValueError, match="image index 2 is outside the split's 2 images"):
        playground.from_split(data, 2)
    buf = io.BytesIO()
    Image.fromarray(two_halves(10, 20)).save(buf, format="PNG")
    up = playground.from_upload(buf.getvalue(), (16, 16), NAMES, "cat.png")
    assert up.image.shape == (16, 16, 3) and up.name == "cat" and up.strokes == []
    with pytest.raises(ValueError, match="bad.txt: not an image PIL can read"):
        playground.from_upload(b"no image", (16, 16), NAMES, "bad.txt")


def test_inputs_are_a_normalised_batch_of_one():
    x = halves_sketch().inputs()
    assert x["image"].shape == (1, 3, 16, 16) and x["rgb"].shape == (1, 3, 16, 16) and x["num_classes"] == 3
    assert torch.allclose(x["image"][0, 0, 0, 0], torch.tensor((220 / 255 - 0.45) / 0.25))
    assert x["scribble"].dtype == torch.long and int(x["scribble"][0, 2, 2]) == 1


def test_agreement_by_hand():
    mask = np.array([[1, 1, 2, 2]] * 4, np.uint8)                     # (4, 4)
    soft = np.zeros((3, 2, 2))
    soft[1, :, 0], soft[2, 0, 1] = 1.0, 0.6                             # left cells: class 1; top right: class 2
    soft[1, 0, 1] = 0.4                                                 # bottom-right cell: all zero, not counted
    assert playground.agreement(soft, mask) == 100.0                   # 12 counted pixels, all right
    assert playground.agreement(np.array([[1, 1], [1, 1]]), mask) == 50.0
    assert playground.agreement(np.zeros((4, 4)), mask) is None         # a float map is not a labelling
    assert playground.agreement(np.zeros((3, 2, 2)), mask) is None      # nothing defined


@pytest.mark.parametrize("panel", [np.zeros((16, 16)), np.zeros((3, 4, 4)), np.ones((4, 4), np.int64),
                                   np.zeros((16, 16, 3), np.uint8)])
def test_every_panel_kind_draws_at_image_size(panel):
    rgb = playground.to_rgb(panel, (16, 16))
    assert rgb.shape == (16, 16, 3) and rgb.dtype == np.uint8


def test_potts_propagation_labels_each_half_with_its_stroke():
    s = halves_sketch()
    out = potts_views.propagations(s.inputs(), SelfLabeling("Q", "Q", steps=200), stride=1)
    assert len(out) == 2
    for y in out.values():
        assert y.shape == (3, 16, 16) and torch.allclose(y.sum(0), torch.ones(16, 16), atol=1e-4)
        assert playground.agreement(y.numpy(), halves_mask()) == 100.0  # the colour edge stops each label
    s.clear()                                                         # no strokes: uniform everywhere
    flat = potts_views.propagations(s.inputs(), SelfLabeling(steps=5), stride=4)
    assert all(torch.allclose(y, torch.full_like(y, 1 / 3), atol=1e-6) for y in flat.values())


def test_blpseg_lam_on_one_class_of_strokes_gives_that_class_everywhere():
    torch.manual_seed(0)
    net = BLPSeg(sigma=2.0).wrap(make_model(TrainConfig(width=8), 3), 3)
    s = playground.Sketch(two_halves(), NAMES, width=1)
    s.add(2, [(3, 3), (12, 12)])
    out = blpseg_views.views(s.inputs(), net)
    assert out["BLPSeg prediction"].shape == (16, 16) and out["annotation probability max_c p_scrib"].shape == (16, 16)
    lam = out["LAM on the strokes (Eq. 3-5)"]                          # every source is class 2
    assert lam.shape == (3, 4, 4) and torch.allclose(lam, torch.tensor([0.0, 0.0, 1.0])[:, None, None].expand(3, 4, 4),
                                                     atol=1e-6)
    onehot, stroked = onehot_on_grid(torch.tensor([[[IGNORE_INDEX, 1], [0, IGNORE_INDEX]]]), (2, 2), 2)
    assert onehot.tolist() == [[[[0, 0], [1, 0]], [[0, 1], [0, 0]]]] and stroked.tolist() == [[[False, True], [True, False]]]


def test_urss_walk_on_strokes_by_hand():
    p = torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.6, 0.2], [0.1, 0.1, 0.8]], dtype=torch.float64)  # (M, M), 1 x 3 grid
    scribble = torch.tensor([[[1, IGNORE_INDEX, 2]]])                   # cell 0 class 1, cell 2 class 2
    shares, mass = urss_views.walk_on_strokes(p, scribble, (1, 3), 3)
    assert torch.allclose(mass, torch.tensor([[0.75, 0.4, 0.9]], dtype=torch.float64))
    assert torch.allclose(shares[1], torch.tensor([[0.5 / 0.75, 0.5, 0.1 / 0.9]], dtype=torch.float64))
    assert torch.allclose(shares[2], torch.tensor([[0.25 / 0.75, 0.5, 0.8 / 0.9]], dtype=torch.float64))
    assert torch.all(shares[0] == 0)


def test_urss_views_need_the_paper_walk_and_give_its_panels():
    torch.manual_seed(0)
    s = halves_sketch(32, 32)
    net = URSS(random_walk="paper").wrap(make_model(TrainConfig(width=8), 3), 3)
    out = urss_views.views(s.inputs(), net, k=2)
    assert set(out) == {"URSS prediction", "URSS entropy / log K (Eq. 2)", "P on the strokes (Eq. 6)",
                        "P's mass on the strokes", "eigenvector 1 of P", "eigenvector 2 of P"}
    assert out["P on the strokes (Eq. 6)"].shape == (3, 8, 8) and float(out["P's mass on the strokes"].max()) == 1.0
    with pytest.raises(ValueError, match="needs a network with the paper's random walk"):
        urss_views.views(s.inputs(), URSS(random_walk="none").wrap(make_model(TrainConfig(width=8), 3), 3))


def test_cdsp_views_without_networks_give_the_distance_map():
    s = halves_sketch()
    out = cdsp_views.views(s.inputs(), lambda_s=1.0)
    assert list(out) == ["d_s (Eq. 16, lambda_s 1)"]
    assert np.array_equal(out["d_s (Eq. 16, lambda_s 1)"].numpy(), scribble_distance(s.label(), 1.0))


def test_canvas_turns_mouse_events_into_strokes_and_redraws(tmp_path):
    s = playground.Sketch(two_halves(), NAMES, width=1, name="halves")
    views = {"Potts": lambda x: potts_views.propagations(x, SelfLabeling(steps=2), stride=4)}
    c = Canvas(s, views, scale=2, save_dir=tmp_path)
    first = c.panels.value
    assert c.redraws == 1 and "0 strokes" in c.status.value
    c.classes.value = 2
    c.press(4, 4), c.drag(10, 20), c.release(20, 20)                   # canvas pixels: image pixels x 2
    assert len(s.strokes) == 1 and s.strokes[0].cls == 2
    assert np.array_equal(s.strokes[0].points, [[2, 2], [5, 10], [10, 10]])
    assert c.redraws == 2 and "1 strokes, redraw 2" in c.status.value and c.panels.value != first
    c.drag(1, 1)                                                       # a move without a press draws nothing
    assert len(s.strokes) == 1
    c.save()
    assert (tmp_path / "halves.xml").exists()
    c.clear()
    assert s.strokes == []
    c.load()
    assert len(s.strokes) == 1 and c.redraws == 4
    c.undo()
    assert s.strokes == [] and c.redraws == 5
