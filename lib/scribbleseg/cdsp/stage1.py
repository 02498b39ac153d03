"""Stage 1 of CDSP (Zhang et al., AAAI 2024, Sec. "Class-driven scribble promotion", Eq. 4 and 6) through the
results cache: the classifier trained on the scribbles' image-level classes, and the pseudo-labels made
from its CAMs, each stored once under a key and reused by every notebook and stage-2 run.

A :class:`PseudoLabelRecipe` names one pseudo-label source: the classifier's training
(:class:`~scribbleseg.cdsp.classifier.ClassifierConfig`), the CAM threshold, and whether a dense CRF refines
the labels (Table 3's variants are recipes). The training split's scribble variant is part of the key: a
scribble-drop set (Fig. 7) loses image-level classes with its strokes, so its classifier differs.

Folders under :func:`scribbleseg.experiment.cache_root`: ``cls-<key>/`` (classifier.pt, history.json) and
``pl-<key>/`` (labels.npy (N, H, W) uint8 of the unflipped training split, result.json with the labels'
mIoU against the masks, Table 3's "base acc"). Each file is written atomically, the marker (history.json,
result.json) last; a truncated or unreadable store is reported once and made again, never used.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from scribbleseg.cdsp.classifier import ClassifierConfig, build_classifier, train_classifier
from scribbleseg.cdsp.pseudo_labels import pseudo_label_miou, pseudo_labels
from scribbleseg import distributed
from scribbleseg.cdsp.store import PseudoLabels
from scribbleseg.files import (UnreadableFile, atomic_np_save, atomic_torch_save, atomic_write_json, read_json,
                               stable_hash, torch_load)
from scribbleseg.data.folder import ScribbleVariant
from scribbleseg.experiment import cache_root, load_data, variant_spec
from scribbleseg.experiment import VOCData

STAGE1_VERSION = 1  # bump when a change to the classifier or the CAM thresholding invalidates stored labels


@dataclasses.dataclass(frozen=True)
class PseudoLabelRecipe:
    """classifier: its training; threshold: CAM threshold in (0, 1) (background where no present class's
    normalised CAM exceeds it); crf: refine with a dense CRF (needs pydensecrf2)."""

    classifier: ClassifierConfig = ClassifierConfig()
    threshold: float = 0.3
    crf: bool = False


def _classifier_key(dataset, variant: ScribbleVariant, cfg: ClassifierConfig) -> str:
    return "cls-" + stable_hash({"version": STAGE1_VERSION, "dataset": dataset.key(),
                                 "variant": variant_spec(variant),
                                 "classifier": dataclasses.asdict(cfg)}, 16)


def classifier(dataset, cfg: ClassifierConfig = ClassifierConfig(), variant: ScribbleVariant = ScribbleVariant(3),
               root: Path | None = None, log=print):
    """(classifier in eval mode, history) trained on ``dataset``'s training split, or loaded from the cache."""
    folder = Path(root or cache_root()) / _classifier_key(dataset, variant, cfg)
    data = load_data(dataset, "train", variant)
    if (folder / "history.json").exists():
        try:
            history = read_json(folder / "history.json")
            model = build_classifier(cfg, data.num_classes)
            model.load_state_dict(torch_load(folder / "classifier.pt", map_location="cpu"))
            return model.eval(), history
        except (UnreadableFile, FileNotFoundError) as e:
            log(f"classifier {folder.name}: {e}; training it again")
    model, history = train_classifier(data, cfg, device="cpu" if not torch.cuda.is_available() else None, log=log)
    if distributed.is_main():  # under torchrun every rank computes the same; rank 0 writes
        folder.mkdir(parents=True, exist_ok=True)
        atomic_torch_save(model.state_dict(), folder / "classifier.pt")
        atomic_write_json(folder / "history.json", history, indent=1)  # written last: marks the folder done
    return model, history


def pseudo_label_set(dataset, recipe: PseudoLabelRecipe = PseudoLabelRecipe(),
                     variant: ScribbleVariant = ScribbleVariant(3), root: Path | None = None,
                     log=print) -> tuple[PseudoLabels, float]:
    """(pseudo-labels of the training split, their mIoU (%) against its masks), made or loaded from the cache.

    VOC (:class:`~scribbleseg.experiment.VOCData`): stage 1 trains on in-memory splits only, so a VOC dataset
    must bring its pseudo-labels (``pseudo_dir``, read with each training item and cropped with it); the
    result is a PseudoLabels keyed by that folder and NaN for the mIoU (not computed over VOC here)."""

    if isinstance(dataset, VOCData):
        if not dataset.pseudo_dir:
            raise ValueError("CDSP stage 1 (classifier + CAMs) runs on the embedded set only; for VOC set "
                             "voc.pseudo_dir to a folder of pseudo-label PNGs (e.g. BMP / AFA / SEAM)")
        return PseudoLabels("dir-" + stable_hash(str(Path(dataset.pseudo_dir).resolve()), 16)), float("nan")
    key = "pl-" + stable_hash({"classifier": _classifier_key(dataset, variant, recipe.classifier),
                               "threshold": recipe.threshold, "crf": recipe.crf}, 16)
    folder = Path(root or cache_root()) / key
    data = load_data(dataset, "train", variant)
    if (folder / "result.json").exists():
        try:
            return _load_pseudo_labels(folder, data)
        except (UnreadableFile, FileNotFoundError) as e:
            log(f"pseudo-labels {key}: {e}; making them again")
    model, _ = classifier(dataset, recipe.classifier, variant, root, log)
    labels = pseudo_labels(model, data, recipe.threshold, recipe.crf)                # (N, H, W) uint8
    score = pseudo_label_miou(labels, data.masks, data.num_classes)
    if distributed.is_main():
        folder.mkdir(parents=True, exist_ok=True)
        atomic_np_save(folder / "labels.npy", labels)
        atomic_write_json(folder / "result.json", {"miou": score, "recipe": dataclasses.asdict(recipe)},
                          indent=1)  # written last: marks the folder done
    log(f"pseudo-labels {key}: mIoU {score:.2f} against the training masks")
    return PseudoLabels.from_array(labels, data.images), score


def _load_pseudo_labels(folder: Path, data) -> tuple[PseudoLabels, float]:
    """The stored pseudo-labels and their mIoU; :class:`UnreadableFile` if either file is truncated or wrong."""
    result = read_json(folder / "result.json")
    if not isinstance(result, dict) or not isinstance(result.get("miou"), (int, float)):
        raise UnreadableFile(f"{folder / 'result.json'} holds no mIoU")
    try:
        labels = np.load(folder / "labels.npy", allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError) as e:
        raise UnreadableFile(f"{folder / 'labels.npy'} is unreadable ({type(e).__name__}: {e})") from e
    expect = tuple(data.images.shape[:3])
    if labels.dtype != np.uint8 or labels.shape != expect:
        raise UnreadableFile(f"{folder / 'labels.npy'} is {labels.dtype} {labels.shape}, not uint8 {expect}")
    return PseudoLabels.from_array(labels, data.images), result["miou"]


def oracle_pseudo_labels(dataset, variant: ScribbleVariant = ScribbleVariant(3)) -> tuple[PseudoLabels, float]:
    """The training masks themselves as pseudo-labels (mIoU 100): an upper bound on what stage 1 can give, for
    reading Table 3's trend beyond the CAMs' range (embedded set only)."""
    data = load_data(dataset, "train", variant)
    return PseudoLabels.from_array(data.masks, data.images), 100.0
