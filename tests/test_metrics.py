"""Tests for scribbleseg.metrics."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from scribbleseg.constants import IGNORE_INDEX
from scribbleseg.metrics import (
    ConfusionMeter, border_band_errors, confusion_matrix, iou_from_confusion, miou,
    relative_boundary_distance, weighted_distance_histogram,
)

torch.set_num_threads(1)
K = 4


@st.composite
def label_pair(draw, ignore=True):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6))
    tvals = st.sampled_from(list(range(K)) + ([IGNORE_INDEX] if ignore else []))
    target = draw(hnp.arrays(np.int64, shape, elements=tvals))
    pred = draw(hnp.arrays(np.int64, shape, elements=st.integers(0, K - 1)))
    return pred, target


def test_hand_computed_3x3():
    target = np.array([[0, 0, 1], [1, 1, 2], [2, 2, IGNORE_INDEX]])
    pred = np.array([[0, 1, 1], [1, 2, 2], [2, 0, 0]])
    cm = confusion_matrix(pred, target, 3)
    # pairs (gt, pred): (0,0) (0,1) (1,1) | (1,1) (1,2) (2,2) | (2,2) (2,0); the 255 pixel is dropped
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 1], [1, 0, 2]])
    assert cm.dtype == np.int64
    # IoU = TP / (row + col - TP): c0 = 1/(2+2-1), c1 = 2/(3+3-2), c2 = 2/(3+3-2), in percent
    np.testing.assert_allclose(iou_from_confusion(cm), [100 / 3, 50, 50])
    assert miou(cm) == pytest.approx((100 / 3 + 50 + 50) / 3)
    # torch input gives the same matrix
    np.testing.assert_array_equal(confusion_matrix(torch.tensor(pred), torch.tensor(target), 3), cm)


def test_absent_class_is_nan_and_meter_accumulates():
    cm = confusion_matrix(np.array([0, 0, 1]), np.array([0, 0, 1]), 3)
    iou = iou_from_confusion(cm)
    assert np.isnan(iou[2]) and miou(cm) == 100.0
    meter = ConfusionMeter(3)
    meter.update(np.array([0, 1]), np.array([0, 0]))
    meter.update(torch.tensor([[2]]), torch.tensor([[2]]))
    np.testing.assert_array_equal(meter.matrix, [[1, 1, 0], [0, 0, 0], [0, 0, 1]])
    assert meter.pixel_accuracy() == pytest.approx(200 / 3)
    np.testing.assert_allclose(meter.per_class_iou(), [50, 0, 100])
    assert meter.miou() == pytest.approx(50)
    meter.reset()
    assert meter.matrix.sum() == 0 and np.isnan(meter.miou())


@settings(max_examples=50, deadline=None)
@given(label_pair())
def test_perfect_prediction_is_100(pair):
    _, target = pair
    pred = np.where(target == IGNORE_INDEX, 0, target)
    cm = confusion_matrix(pred, target, K)
    if (target != IGNORE_INDEX).any():
        assert miou(cm) == 100.0
        assert np.count_nonzero(cm - np.diag(np.diag(cm))) == 0
    else:
        assert np.isnan(miou(cm))


@settings(max_examples=50, deadline=None)
@given(label_pair())
def test_iou_range_and_total(pair):
    pred, target = pair
    cm = confusion_matrix(pred, target, K)
    assert cm.sum() == (target != IGNORE_INDEX).sum()
    iou = iou_from_confusion(cm)
    finite = iou[~np.isnan(iou)]
    assert np.all((finite >= 0) & (finite <= 100))


@settings(max_examples=50, deadline=None)
@given(label_pair(), st.randoms(use_true_random=False))
def test_ignore_equals_dropping_and_permutation_invariance(pair, rnd):
    pred, target = pair
    keep = target != IGNORE_INDEX
    cm = confusion_matrix(pred, target, K)
    np.testing.assert_array_equal(cm, confusion_matrix(pred[keep], target[keep], K))
    perm = np.array(rnd.sample(range(pred.size), pred.size), dtype=np.int64)
    np.testing.assert_array_equal(cm, confusion_matrix(pred.ravel()[perm], target.ravel()[perm], K))


def test_better_prediction_scores_higher():
    rng = np.random.default_rng(0)
    target = rng.integers(0, K, size=(2, 8, 8))
    noisy = rng.integers(0, K, size=target.shape)
    bad = np.where(rng.random(target.shape) < 0.6, noisy, target)
    good = np.where(rng.random(target.shape) < 0.2, noisy, target)
    assert miou(confusion_matrix(good, target, K)) > miou(confusion_matrix(bad, target, K))


def test_bad_inputs_name_the_values():
    with pytest.raises(ValueError, match="target.*7"):
        confusion_matrix(np.array([0, 1]), np.array([0, 7]), 3)
    with pytest.raises(ValueError, match="target.*-1"):
        confusion_matrix(np.array([0, 1]), np.array([0, -1]), 3)
    with pytest.raises(ValueError, match="pred.*5"):
        confusion_matrix(np.array([0, 5]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="pred.*255"):
        confusion_matrix(np.array([255, 1]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match=r"shapes differ.*\(2,\).*\(3,\)"):
        confusion_matrix(np.array([0, 1]), np.array([0, 1, 2]), 3)
    with pytest.raises(TypeError, match="argmax"):
        confusion_matrix(np.array([0.2, 0.8]), np.array([0, 1]), 3)


def test_border_band_hand_made():
    target = np.zeros((1, 6, 6), dtype=np.int64)
    target[0, 0, 0] = IGNORE_INDEX            # an unlabelled border pixel, never counted
    pred = target.copy()
    pred[0, 0, 1] = 1                          # one border error
    pred[0, 5, 5] = 1                          # another border error
    pred[0, 2, 2] = 1                          # one interior error
    out = border_band_errors(pred, target, band=2)
    # frame of width 2 in 6x6: 36 - 4 = 32 pixels, 31 labelled; interior 2x2 = 4 pixels
    assert out["border_error_rate"] == pytest.approx(2 / 31)
    assert out["interior_error_rate"] == pytest.approx(1 / 4)
    assert out["border_share_of_errors"] == pytest.approx(2 / 3)
    perfect = border_band_errors(target, target, band=2)
    assert perfect["border_error_rate"] == 0 and np.isnan(perfect["border_share_of_errors"])


def test_relative_distance_square():
    mask = np.zeros((9, 9), dtype=np.int64)
    mask[2:7, 2:7] = 1                          # a 5x5 square of class 1
    d = np.zeros(mask.shape)
    d[mask != IGNORE_INDEX] = relative_boundary_distance(mask)
    sq = d[2:7, 2:7]
    assert sq[2, 2] == 1.0                      # centre: the farthest pixel
    assert sq[0, 0] == sq.min() == pytest.approx(1 / 3)  # edge distance 1, centre distance 3
    assert np.all((d > 0) & (d <= 1))
    # scribble restricted to the centre row of the square: only its 5 pixels are returned
    scribble = np.full(mask.shape, IGNORE_INDEX)
    scribble[4, 2:7] = 1
    np.testing.assert_allclose(relative_boundary_distance(mask, scribble), [1 / 3, 2 / 3, 1, 2 / 3, 1 / 3])


def test_weighted_histogram_normalised():
    d = np.array([0.05, 0.15, 0.95, 1.0])
    probs, edges = weighted_distance_histogram(d, np.array([1.0, 1.0, 2.0, 4.0]), bins=10)
    assert probs.sum() == pytest.approx(1.0) and edges.shape == (11,)
    np.testing.assert_allclose(probs[[0, 1, 9]], [1 / 8, 1 / 8, 6 / 8])
    uniform, _ = weighted_distance_histogram(d, bins=2)
    np.testing.assert_allclose(uniform, [0.5, 0.5])
    with pytest.raises(ValueError, match="weights"):
        weighted_distance_histogram(d, np.zeros(4))
