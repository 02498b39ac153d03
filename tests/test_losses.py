import math

import pytest
import torch

from scribbleseg.constants import IGNORE_INDEX
from scribbleseg.losses import partial_cross_entropy


def test_pce_hand_computed():
    # two pixels, two classes; pixel 0 labelled 0 with logits (0, 0) -> log 2; pixel 1 unlabelled
    logits = torch.zeros(1, 2, 1, 2)
    logits[0, :, 0, 1] = torch.tensor([5.0, -5.0])
    target = torch.tensor([[[0, IGNORE_INDEX]]])
    assert partial_cross_entropy(logits, target).item() == pytest.approx(math.log(2))
    # both labelled: mean of log 2 and -log softmax(5, -5)[1] = 10 + log(1 + e^-10)
    target = torch.tensor([[[0, 1]]])
    expect = (math.log(2) + 10 + math.log1p(math.exp(-10))) / 2
    assert partial_cross_entropy(logits, target).item() == pytest.approx(expect, rel=1e-6)


def test_pce_no_labelled_pixel_is_zero_not_nan():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4), IGNORE_INDEX)
    loss = partial_cross_entropy(logits, target)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() == 0


def test_pce_mean_is_over_labelled_pixels_only():
    logits = torch.randn(1, 3, 4, 4)
    target = torch.full((1, 4, 4), IGNORE_INDEX)
    target[0, 0, 0] = 1
    one = partial_cross_entropy(logits, target)
    assert one.item() == pytest.approx(-torch.log_softmax(logits[0, :, 0, 0], 0)[1].item(), rel=1e-6)


def test_pce_ordering_good_prediction_scores_lower():
    target = torch.randint(0, 3, (1, 5, 5))
    good = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 4
    bad = torch.roll(good, 1, dims=1)
    assert partial_cross_entropy(good, target) < partial_cross_entropy(bad, target)


def test_pce_gradcheck():
    logits = torch.randn(1, 3, 3, 3, dtype=torch.double, requires_grad=True)
    target = torch.tensor([[[0, 1, IGNORE_INDEX], [2, IGNORE_INDEX, 0], [1, 1, 2]]])
    assert torch.autograd.gradcheck(lambda x: partial_cross_entropy(x, target), (logits,))
    assert torch.autograd.gradcheck(lambda x: partial_cross_entropy(x, target, label_smoothing=0.1), (logits,))


def test_pce_size_mismatch_names_shapes():
    with pytest.raises(ValueError, match="differ in size"):
        partial_cross_entropy(torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 3, dtype=torch.long))
