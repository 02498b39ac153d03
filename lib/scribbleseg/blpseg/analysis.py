"""What a trained BLPSeg network predicts, for the figures of Wang et al. (IEEE TIP 2023): annotation
probability maps (Fig. 2, 5), the weighted relative-distance distributions of Eq. (13)-(14) and the
pixel precision against the distance to the boundary (Fig. 7), the BLP loss map under self-training
(Fig. 8) and one column of the LAM matrix A (Eq. 4) for the interactive cell.

Annotation probability for the maps and for Eq. (13)'s weights: the paper's p_scrib is the (K+1)-way
softmax (Eq. 1); "the probability of a pixel being labelled by class c" is its first K entries, so the
maps use ``annotation_probability(..., renormalize=False)`` by default (a softmax over the first K
alone is close to 1 wherever a class is recognised and shows no label preference; pass
``renormalize=True`` to see it).

Shapes: images (N, 3, H, W) normalised; maps (N, K, H, W) at full resolution; masks, labels (N, H, W).
"""
from __future__ import annotations

import numpy as np
import torch

from scribbleseg.blpseg.losses import annotation_probability, blp_loss_map, blp_weight
from scribbleseg.metrics import relative_boundary_distance, weighted_distance_histogram
from scribbleseg.models.base import upsample
from scribbleseg.blpseg.lam import dense_lam
from scribbleseg.data.embedded import EmbeddedConfig
from scribbleseg.data.folder import ScribbleVariant
from scribbleseg.experiment import load_embedded
from scribbleseg.train import to_batch
from scribbleseg.data.voc import RandomScaleCropFlip, VOCScribbleDataset


def trained_sample(run, method, dataset, n_images: int, split: str = "train") -> tuple:
    """(model, :func:`sample` of ``n_images`` of ``split``, :func:`head_maps` on it) for a trained BLPSeg run:
    what the annotation-map (Fig. 2/5) and loss-map (Fig. 8) notebooks draw from."""
    model = run.load_model(method)
    s = sample(dataset, split, n_images)
    return model, s, head_maps(model, s["x"])


@torch.no_grad()
def head_maps(model, images: torch.Tensor, renormalize: bool = False, batch_size: int = 50) -> dict[str, torch.Tensor]:
    """p_scrib (N, K, H, W), p_seg (N, K, H, W, softmax of the LAM output) and the logits, upsampled to H x W."""
    model.eval()
    out = {"p_scrib": [], "p_seg": [], "logits": []}
    for s in range(0, len(images), batch_size):
        x = images[s:s + batch_size]
        o = model(x)
        logits = upsample(o["logits"], x.shape[-2:])                                   # (n, K, H, W)
        out["logits"].append(logits)
        out["p_seg"].append(torch.softmax(logits, 1))
        out["p_scrib"].append(annotation_probability(upsample(o["scrib_logits"], x.shape[-2:]), renormalize))
    return {k: torch.cat(v) for k, v in out.items()}


def distance_distributions(masks: np.ndarray, scribbles: np.ndarray, p_scrib: np.ndarray, p_seg: np.ndarray,
                           bins: int = 10) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Fig. 7(a): Eq. (13) with lambda_n = 1 on scribble pixels ("scribble"), lambda_n = 1 on every pixel
    ("mask"), lambda_n = max_c p_scrib ("annotation probability") and max_c p_seg ("segmentation
    probability"), over all images.

    Args:
        masks, scribbles: (N, H, W) with 255 = unlabelled. p_scrib, p_seg: (N, K, H, W) probabilities.
    Returns:
        ({name: (bins,) probabilities}, edges (bins + 1,)).
    """
    d_all, d_scrib, w_scrib, w_seg = [], [], [], []
    for m, s, ps, pg in zip(masks, scribbles, p_scrib, p_seg):
        keep = m != 255                                                       # the pixels d_n is defined on
        d_all.append(relative_boundary_distance(m))                            # row-major, = order of [keep]
        d_scrib.append(relative_boundary_distance(m, s))
        w_scrib.append(ps.max(0)[keep])                                        # lambda_n = max_c p_scrib_{c,n}
        w_seg.append(pg.max(0)[keep])                                          # lambda_n = max_c p_seg_{c,n}
    d_all = np.concatenate(d_all)
    hists = {"scribble": weighted_distance_histogram(np.concatenate(d_scrib), bins=bins)[0],
             "mask": weighted_distance_histogram(d_all, bins=bins)[0],
             "annotation probability": weighted_distance_histogram(d_all, np.concatenate(w_scrib), bins)[0],
             "segmentation probability": weighted_distance_histogram(d_all, np.concatenate(w_seg), bins)[0]}
    return hists, np.linspace(0, 1, bins + 1)


def precision_by_distance(preds: np.ndarray, masks: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Fig. 7(b): the fraction of correctly predicted pixels in each relative-distance bin of the mask.

    Returns (precision (bins,), NaN for an empty bin; pixel counts (bins,))."""
    correct = np.zeros(bins)
    count = np.zeros(bins)
    for p, m in zip(preds, masks):
        keep = m != 255
        b = np.minimum((relative_boundary_distance(m) * bins).astype(int), bins - 1)  # bin of each pixel
        count += np.bincount(b, minlength=bins)
        correct += np.bincount(b, weights=(p[keep] == m[keep]).astype(float), minlength=bins)
    with np.errstate(invalid="ignore"):
        return correct / count, count


def loss_maps(logits: torch.Tensor, p_scrib_renorm: torch.Tensor, gamma: float = 2.0) -> dict[str, torch.Tensor]:
    """Fig. 8(d): the per-pixel BLP loss with the self-training target (the one-hot argmax of p_seg, Sec.
    IV-B) on every pixel, and its weight delta. logits (N, K, H, W); p_scrib_renorm: the p_scrib the loss
    uses (N, K, H, W). Returns {"pseudo": (N, H, W), "weight": (N, H, W), "loss": (N, H, W)}."""
    pseudo = logits.argmax(1)                                                 # sharpened to one-hot
    p_seg = torch.softmax(logits, 1)
    weight = blp_weight(p_scrib_renorm, p_seg, gamma).gather(1, pseudo[:, None])[:, 0]  # (11) at the target
    return {"pseudo": pseudo, "weight": weight, "loss": blp_loss_map(logits, p_scrib_renorm, pseudo, gamma)}


@torch.no_grad()
def lam_column(model, image: torch.Tensor, target: tuple[int, int], sigma: float | None = None) -> np.ndarray:
    """Column j of A (Eq. 4) for the target cell ``target`` = (row, col) on the LAM grid: how much each
    source cell feeds cell j, (h, w), summing to 1. ``sigma`` overrides the model's (the widget)."""
    model.eval()
    f_low = model.low(image[None])                                            # (1, D, h, w)
    h, w = f_low.shape[-2:]
    f_high = torch.nn.functional.adaptive_avg_pool2d(model.features(image[None]), (h, w))
    lam = model.lam
    s = torch.as_tensor(float(lam.sigma) if sigma is None else sigma)
    x = torch.zeros(1, 1, h, w)                                               # A does not depend on X_in
    _, a = dense_lam(x, s, f_low, f_high, lam.similarity, return_matrix=True)  # (1, M_i, M_j)
    return a[0, :, target[0] * w + target[1]].reshape(h, w).numpy()           # (h, w)


def difference_map(p_scrib: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fig. 2(d): the mask label (c) minus the annotation probability (b) at the mask's class, (H, W) in
    [0, 1]: high where the mask says "class c" but a scribble of c is unlikely. p_scrib (K, H, W)."""
    keep = mask != 255
    t = np.where(keep, mask, 0).astype(np.int64)
    return np.where(keep, 1.0 - np.take_along_axis(p_scrib, t[None], 0)[0], 0.0)


def sample(dataset, split: str = "train", n: int = 8, crop: int = 384) -> dict:
    """The first ``n`` images of a split for the figures: {"images" (n, H, W, 3) uint8, "scribbles",
    "masks" (n, H, W) with 255, "x" (n, 3, H, W) normalised}. Embedded data as stored; VOC images
    (sizes differ) are cut to ``crop`` x ``crop`` windows (padding = unlabelled) so that they stack."""

    if isinstance(dataset, EmbeddedConfig):
        d = load_embedded(dataset, split, ScribbleVariant(3))
        idx = np.arange(min(n, len(d)))
        return {"images": d.images[idx], "scribbles": d.scribbles[idx], "masks": d.masks[idx],
                "x": to_batch(d, idx, None, torch.device("cpu"))["image"]}

    split_name = dataset.train_split if split == "train" else dataset.val_split
    cut = RandomScaleCropFlip(crop, (1.0, 1.0), flip=False, generator=torch.Generator().manual_seed(0))
    voc = VOCScribbleDataset(dataset.root, split_name)
    items = [cut(voc[i]) for i in range(n)]
    return {"images": np.stack([it["rgb"].round().clamp(0, 255).byte().permute(1, 2, 0).numpy() for it in items]),
            "scribbles": np.stack([it["scribble"].numpy() for it in items]).astype(np.uint8),
            "masks": np.stack([it["mask"].numpy() for it in items]).astype(np.uint8),
            "x": torch.stack([it["image"] for it in items])}


def object_cell(mask: np.ndarray, stride: int = 4, background: int = 0) -> tuple[int, int]:
    """(row, col) on the stride-``stride`` grid of the most interior pixel of the largest object of ``mask``
    (H, W) (class ``background`` and 255 excluded; the image centre if there is none): a target cell for
    :func:`lam_column`."""
    from scipy import ndimage

    classes = [c for c in np.unique(mask) if c not in (background, 255)]
    if not classes:
        return mask.shape[0] // (2 * stride), mask.shape[1] // (2 * stride)
    c = max(classes, key=lambda k: int((mask == k).sum()))
    dist = ndimage.distance_transform_edt(mask == c)                             # (H, W)
    y, x = np.unravel_index(int(dist.argmax()), dist.shape)
    return int(y) // stride, int(x) // stride
