"""Label range (issue 18 item 1): every loss that takes integer labels raises a ValueError that names a value
outside [0, K) and other than IGNORE_INDEX = 255, and says what it should be; valid labels pass unchanged."""
import numpy as np
import pytest
import torch

from scribbleseg.baseline import PartialCE
from scribbleseg.blpseg.losses import blp_loss, blp_loss_map, focal_loss, scribble_head_loss
from scribbleseg.cdsp.method import CDSP
from scribbleseg.cdsp.store import PseudoLabels
from scribbleseg.cdsp.supervision import basic_supervision, smoothed_cross_entropy
from scribbleseg.constants import IGNORE_INDEX as U
from scribbleseg.losses import check_labels, partial_cross_entropy
from scribbleseg.train import TrainConfig, make_model
from scribbleseg.urss.entropy import soft_entropy

K = 4
LOGITS = torch.randn(2, K, 3, 3, generator=torch.Generator().manual_seed(0))
SCRIB = torch.randn(2, K + 1, 3, 3, generator=torch.Generator().manual_seed(1))
P_SCRIB = torch.softmax(SCRIB[:, :K], 1)
NO_BOUNDARY = torch.zeros(2, 3, 3, dtype=torch.bool)

LOSSES = {  # name -> loss(target)
    "partial_cross_entropy": lambda t: partial_cross_entropy(LOGITS, t),
    "partial_cross_entropy(label_smoothing)": lambda t: partial_cross_entropy(LOGITS, t, label_smoothing=0.1),
    "cdsp.smoothed_cross_entropy": lambda t: smoothed_cross_entropy(LOGITS, t),
    "cdsp.basic_supervision(scribble)": lambda t: basic_supervision(LOGITS, t, torch.zeros_like(t)),
    "cdsp.basic_supervision(pseudo)": lambda t: basic_supervision(LOGITS, torch.zeros_like(t), t),
    "blpseg.scribble_head_loss": lambda t: scribble_head_loss(SCRIB, t),
    "blpseg.scribble_head_loss(weights)": lambda t: scribble_head_loss(SCRIB, t, normalize="weights"),
    "blpseg.blp_loss": lambda t: blp_loss(LOGITS, P_SCRIB, t),
    "blpseg.blp_loss(weights)": lambda t: blp_loss(LOGITS, P_SCRIB, t, normalize="weights"),
    "blpseg.blp_loss_map": lambda t: blp_loss_map(LOGITS, P_SCRIB, t),
    "blpseg.focal_loss": lambda t: focal_loss(LOGITS, t),
    "urss.soft_entropy(scribble)": lambda t: soft_entropy(LOGITS, NO_BOUNDARY, t),
    "check_labels": lambda t: check_labels(t, K),
}


def _target(value: int) -> torch.Tensor:
    """A valid (2, 3, 3) label map (classes, IGNORE_INDEX) with one pixel set to ``value``."""
    t = torch.tensor([[[0, 1, U], [2, 3, U], [U, 0, 1]]] * 2)
    t[1, 2, 2] = value
    return t


@pytest.mark.parametrize("bad", [K, 254, -1])
@pytest.mark.parametrize("name", list(LOSSES))
def test_out_of_range_label_is_a_value_error(name, bad):
    with pytest.raises(ValueError) as err:
        LOSSES[name](_target(bad))
    msg = str(err.value)
    assert f" {bad} " in msg                                                  # names the value
    assert f"[0, {K})" in msg and "255" in msg and "IGNORE_INDEX" in msg        # and the allowed set


@pytest.mark.parametrize("good", [0, K - 1, U])
@pytest.mark.parametrize("name", list(LOSSES))
def test_valid_labels_pass(name, good):
    out = LOSSES[name](_target(good))
    values = out.values() if isinstance(out, dict) else [out]
    assert all(torch.isfinite(v.float()).all() for v in values)


def test_message_lists_every_bad_value():
    t = _target(-1)
    t[0, 0, 0], t[0, 0, 1] = K, 300
    with pytest.raises(ValueError, match=r"-1, 4, 300 outside the allowed set \[0, 4\) or 255"):
        check_labels(t, K, "scribble")
    with pytest.raises(ValueError, match="^scribble has"):
        check_labels(t, K, "scribble")


def test_check_does_not_change_values():
    t = _target(U)
    before = t.clone()
    assert check_labels(t, K) is t and torch.equal(t, before)
    logits = LOGITS.clone().requires_grad_()
    ref = torch.nn.functional.cross_entropy(logits, t, ignore_index=U, reduction="sum") / (t != U).sum()
    assert torch.equal(partial_cross_entropy(logits, t), ref)


def test_methods_raise_on_bad_labels():
    """Through a method the same error reaches the user (scribbles, and CDSP's pseudo-labels)."""
    model = make_model(TrainConfig(width=4), K)
    image = torch.zeros(2, 3, 16, 16)
    scribble = torch.full((2, 16, 16), U)
    scribble[:, 4, 4:12] = 0
    bad = scribble.clone()
    bad[0, 8, 8] = K
    with pytest.raises(ValueError, match=f"target has label value\\(s\\) {K} outside"):
        PartialCE().losses(model, {"image": image, "scribble": bad})
    pseudo = PseudoLabels.from_array(np.zeros((2, 16, 16), np.uint8), np.zeros((2, 16, 16, 3), np.uint8))
    method = CDSP(pseudo=pseudo, lorm=False, ds=False, dc=False)
    pl = torch.zeros(2, 16, 16, dtype=torch.long)
    pl[1, 0, 0] = 254
    batch = {"image": image, "scribble": scribble, "pseudo": pl, "index": torch.arange(2),
             "flip": torch.zeros(2, dtype=torch.bool)}
    with pytest.raises(ValueError, match="254 outside"):
        method.losses(model, batch)
