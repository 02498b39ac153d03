"""CDSP (Zhang et al., "Scribble Hides Class", AAAI 2024) as a training method: stage 2, Eq. (5).

    L = L_seg + L_lorm + L_de = (L_segs + L_segc) + L_lorm + (L_ds + L_dc)                    (5), (7), (18)

``losses(model, batch)`` returns the enabled terms among {"segs", "segc", "ds", "dc", "lorm"} (the switches
of Table 2's rows, :data:`scribbleseg.cdsp.paper_numbers.TABLE2`); ``wrap(base, K)`` adds the LoRM
(:class:`~scribbleseg.cdsp.model.CDSPNet`) when ``lorm`` is on. Segmentation losses and the distance
entropy use the logits upsampled to the label size; LoRM works on the feature grid.

The pseudo-labels of stage 1 come in as ``pseudo``, a :class:`~scribbleseg.cdsp.store.PseudoLabels`
of the training split (from :func:`scribbleseg.cdsp.pseudo_labels.pseudo_labels` or any other source,
e.g. Table 3's SEAM / AFA / BMP labels). Its ``key`` (a hash of the labels) is its only dataclass
field, so it enters the experiment key; it is looked up by ``batch["index"]`` and flipped like the
batch's images (see :mod:`scribbleseg.cdsp.store`). The distance maps d_s, d_c are recomputed from the
batch's scribbles and pseudo-labels each step (a few ms per image with the EDT, on the CPU), unless
:meth:`CDSP.prepare_item` delivered them.

Per-item fields (:meth:`CDSP.prepare_item`): for a Dataset read through a DataLoader, the loop calls it on
each transformed item (the crop, after scale / crop / flip) in the worker processes; it delivers
"distance_s" (H, W) float32, d_s of Eq. (16) from the item's scribble (when ``ds``), and "distance_c",
d_c of Eq. (14) from the item's "pseudo" (when ``dc`` and the item carries "pseudo"; pseudo-labels looked up
in the store by index keep d_c in ``losses``), with the method's lambda_s, lambda_c, scribble_seeds and
frame_is_boundary. The default collate stacks them and ``losses`` uses them as they are: the
``.cpu().numpy()`` + SciPy EDT leaves the main process's hot path.

Args (dataclass fields; defaults = the paper):
    pseudo: the pseudo-labels (needed by segc, dc and lorm).
    segs, segc, ds, dc, lorm: which terms are on (Table 2).
    epsilon: label smoothing of L_segc (0.1). lambda_s, lambda_c: exponents of Eq. (16) / (14)
        (Table 2: 1 and 6; see :mod:`scribbleseg.cdsp.distance_maps` on the ambiguity).
    lorm_features: "backbone" (paper) or "decoder".
Released-code options: lorm_mask="query", lorm_downsample="bilinear", lorm_reduction="nonzero"
(:mod:`scribbleseg.cdsp.lorm`); scribble_seeds="foreground", frame_is_boundary=True
(:mod:`scribbleseg.cdsp.distance_maps`); del_count="terms" (:mod:`scribbleseg.cdsp.distance_entropy`);
align_corners=True (the released loop upsamples the logits with align_corners=True before L_segs, L_segc and
the distance entropy; ours, as everywhere in the library, uses False). :meth:`CDSP.released` sets them all.
Not copied (a released bug): the released crops pad the stored distance maps with 255, so padded pixels get
weight 1 in L_ds and L_dc; ours computes the maps on the batch's labels, where padding is IGNORE_INDEX
(no scribble seed, no pseudo-label foreground), so a padded pixel gets the weight of its distances, like
any other pixel, not 1.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from scribbleseg.cdsp.distance_entropy import distance_entropy, entropy_map
from scribbleseg.cdsp.distance_maps import distance_maps
from scribbleseg.cdsp.model import CDSPNet
from scribbleseg.cdsp.store import PseudoLabels
from scribbleseg.cdsp.supervision import smoothed_cross_entropy
from scribbleseg.losses import partial_cross_entropy
from scribbleseg.method import check_choices
from scribbleseg.models.base import upsample
from scribbleseg.distributed import unwrap


@dataclasses.dataclass(frozen=True)
class CDSP:
    pseudo: PseudoLabels | None = None
    segs: bool = True
    segc: bool = True
    ds: bool = True
    dc: bool = True
    lorm: bool = True
    epsilon: float = 0.1
    lambda_s: float = 1.0
    lambda_c: float = 6.0
    lorm_features: str = "backbone"
    lorm_mask: str = "key"
    lorm_downsample: str = "area"
    lorm_reduction: str = "mean"
    scribble_seeds: str = "all"
    frame_is_boundary: bool = False
    del_count: str = "weights"
    align_corners: bool = False

    NAME: ClassVar[str] = "scribbleseg.methods.cdsp.CDSP"  # the cache key's name (stable across moves)
    KEY_OPTIONAL: ClassVar[dict] = {"align_corners": False}  # added later: enters the cache key only when set

    CHOICES: ClassVar[dict] = {"lorm_features": ("backbone", "decoder"), "lorm_mask": ("key", "query"),
                               "lorm_downsample": ("area", "bilinear"), "lorm_reduction": ("mean", "nonzero"),
                               "scribble_seeds": ("all", "foreground"), "del_count": ("weights", "terms")}

    def __post_init__(self):
        check_choices(self, self.CHOICES)
        if not any((self.segs, self.segc, self.ds, self.dc, self.lorm)):
            raise ValueError("CDSP needs at least one of segs, segc, ds, dc, lorm")
        if self.pseudo is None and (self.segc or self.dc or self.lorm):
            raise ValueError("CDSP with segc, dc or lorm needs pseudo=PseudoLabels.from_array(...)")

    @classmethod
    def released(cls, **overrides) -> CDSP:
        """Every documented difference of the authors' released code (see the module docstring)."""
        return cls(**{"lorm_mask": "query", "lorm_downsample": "bilinear", "lorm_reduction": "nonzero",
                      "scribble_seeds": "foreground", "frame_is_boundary": True, "del_count": "terms",
                      "align_corners": True, **overrides})

    def wrap(self, base, num_classes: int):
        if not self.lorm:
            return base
        return CDSPNet(base, self.lorm_features, self.lorm_mask, self.lorm_reduction, self.lorm_downsample)

    def prepare_item(self, item: dict) -> dict[str, torch.Tensor]:
        """{"distance_s", "distance_c"} (H, W) float32 of one transformed item (see the module docstring);
        each only when its term is on and its labels are in the item (and not already delivered)."""
        scribble = item["scribble"][None] if self.ds and "distance_s" not in item else None   # (1, H, W)
        pseudo = item["pseudo"][None].long() if self.dc and "pseudo" in item and "distance_c" not in item else None
        if scribble is None and pseudo is None:
            return {}
        d_s, d_c = distance_maps(scribble, pseudo, self.lambda_s, self.lambda_c, self.scribble_seeds,
                                 self.frame_is_boundary, memo=False)             # (16), (14); crops: no memo
        return {k: d[0] for k, d in (("distance_s", d_s), ("distance_c", d_c)) if d is not None}

    def _distances(self, batch: dict, scribble: torch.Tensor, pseudo: torch.Tensor | None):
        """(d_s, d_c) (N, H, W): batch["distance_s"] / ["distance_c"] where prepare_item delivered them, the
        others computed on the batch's labels (None where the term is off)."""
        d_s, d_c = batch.get("distance_s") if self.ds else None, batch.get("distance_c") if self.dc else None
        todo_s, todo_c = self.ds and d_s is None, self.dc and d_c is None
        if todo_s or todo_c:
            s, c = distance_maps(scribble if todo_s else None, pseudo if todo_c else None, self.lambda_s,
                                 self.lambda_c, self.scribble_seeds, self.frame_is_boundary)  # (16), (14)
            d_s, d_c = s if todo_s else d_s, c if todo_c else d_c
        return d_s, d_c

    def losses(self, model: torch.nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        scribble = batch["scribble"]                                               # (N, H, W)
        pseudo = self.pseudo.batch_labels(batch) if (self.segc or self.dc or self.lorm) else None
        if self.lorm and not isinstance(unwrap(model), CDSPNet):
            raise TypeError("CDSP(lorm=True) needs the network wrapped by CDSP.wrap (a CDSPNet)")
        out = model(batch["image"], pseudo) if self.lorm else model(batch["image"])  # LoRM inside forward (DDP)
        logits = upsample(out["logits"], scribble.shape[-2:], self.align_corners)  # (N, K, H, W)
        terms = {}
        if self.segs:
            terms["segs"] = partial_cross_entropy(logits, scribble)                 # (8)
        if self.segc:
            terms["segc"] = smoothed_cross_entropy(logits, pseudo, self.epsilon)    # (9)
        if self.ds or self.dc:
            d_s, d_c = self._distances(batch, scribble, pseudo)                     # (16), (14)
            h = entropy_map(logits)                                                  # (N, H, W)
            if self.ds:
                terms["ds"] = distance_entropy(logits, d_s, self.del_count, h)      # (17)
            if self.dc:
                terms["dc"] = distance_entropy(logits, d_c, self.del_count, h)      # (15)
        if self.lorm:
            terms["lorm"] = out["lorm"]                                              # (11)-(13), CDSPNet.forward
        return terms                                # (5) L = L_seg + L_lorm + L_de, summed by the loop
