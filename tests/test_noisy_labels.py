"""Label-noise experiment of the Potts paper's Fig. 3(d): corruption, soft targets, training, cache."""
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scribbleseg.potts.noisy_labels import (LOSSES, NoisyLabelConfig, cache_path, check_loss, corrupt_labels,
                                            run_cached, soft_targets, train_classifier, training_set)


def test_soft_targets_hand_computed():
    # K = 4, eta = 0.2: u^k = 0.25, so yhat = 0.05 everywhere + 0.8 on the observed label
    got = soft_targets(torch.tensor([2, 0]), 0.2, 4)
    expect = torch.tensor([[0.05, 0.05, 0.85, 0.05], [0.85, 0.05, 0.05, 0.05]])
    assert got.shape == (2, 4) and got.dtype == torch.float32
    assert torch.allclose(got, expect)
    assert torch.equal(soft_targets(torch.tensor([1]), 0.0, 3), torch.tensor([[0.0, 1.0, 0.0]]))  # one-hot
    assert torch.allclose(soft_targets(torch.tensor([1, 2]), 1.0, 4), torch.full((2, 4), 0.25))  # uniform


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 300), eta=st.floats(0.0, 1.0), k=st.integers(2, 12), seed=st.integers(0, 2**31))
def test_corrupt_labels_redraws_exactly_round_eta_n(n, eta, k, seed):
    labels = np.random.default_rng(seed + 1).integers(0, k, n)
    before = labels.copy()
    observed = corrupt_labels(labels, eta, k, np.random.default_rng(seed))
    m = int(round(eta * n))
    # the same rng draws the same redrawn indices first
    idx = np.random.default_rng(seed).choice(n, size=m, replace=False)
    assert observed.shape == (n,) and observed.dtype == np.int64
    assert np.array_equal(labels, before)  # input untouched
    assert ((observed >= 0) & (observed < k)).all()
    untouched = np.ones(n, bool)
    untouched[idx] = False
    assert np.array_equal(observed[untouched], labels[untouched])  # only the m redrawn samples may change
    assert (observed != labels).sum() <= m


def test_corrupt_labels_random_label_is_uniform_over_all_classes():
    labels = np.zeros(20000, np.int64)
    observed = corrupt_labels(labels, 0.5, 4, np.random.default_rng(0))
    # 10000 redrawn, each keeps label 0 with probability 1/4: about 7500 change
    assert abs((observed != 0).sum() - 7500) < 200
    assert set(np.unique(observed)) == {0, 1, 2, 3}
    assert np.array_equal(corrupt_labels(labels, 0.0, 4, np.random.default_rng(0)), labels)
    with pytest.raises(ValueError, match="eta"):
        corrupt_labels(labels, 1.5, 4, np.random.default_rng(0))


def test_loss_names():
    assert LOSSES == ("CE", "RCE", "CCE")
    for name in LOSSES:
        assert check_loss(name) == name
    for bad in ("Q", "ce", "MAE", ""):
        with pytest.raises(ValueError, match=r"'CE', 'RCE', 'CCE'"):
            check_loss(bad)
    images, observed = torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="unknown loss 'Q'"):
        train_classifier(NoisyLabelConfig(loss="Q", n_train=4, epochs=1), images, observed)


@pytest.mark.parametrize("loss", LOSSES)
def test_each_loss_trains_one_tiny_step(loss):
    cfg = NoisyLabelConfig(loss=loss, eta=0.3, n_train=64, epochs=1, batch_size=32)
    images, _, observed = training_set(cfg)
    model, history = train_classifier(cfg, images, observed)
    assert len(history) == 1 and np.isfinite(history[0]["loss"])
    assert model(images[:5]).shape == (5, 10)


def test_training_set_is_deterministic_and_corrupts_round_eta_n():
    cfg = NoisyLabelConfig(eta=0.25, n_train=400, seed=3)
    x, clean, observed = training_set(cfg)
    x2, clean2, observed2 = training_set(cfg)
    assert x.shape == (400, 1, 28, 28) and torch.equal(x, x2) and torch.equal(observed, observed2)
    assert 0 < (observed != clean).sum() <= 100
    assert not torch.equal(training_set(NoisyLabelConfig(eta=0.25, n_train=400, seed=4))[2], observed)


def test_tiny_run_beats_chance_is_deterministic_and_cached(tmp_path):
    # 256 images, 2 epochs of 16 steps (about 0.1 s): 0.37 on 500 test images, chance is 0.1
    cfg = NoisyLabelConfig(loss="CCE", eta=0.2, n_train=256, n_test=500, epochs=2, batch_size=16, seed=0)
    first = run_cached(cfg, root=tmp_path)
    assert not first["cached"] and first["accuracy"] > 0.25
    path = cache_path(cfg, tmp_path)
    assert path.parent == tmp_path / "noisy_labels" and path.exists()
    again = run_cached(cfg, root=tmp_path)
    assert again["cached"] and again["accuracy"] == first["accuracy"]
    path.unlink()  # retrain from scratch: same seed, same numbers
    fresh = run_cached(cfg, root=tmp_path)
    assert fresh["accuracy"] == first["accuracy"]
    assert fresh["history"][0]["loss"] == first["history"][0]["loss"]
    assert json.loads(path.read_text())["config"]["loss"] == "CCE"
    assert cache_path(NoisyLabelConfig(seed=1), tmp_path) != cache_path(NoisyLabelConfig(seed=0), tmp_path)
