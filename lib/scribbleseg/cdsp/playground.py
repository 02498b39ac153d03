"""Playground views of CDSP "Scribble Hides Class" (AAAI 2024) for :mod:`scribbleseg.lab.playground`: what the
strokes' classes make of the stage-1 CAMs, the scribble distance map, and a trained network's prediction.

- CAM pseudo-label (Sec. 3.1, Eq. 4-6): the image-level labels are the classes of the strokes (Eq. 4), so only
  their CAMs compete with the background score ``threshold``; an unseen class stays hidden.
- d_s (Eq. 16): 1 on the strokes, falling to 0 at 255 / e^(lambda_s / 2) pixels: where a stroke is near, the
  distance entropy loss trusts the network.
- the trained CDSP network's prediction.

Shapes: inputs as :meth:`scribbleseg.lab.playground.Sketch.inputs` gives them; panels (H, W).
"""
from __future__ import annotations

import torch

from scribbleseg.cdsp.classifier import CAMClassifier, image_labels
from scribbleseg.cdsp.distance_maps import scribble_distance
from scribbleseg.cdsp.pseudo_labels import cam_scores, scores_to_labels
from scribbleseg.models.base import upsample


@torch.no_grad()
def views(inputs: dict, model=None, classifier: CAMClassifier | None = None, threshold: float = 0.3,
          lambda_s: float = 1.0, distance: bool = True) -> dict[str, torch.Tensor]:
    """{title: panel}: the CAM pseudo-label of the strokes' classes (with ``classifier``), d_s (with ``distance``),
    and the prediction (H, W) long of ``model`` (each only when given).

    Args:
        inputs: image (1, 3, H, W) normalised, scribble (1, H, W), num_classes K.
        model: a trained CDSP network or None. classifier: the stage-1 CAM classifier or None.
        threshold: the background score of the pseudo-labels. lambda_s: the exponent of Eq. (16).
    """
    image, scribble, k = inputs["image"], inputs["scribble"], inputs["num_classes"]
    out = {}
    if classifier is not None:
        classifier.eval()
        present = image_labels(scribble, k)                                     # (1, K - 1) classes of the strokes (4)
        scores = cam_scores(classifier.cams(image), present, threshold, scribble.shape[-2:])  # (1, K, H, W) (6)
        out["CAM pseudo-label (strokes' classes)"] = scores_to_labels(scores)[0]
    if distance:
        out[f"d_s (Eq. 16, lambda_s {lambda_s:g})"] = torch.from_numpy(scribble_distance(scribble[0].numpy(), lambda_s))
    if model is not None:
        model.eval()
        out["CDSP prediction"] = upsample(model(image)["logits"], image.shape[-2:]).argmax(1)[0]
    return out
