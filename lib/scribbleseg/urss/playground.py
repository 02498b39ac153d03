"""Playground views of URSS (Pan et al., ICCV 2021) for :mod:`scribbleseg.lab.playground`: a trained network's
prediction, its entropy map, the leading eigenvectors of its random-walk matrix P, and P acting on the strokes.

- entropy (Eq. 2) of softmax(logits) over log K: what uncertainty reduction drives down.
- P (Eq. 6) = row-softmax of f^T f on the logits grid; one step on the stroke labels: (P Y_S)_i = sum_{j in S}
  P_ij y_j, renormalised over classes (the share of i's transition mass that lands on each class's strokes), and
  the mass sum_{j in S} P_ij itself (how much of i's walk the strokes receive).
- the k leading eigenvectors of P (Eq. 8's U_P; the first is constant for a row-stochastic P), each rescaled to
  [0, 1] for display (their sign is arbitrary).

Needs a network with the paper's random walk (``URSS(random_walk="paper")``), which outputs P.

Shapes: inputs as :meth:`scribbleseg.lab.playground.Sketch.inputs` gives them; panels (H, W), (h, w) or (K, h, w).
"""
from __future__ import annotations

import torch

from scribbleseg.data.grid import onehot_on_grid
from scribbleseg.models.base import upsample
from scribbleseg.urss.analysis import eigenvector_maps, entropy_map
from scribbleseg.urss.model import URSSNet


def walk_on_strokes(p: torch.Tensor, scribble: torch.Tensor, size: tuple[int, int], k: int):
    """(P Y_S renormalised (K, h, w), mass sum_{j in S} P_ij (h, w)) for P (M, M) on an (h, w) grid and the
    strokes (1, H, W); a cell whose walk never reaches a stroke gets zeros."""
    y = onehot_on_grid(scribble, size, k)[0][0].flatten(1).T.to(p.dtype)       # Y_S (M, K), 0 off S
    py = p @ y                                                                  # (M, K): sum_{j in S} P_ij y_j
    mass = py.sum(1)                                                            # (M,)
    shares = py / mass.clamp_min(torch.finfo(p.dtype).tiny)[:, None]
    return shares.T.reshape(k, *size), mass.reshape(size)


def _prediction_entropy(logits: torch.Tensor, size, name: str) -> dict[str, torch.Tensor]:
    return {f"{name} prediction".strip(): upsample(logits, size).argmax(1)[0],
            f"{name} entropy / log K (Eq. 2)".strip(): entropy_map(logits, size)[0]}


@torch.no_grad()
def prediction_entropy(inputs: dict, model, name: str = "") -> dict[str, torch.Tensor]:
    """{title: panel}: the prediction (H, W) long and the entropy of softmax(logits) over log K (Eq. 2) of any
    segmentation network (``name`` prefixes the titles): where uncertainty reduction would act."""
    image = inputs["image"]
    model.eval()
    out = model(image)
    return _prediction_entropy(out["logits"] if isinstance(out, dict) else out, image.shape[-2:], name)


@torch.no_grad()
def views(inputs: dict, model: URSSNet, k: int = 3) -> dict[str, torch.Tensor]:
    """{title: panel}: prediction, entropy, P on the strokes (shares and mass) and the k leading eigenvectors, all
    from one forward pass.

    Args:
        inputs: image (1, 3, H, W) normalised, scribble (1, H, W), num_classes K. model: a URSSNet with a RandomWalk.
        k: eigenvectors shown.
    """
    image, scribble, classes = inputs["image"], inputs["scribble"], inputs["num_classes"]
    model.eval()
    out = model(image, matrices=True)                                           # P (1, M, M) of Eq. (6)
    if "transition" not in out:
        raise ValueError("the URSS view needs a network with the paper's random walk (URSS(random_walk='paper')), "
                         f"which outputs P; this one outputs {sorted(out)}")
    size = tuple(out["logits"].shape[-2:])
    shares, mass = walk_on_strokes(out["transition"][0], scribble, size, classes)
    panels = {**_prediction_entropy(out["logits"], image.shape[-2:], "URSS"), "P on the strokes (Eq. 6)": shares,
              "P's mass on the strokes": mass / mass.max().clamp_min(1e-12)}
    _, vecs = eigenvector_maps(out["transition"], size, k)                      # (k, h, w), real parts
    for i, v in enumerate(vecs):
        panels[f"eigenvector {i + 1} of P"] = torch.from_numpy((v - v.min()) / max(v.max() - v.min(), 1e-12))
    return panels
