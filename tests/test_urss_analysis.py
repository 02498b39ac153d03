"""URSS analysis (Table 3 variation, Fig. 3 entropy, Fig. 4 eigenvectors, Table 5 cost) and the study's rows."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from scribbleseg.data.folder import ScribbleVariant
from scribbleseg.urss.method import URSS
from scribbleseg.models.base import SegmentationModel
from scribbleseg.urss import analysis, study
from scribbleseg.urss.model import URSSNet
from scribbleseg.urss.random_walk import RandomWalk
from scribbleseg.urss.transforms import Transform


class PerCell(SegmentationModel):
    """Features = 1x1 conv of the image averaged over 4 x 4 cells: flip- and cell-translation-equivariant;
    ``position`` adds a fixed position-dependent map that breaks it."""

    output_stride = 4

    def __init__(self, position: bool = False, k: int = 3):
        super().__init__()
        torch.manual_seed(0)
        self.proj, self.classifier = nn.Conv2d(3, 6, 1), nn.Conv2d(6, k, 1)
        self.position = torch.linspace(-2, 2, 8).expand(6, 8, 8) if position else None

    def features(self, x):
        f = F.avg_pool2d(self.proj(x), 4)                                    # (N, 6, h, w)
        return f if self.position is None else f + self.position


def _images(n=3):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_variation_is_zero_for_an_equivariant_network_and_positive_otherwise():
    net = URSSNet(PerCell(), RandomWalk(0.5))
    flip = analysis.variation(net, _images(), Transform("flip"))
    assert all(v == pytest.approx(0.0, abs=1e-4) for v in flip.values())    # P is permuted exactly by a flip
    shifted = analysis.variation(net, _images(), Transform("translate", 0, 2))
    assert shifted["f^(L-1)"] == pytest.approx(0.0, abs=1e-4)               # the cells that move keep their values
    broken = analysis.variation(URSSNet(PerCell(position=True), RandomWalk(0.5)), _images(), Transform("flip"))
    assert broken["f^(L-1)"] > 1.0 and broken["P"] > 0.0


def test_variation_maps_are_nan_outside_the_shared_positions():
    net = URSSNet(PerCell(position=True), RandomWalk(0.5))
    maps = analysis.variation_maps(net, _images(1)[0], Transform("translate", 0, 2))
    for m in maps.values():
        assert m.shape == (8, 8) and np.isnan(m[:, :2]).all() and np.isfinite(m[:, 2:]).all()
        assert (m[:, 2:] >= 0).all() and (m[:, 2:] <= 1).all()               # |a - b| <= |a| + |b|


def test_entropy_map_is_one_for_uniform_and_zero_for_confident_predictions():
    net = URSSNet(PerCell(), None)
    nn.init.zeros_(net.classifier.weight), nn.init.zeros_(net.classifier.bias)
    assert np.allclose(analysis.entropy_maps(net, _images(2)), 1.0)
    net.classifier.bias.data = torch.tensor([50.0, 0.0, 0.0])
    assert analysis.entropy_maps(net, _images(2)).max() < 1e-6


def test_leading_eigenvector_of_a_stochastic_matrix_is_constant():
    net = URSSNet(PerCell(), RandomWalk(0.5))
    net.base.proj.weight.data *= 0.3   # small features: P is dense (irreducible), so eigenvalue 1 is simple
    vals, vecs = analysis.leading_eigenvectors(net, _images(1)[0], 3)
    assert vals.shape == (3,) and vecs.shape == (3, 8, 8)
    assert vals[0] == pytest.approx(1.0, abs=1e-6) and np.allclose(vecs[0], vecs[0].flat[0], atol=1e-6)
    assert abs(vals[1]) <= 1 + 1e-6


def test_pca_colours_lie_in_the_unit_range():
    c = analysis.pca_rgb(torch.randn(5, 6, 7))
    assert c.shape == (6, 7, 3) and c.min() >= 0 and c.max() <= 1


def test_cost_counts_parameters_and_the_random_walks_memory():
    batch = {"image": _images(2), "rgb": torch.rand(2, 3, 32, 32) * 255, "scribble": torch.randint(0, 3, (2, 32, 32)),
             "flip": torch.zeros(2, dtype=torch.bool)}
    base = analysis.cost(URSSNet(PerCell(), None), URSS(random_walk="none", entropy="none"), batch, 1)
    walk = analysis.cost(URSSNet(PerCell(), RandomWalk(0.5)), URSS(entropy="none"), batch, 1)
    assert base["params_M"] * 1e6 == 6 * 3 + 6 + 3 * 6 + 3 and walk["params_M"] * 1e6 == 6 * 3 + 6 + 3 * 6 + 3 + 1
    assert walk["memory_MB"] > base["memory_MB"] and base["speed_img_s"] > 0


def test_study_rows_and_readings():
    rows = study.table2_rows(**{"gamma": 0.1})
    assert len(rows) == 10 and rows["no self-supervision"] == study.ur(gamma=0.1)
    assert rows["random, eigenspace"] == study.urss(gamma=0.1)
    assert rows["translation, f^L"].transform == "translate" and rows["flip, f^(L-1)"].self_supervision == "features_in"
    assert set(study.table1_rows()) == {"baseline", "+ entropy", "+ soft entropy", "+ random walk", "+ UR (all)"}
    assert study.best_location({"flip, f^L": 1.0, "flip, eigenspace": 2.0, "random, f^(L-1)": 3.0, "other": 9.0}) \
        == {"flip": "eigenspace", "random": "f^(L-1)"}
    v = study.drop_shrink_variants([0.0, 0.3], [1.0])
    assert v == {"full": ScribbleVariant(3), "drop 0.3": ScribbleVariant(3, drop=0.3), "shrink 1": ScribbleVariant(3, shrink=1.0)}
    with pytest.raises(ValueError, match="seed"):
        study.run_stage_two(None, ScribbleVariant(), [], rows, [0], {})
