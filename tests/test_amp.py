"""Mixed precision (issue 13): every training method's losses stay finite under fp16 autocast.

The training loop (:func:`scribbleseg.train.fit_epoch`) calls ``losses(model, batch)`` under autocast on
CUDA; CPU autocast with float16 runs the same ops in fp16 (conv, bmm, matmul), so these tests need no GPU.
"""
import numpy as np
import pytest
import torch

from scribbleseg.baseline import PartialCE
from scribbleseg.blpseg.method import BLPSeg
from scribbleseg.cdsp.method import CDSP
from scribbleseg.cdsp.store import PseudoLabels
from scribbleseg.constants import IGNORE_INDEX
from scribbleseg.potts.method import PottsGD, SelfLabeling
from scribbleseg.train import TrainConfig, make_model
from scribbleseg.urss.method import URSS

U, K, N, SIZE = IGNORE_INDEX, 3, 2, 32


def _images() -> np.ndarray:
    """(N, H, W, 3) uint8: a dark left half and a bright right half with a little noise (smooth affinities)."""
    rng = np.random.default_rng(0)
    img = np.zeros((N, SIZE, SIZE, 3), np.int64)
    img[:, :, SIZE // 2:] = 200
    return (img + rng.integers(0, 5, img.shape)).astype(np.uint8)


def _batch(step: int = 3) -> dict:
    """A to_batch-like batch: image normalised, rgb on 0-255, a scribble line in each half, index, flip, step."""
    image = torch.from_numpy(_images()).permute(0, 3, 1, 2).float()                # (N, 3, H, W) on 0-255
    scribble = torch.full((N, SIZE, SIZE), U)
    scribble[:, 4:28, 4], scribble[:, 4:28, SIZE - 5] = 0, 1
    scribble[1, 14:18, 8:12] = 2
    return {"image": (image / 255 - 0.45) / 0.25, "rgb": image, "scribble": scribble, "mask": scribble.clamp(0, K - 1),
            "index": torch.arange(N), "flip": torch.tensor([False, True]), "step": step}


def _model(method, confident: bool = False) -> torch.nn.Module:
    """SmallSegNet width 8 (wrapped by the method); ``confident`` scales the classifier by 10, as a network
    late in training whose predictions (and so the pseudo-labels) are nearly one-hot."""
    model = make_model(TrainConfig(width=8), K)
    if confident:
        with torch.no_grad():
            model.classifier.weight.mul_(10.0)
    return method.wrap(model, K) if hasattr(method, "wrap") else model


def _finite_under_amp(method, confident: bool = False) -> dict:
    model = _model(method, confident).train()
    with torch.autocast("cpu", dtype=torch.float16):
        terms = method.losses(model, _batch())
    bad = {k: float(v) for k, v in terms.items() if not torch.isfinite(v)}
    assert terms and not bad, f"non-finite terms under fp16 autocast: {bad}"
    sum(terms.values()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads), "non-finite gradients under fp16 autocast"
    return terms


@pytest.mark.parametrize("relaxation", ["CD", "CCE", "LQ"])
def test_potts_self_labeling_dense_is_finite_under_fp16_autocast(relaxation):
    """The App. B solver's own autograd under fp16 autocast: the bmm Gram matrix in fp16 made the gradient of
    -ln(y_i.y_j + 1e-6) overflow on confident pseudo-labels (NaN y, FloatingPointError in training)."""
    method = SelfLabeling(relaxation=relaxation, neighbourhood="dense")
    _finite_under_amp(method, confident=True)
    model = _model(method, confident=True)
    logits = model(_batch()["image"])["logits"]
    b = _batch()
    y = method.pseudo_labels(logits, b["scribble"], b["rgb"])
    with torch.autocast("cpu", dtype=torch.float16):                    # the solver ignores autocast
        y_amp = method.pseudo_labels(logits, b["scribble"], b["rgb"])
    assert y_amp.dtype == torch.float32 and torch.equal(y, y_amp)


def _pseudo() -> PseudoLabels:
    rng = np.random.default_rng(1)
    labels = np.zeros((N, SIZE, SIZE), np.uint8)
    labels[:, :, SIZE // 2:] = 1
    labels[1, 10:20, 4:14] = 2
    labels[rng.random(labels.shape) < 0.05] = 0
    return PseudoLabels.from_array(labels, _images())


PL = _pseudo()
METHODS = {
    "pce": PartialCE(), "pce-mask": PartialCE(target="mask"),
    "blpseg": BLPSeg(), "blpseg-nolam": BLPSeg(lam=False), "blpseg-ce": BLPSeg(loss="ce"),
    "blpseg-focal": BLPSeg(loss="focal"), "blpseg-weights": BLPSeg(normalize="weights", detach_weight=True),
    "blpseg-local": BLPSeg(lam_impl="local", sigma=1.0, similarity=("low", "high", "distance")),
    "blpseg-learn": BLPSeg(learn_sigma=True, region="labelled", low_projection=True, head_batchnorm=False),
    "blpseg-self-paper": BLPSeg(self_train_from=0), "blpseg-self-released": BLPSeg(self_train_from=0, self_train="released"),
    "urss": URSS(), "urss-plain": URSS(entropy="plain", random_walk="none"), "urss-attention": URSS(random_walk="attention"),
    "urss-eig-flip": URSS(self_supervision="eigenspace", transform="flip"),
    "urss-eig-translate": URSS(self_supervision="eigenspace", transform="translate"),
    "urss-features-in": URSS(self_supervision="features_in"),
    "urss-features-out": URSS(self_supervision="features_out", transform="translate"),
    "urss-released": URSS.released(), "urss-released-eig": URSS.released(self_supervision="eigenspace"),
    "urss-released-eig-translate": URSS.released(self_supervision="eigenspace", transform="translate"),
    "cdsp": CDSP(pseudo=PL), "cdsp-released": CDSP.released(pseudo=PL),
    "cdsp-decoder": CDSP(pseudo=PL, lorm_features="decoder"), "cdsp-scribbles": CDSP(segc=False, dc=False, lorm=False),
    "potts-gd-dense": PottsGD(), "potts-gd-grid": PottsGD(neighbourhood="grid"),
    "potts-gd-dense-cd": PottsGD(relaxation="CD", eta=0.1), "potts-gd-grid-lq": PottsGD(relaxation="LQ", neighbourhood="grid"),
    "potts-gd-dense-lq": PottsGD(relaxation="LQ"), "potts-gd-dense-q": PottsGD(relaxation="Q", eta=0.1),
    **{f"self-{r}-{ce}-{nb}": SelfLabeling(relaxation=r, cross_entropy=ce, neighbourhood=nb)
       for r, ce in (("CD", "CCE"), ("CCE", "CE"), ("LQ", "RCE"), ("BL", "CE"), ("Q", "Q")) for nb in ("grid", "dense")},
    "self-hard": SelfLabeling(neighbourhood="dense", hard=True), "self-entropy": SelfLabeling(relaxation="Q",
                                                                                              cross_entropy="Q", entropy=0.5),
    "self-gd": SelfLabeling(neighbourhood="dense", optimizer="gd"),
}


@pytest.mark.parametrize("confident", [False, True], ids=["init", "confident"])
@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_is_finite_under_fp16_autocast(name, confident):
    _finite_under_amp(METHODS[name], confident)
