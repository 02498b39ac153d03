"""Playground views of BLPSeg (Wang et al., IEEE TIP 2023) for :mod:`scribbleseg.lab.playground`: a trained
network's prediction and annotation-probability map, and its LAM aggregating the strokes themselves.

- prediction: argmax of the LAM output (Eq. 8), upsampled.
- annotation probability (Eq. 1): max_c p_scrib(c), the (K+1)-way softmax's first K entries (as
  :func:`~scribbleseg.blpseg.analysis.head_maps` draws them): high where the network expects a scribble.
- LAM on the strokes (Eq. 3-5): X_in = the one-hot stroke labels on the logits grid, sources i = the stroked
  cells only (Table V's "labelled" region), f = the trained network's low-level features (and decoder features
  with "high"), sigma the LAM's: X_out[:, j] = sum_i A_ij X_in[:, i], a distribution over classes at every cell
  (0 where the image has no stroke). It shows how far, and along which edges, A carries a label.

Shapes: inputs as :meth:`scribbleseg.lab.playground.Sketch.inputs` gives them; panels (H, W) or (K, h, w).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from scribbleseg.blpseg.losses import annotation_probability
from scribbleseg.blpseg.model import BLPSegNet
from scribbleseg.data.grid import onehot_on_grid
from scribbleseg.models.base import upsample


@torch.no_grad()
def views(inputs: dict, model: BLPSegNet) -> dict[str, torch.Tensor]:
    """{title: panel}: prediction (H, W) long, max_c p_scrib (H, W), and with a LAM its aggregation of the
    strokes (K, h, w).

    Args:
        inputs: image (1, 3, H, W) normalised, scribble (1, H, W), num_classes K. model: a trained BLPSegNet.
    """
    image, scribble, k = inputs["image"], inputs["scribble"], inputs["num_classes"]
    model.eval()
    out = model(image)
    size = image.shape[-2:]
    p_scrib = annotation_probability(upsample(out["scrib_logits"], size), renormalize=False)  # (1, K, H, W) (1)
    panels = {"BLPSeg prediction": upsample(out["logits"], size).argmax(1)[0],
              "annotation probability max_c p_scrib": p_scrib.amax(1)[0]}
    if model.lam is not None:
        grid = tuple(out["logits"].shape[-2:])
        x_in, stroked = onehot_on_grid(scribble, grid, k)                      # X_in (1, K, h, w)
        low = model.low(image)
        if tuple(low.shape[-2:]) != grid:
            low = F.adaptive_avg_pool2d(low, grid)                             # (1, D, h, w) as in the forward pass
        x_out = model.lam(x_in, low, out["features"], stroked)                 # (3) X_out = X_in A, sources = strokes
        panels["LAM on the strokes (Eq. 3-5)"] = x_out[0]                      # (K, h, w)
    return panels
