"""Evaluation: confusion-matrix mIoU (ignoring 255), per-class IoU, where the errors fall (the outer
8-px border band against the interior), with optional multi-scale + flip inference and dense-CRF
post-processing (the papers' "w/ CRF" columns)."""
from __future__ import annotations

import numpy as np
import torch

from scribbleseg import distributed
from scribbleseg.data.folder import SplitData
from scribbleseg.metrics import ConfusionMeter, border_band_errors
from scribbleseg.crf import dense_crf
from scribbleseg.inference import predict
from scribbleseg.train import to_batch
from scribbleseg.data.voc import IMAGENET_MEAN, IMAGENET_STD


def _labels(probs: torch.Tensor, images_uint8: np.ndarray | None) -> np.ndarray:
    """(N, K, H, W) probabilities -> (N, H, W) uint8 labels; refined by dense CRF when images are given."""
    if images_uint8 is None:
        return probs.argmax(1).to(torch.uint8).cpu().numpy()

    p = probs.float().cpu().numpy()
    return np.stack([dense_crf(img, pi).argmax(0) for img, pi in zip(images_uint8, p)]).astype(np.uint8)


@torch.no_grad()
def predict_split(model: torch.nn.Module, data: SplitData, device=None, batch_size: int = 50,
                  scales=(1.0,), flip: bool = False, crf: bool = False) -> np.ndarray:
    """Argmax predictions (N, H, W) uint8 for every image of ``data`` (after dense CRF if ``crf``). Under torchrun
    each rank predicts every world_size-th batch (the batches of one process, so the numbers are the same) and the
    predictions are gathered on every rank."""

    device = torch.device(device or next(model.parameters()).device)
    starts = range(0, len(data.ids), batch_size)
    mine = list(starts)[distributed.rank()::distributed.world_size()]  # whole batches: the same as in one process
    preds = {}
    for s in mine:
        idx = np.arange(s, min(s + batch_size, len(data.ids)))
        probs = predict(model, to_batch(data, idx, None, device)["image"], scales=scales, flip=flip)
        preds[s] = _labels(probs, data.images[idx] if crf else None)
    for part in distributed.all_gather_objects(preds) if distributed.world_size() > 1 else []:
        preds.update(part)  # every rank gets every prediction
    return np.concatenate([preds[s] for s in starts])


def evaluate(model: torch.nn.Module, data, device=None, band: int = 8, crf: bool = False, **predict_kw) -> dict:
    """Evaluate on an in-memory split or on a Dataset of item dicts (images of any size, one at a time;
    "image" (3, H, W) normalised float, "mask" (H, W)).

    Returns dict(miou, per_class_iou (list, NaN -> None), pixel_accuracy, num_classes) and, for
    in-memory splits, border_error_rate, interior_error_rate, border_share_of_errors.
    IoUs in percent, error rates as fractions. Under torchrun the images are shared out over the ranks and the
    confusion matrix is all-reduced (every rank returns the same numbers). ``crf``: dense-CRF post-processing (pydensecrf2);
    ``predict_kw``: ``scales`` and ``flip`` of :func:`scribbleseg.inference.predict`.
    """

    meter = ConfusionMeter(len(data.class_names))
    extra = {}
    if isinstance(data, SplitData):
        pred = predict_split(model, data, device, crf=crf, **predict_kw)
        meter.update(pred, data.masks)
        extra = {k: float(v) for k, v in border_band_errors(pred, data.masks, band=band).items()}
    else:
        device = torch.device(device or next(model.parameters()).device)
        for i in range(distributed.rank(), len(data), distributed.world_size()):  # this rank's share
            item = data[i]
            probs = predict(model, item["image"][None].to(device), **predict_kw)  # (1, K, H, W)
            meter.update(_labels(probs, _denormalise(item["image"])[None] if crf else None)[0], item["mask"])
        meter.matrix = distributed.all_reduce_sum(torch.from_numpy(meter.matrix)).numpy()  # all ranks' images
    out = {"miou": float(meter.miou()), "pixel_accuracy": float(meter.pixel_accuracy()),
           "per_class_iou": [None if np.isnan(v) else float(v) for v in meter.per_class_iou()],
           "num_classes": len(data.class_names)}
    return {**out, **extra}


def _denormalise(image: torch.Tensor) -> np.ndarray:
    """ImageNet-normalised (3, H, W) float -> (H, W, 3) uint8, the colours the CRF's bilateral term needs."""

    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((image.cpu() * std + mean).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
