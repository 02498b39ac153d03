"""URSS (Pan et al., ICCV 2021) as a training method: loss (11) =
    pCE on scribbles + omega_1 E_{Omega-B} (Eq. 3) + omega_2 ss_P(x, phi) (Eq. 9),
with the random walk (Eq. 5-6) embedded before the classifier (``wrap``).

Two-stage training (Sec. 4): stage 1 trains pCE + soft entropy (``self_supervision=None``); stage 2
starts from it (``run_experiment(..., init=stage1_run)``, same ``random_walk`` so the weights fit) with
``self_supervision`` set. Stage 2's second forward pass on t_phi(x) runs in the same (train) mode, so
BatchNorm sees both x and t_phi(x).

Args (dataclass fields; the paper's values of omega_1, omega_2, gamma and the SLIC setting are in its
supplementary material, which we do not have: ours are placeholders to tune):
    random_walk: "paper" (Eq. 5-6), "attention" (released code's position attention) or "none".
    alpha: initial alpha of the paper's walk. key_dim: query / key channels of the attention block.
    entropy: "soft" (Eq. 3), "plain" (Eq. 2) or "none" (Table 1's rows). entropy_weight: omega_1.
    entropy_resolution: "grid" (the logits grid, paper) or "full" (upsampled logits, released code).
    entropy_keep_scribbles: scribbled pixels keep weight 1 on boundaries (ours, off by default: the released
        entropy's mask is the pseudo-boundary only, and neither released training script passes scribbles).
    n_segments, compactness, boundary_threshold: pseudo-boundaries (SLIC, about 10 ms per 128 x 128 image
        on one core) and their pooling to the grid.
    boundaries: where the pseudo-boundaries come from (a batch may bring its own "boundary" (N, H, W)
        bool, used as is):
        "cached" (default): computed once per training image and cached (:func:`~scribbleseg.urss.boundaries.
        batch_boundaries_cached`: memoised on the image's content, so the first epoch computes them and
        later epochs and runs reuse them), transformed like the image: a sample that
        :func:`scribbleseg.train.to_batch` mirrored (batch["flip"]) gets the mirrored boundaries of
        its stored image. Fallback: a batch without a "flip" entry (a Dataset read through a
        DataLoader, e.g. VOC with RandomScaleCropFlip, whose crops / scales / flips have no stored
        counterpart) gets them computed per batch on batch["rgb"] as it is, like "batch", unless
        :meth:`URSS.prepare_item` delivered them (below).
        "batch": always recomputed per batch on batch["rgb"] as it is (B of the flipped image for a
        flipped sample; about 0.16-0.2 s per batch of 16 on one core).
    self_supervision: None (stage 1), "eigenspace" (Eq. 9), "features_in" (Eq. 7 on f^{L-1}) or
        "features_out" (Eq. 7 on f^L) (Table 2's locations).
    transform: "flip", "translate" or "random" (drawn from batch["step"]). max_shift: cells (default h // 4).
    translation: "shift" (ours: zero-filled shifts in four directions) or "crop" (released: a vertical crop of
        the top or bottom rows, see :mod:`scribbleseg.urss.transforms`).
    align_corners: upsample the logits with align_corners=True before the CE and entropy terms (released
        training loops); False (ours) everywhere else in the library.
    ss_weight: omega_2. gamma: weight of the trace term of Eq. (9).
    ss_loss: "paper" (Eq. 9 on the transition matrices) or "released" (the released code's loss on the
        pre-softmax energies, x as student and t_phi(x) as teacher; see :mod:`scribbleseg.urss.self_supervision`).
    detach_teacher: the t_phi(x) pass runs under no_grad (released code); the paper lets gradients
        flow through both.

:meth:`URSS.released` sets every released-code option. ``losses`` returns {"ce"} + {"entropy"} + {"ss"}.

Cost (issue 15): the training step never builds an (N, M, M) matrix: the walk is fused attention
(:func:`~scribbleseg.urss.random_walk.fused_walk`), the t_phi(x) pass stops at what the loss reads (f^{L-1}
and the energies' factors for Eq. 9; it runs on the inner network, past a DDP wrapper, since it leaves the
walk and the classifier unused) and Eq. (9) / the released loss take the factors
(:func:`~scribbleseg.urss.self_supervision.factored_eigenspace_loss`). Measured (benchmarks' cpu profile:
SmallSegNet width 16, batch 16 of 128 x 128, a 32 x 32 grid; shared 2-core CPU, 2 threads, torch 2.14.1, median
of 3, old and new in one process, two runs): pCE 0.103 / 0.114 s; stage 1 2.04x / 1.74x pCE (before: 3.56x /
3.60x), released 2.65x / 2.48x (3.99x / 3.62x); stage 2, random phi, 3.58x / 3.46x (before: 12.2x / 11.0x),
released 3.64x / 3.79x (11.4x / 9.9x). Roughly (separate runs, noisy): stage 2 =
pCE + the walk (about 0.9x pCE, mostly the fused attention's backward) + the t_phi(x) pass's features and
their backward (about 1x) + Eq. (9) (about 1.4x for a flip, |V| = 1024: six 1024 x 1024 x 48 products per image).

Per-item fields (:meth:`URSS.prepare_item`): for a Dataset read through a DataLoader, the loop calls it on
each transformed item (the crop, after scale / crop / flip) in the worker processes; with the soft entropy
on it delivers "boundary" (H, W) bool, B of the item's rgb exactly as :meth:`URSS.pseudo_boundaries` would
compute it per batch, which the default collate stacks and ``losses`` uses as is: SLIC leaves the main
process's hot path (about 2.5 s a step at crop 465, batch 16).
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import ClassVar

import torch

from scribbleseg.data.grid import labels_to_grid
from scribbleseg.losses import partial_cross_entropy
from scribbleseg.method import check_choices
from scribbleseg.models.base import upsample
from scribbleseg.urss.boundaries import batch_boundaries, batch_boundaries_cached
from scribbleseg.urss.entropy import boundary_to_grid, entropy, soft_entropy
from scribbleseg.urss.model import URSSNet
from scribbleseg.urss.random_walk import PositionAttention, RandomWalk, rows
from scribbleseg.urss.self_supervision import factored_eigenspace_loss, feature_consistency, paired_factors
from scribbleseg.urss.transforms import TRANSLATIONS, random_transform
from scribbleseg.distributed import unwrap


def _factors(out: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, k) (N, M, d) of a pass's energies E = q k^T: the walk's (k is q without a "key"), else f^{L-1}'s own
    (E = f^T f, Eq. 6). k is q as one tensor object: the loss's hand-written gradient sums dq and dk itself then,
    in one process and under DDP alike (two objects there would round differently: tests/test_distributed.py)."""
    if "query" in out:
        return out["query"], out.get("key", out["query"])
    f = rows(out["features_in"])                                            # (N, M, D)
    return f, f


def grid_stride(model, size: tuple[int, int], grid: tuple[int, int]) -> int:
    """Image pixels per grid cell, for moving an image by whole cells: the model's ``output_stride`` (DeepLab's
    465 px crop at stride 8 gives a 59 x 59 grid, not a divisor), else size / grid when it divides evenly."""
    stride = getattr(unwrap(model), "output_stride", None)  # through a DDP wrapper
    if stride:
        return int(stride)
    if size[0] % grid[0] or size[1] % grid[1] or size[0] // grid[0] != size[1] // grid[1]:
        raise ValueError(f"URSS self-supervision needs a model with an output_stride or an image size {tuple(size)} "
                         f"that is a multiple of the logits grid {tuple(grid)}")
    return size[0] // grid[0]


@dataclasses.dataclass(frozen=True)
class URSS:
    random_walk: str = "paper"
    alpha: float = 0.0
    key_dim: int = 64
    entropy: str = "soft"
    entropy_weight: float = 1.0
    entropy_resolution: str = "grid"
    entropy_keep_scribbles: bool = False
    n_segments: int = 64
    compactness: float = 10.0
    boundary_threshold: float = 0.5
    boundaries: str = "cached"
    self_supervision: str | None = None
    transform: str = "random"
    max_shift: int | None = None
    ss_weight: float = 1.0
    gamma: float = 0.01
    ss_loss: str = "paper"
    detach_teacher: bool = False
    translation: str = "shift"
    align_corners: bool = False

    NAME: ClassVar[str] = "scribbleseg.methods.urss.URSS"  # the cache key's name (stable across moves)
    KEY_OPTIONAL: ClassVar[dict] = {"translation": "shift", "align_corners": False}  # added later: keys only when set

    CHOICES: ClassVar[dict] = {
        "random_walk": ("paper", "attention", "none"), "entropy": ("soft", "plain", "none"),
        "entropy_resolution": ("grid", "full"), "transform": ("flip", "translate", "random"),
        "self_supervision": (None, "eigenspace", "features_in", "features_out"), "ss_loss": ("paper", "released"),
        "boundaries": ("cached", "batch"), "translation": TRANSLATIONS}

    def __post_init__(self):
        check_choices(self, self.CHOICES)

    @classmethod
    def released(cls, **overrides) -> URSS:
        """Every documented difference of the authors' released code (position attention, entropy on the
        full-resolution logits with the pseudo-boundary mask only, the released eigenspace loss with a no_grad
        teacher, the vertical-crop translation, align_corners=True upsampling)."""
        return cls(**{"random_walk": "attention", "entropy_resolution": "full", "ss_loss": "released",
                      "detach_teacher": True, "translation": "crop", "align_corners": True, **overrides})

    def wrap(self, base, num_classes: int) -> URSSNet:
        if self.random_walk == "none":
            return URSSNet(base, None)
        if self.random_walk == "paper":
            return URSSNet(base, RandomWalk(self.alpha))
        dim = getattr(base, "feature_dim", None) or base.classifier.in_channels
        return URSSNet(base, PositionAttention(dim, self.key_dim))

    def pseudo_boundaries(self, batch: dict) -> torch.Tensor:
        """B (N, H, W) bool of a batch's images (see ``boundaries``): cached and mirrored per batch["flip"],
        or computed on batch["rgb"] (``boundaries="batch"``, or a batch without "flip")."""
        if self.boundaries == "cached" and batch.get("flip") is not None:
            return batch_boundaries_cached(batch["rgb"], batch["flip"], self.n_segments, self.compactness)
        return batch_boundaries(batch["rgb"], self.n_segments, self.compactness)

    def prepare_item(self, item: dict) -> dict[str, torch.Tensor]:
        """{"boundary": (H, W) bool} of one transformed item (rgb (3, H, W) on 0-255), as
        :meth:`pseudo_boundaries` gives it for a batch of that item; {} when the entropy is not "soft"
        (no B needed) or the item brings its own "boundary"."""
        if self.entropy != "soft" or "boundary" in item:
            return {}
        one = {"rgb": item["rgb"][None]}                                        # a batch of one, (1, 3, H, W)
        if item.get("flip") is not None:
            one["flip"] = torch.as_tensor(item["flip"], dtype=torch.bool).reshape(1)
        return {"boundary": self.pseudo_boundaries(one)[0]}                     # B of Eq. (3), (H, W)

    def _entropy(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        scribble = batch["scribble"]
        if self.entropy_resolution == "full":
            logits = upsample(logits, scribble.shape[-2:], self.align_corners)  # (N, K, H, W)
        size = tuple(logits.shape[-2:])
        if self.entropy == "plain":
            return entropy(logits)                                              # (2)
        boundary = batch.get("boundary")
        if boundary is None:
            boundary = self.pseudo_boundaries(batch)                            # (N, H, W)
        boundary = boundary_to_grid(boundary, size, self.boundary_threshold)   # (N, h, w)
        keep = labels_to_grid(scribble, size, logits.shape[1]) if self.entropy_keep_scribbles else None
        return soft_entropy(logits, boundary, keep)                             # (3)

    def _self_supervision(self, model, batch: dict, out: dict) -> torch.Tensor:
        x = batch["image"]
        h, w = out["logits"].shape[-2:]
        phi = random_transform(int(batch.get("step", 0)), h, w, self.transform, self.max_shift, self.translation)
        until = "features" if self.self_supervision == "features_out" else "factors"  # what the loss reads of t(x)
        net = unwrap(model)
        # One process: the pass stops at what the loss reads. Under DDP the full pass goes through the wrapper, as
        # the first one does: a pass on the inner network would add its gradients after DDP's all-reduce had fired
        # for the parameters (ranks drift apart; tests/test_distributed.py), and a partial pass through the wrapper
        # would mark the skipped parameters unused although the first pass used them.
        partial = isinstance(net, URSSNet) and net is model
        with torch.no_grad() if self.detach_teacher else contextlib.nullcontext():
            x_t = phi.image(x, grid_stride(model, x.shape[-2:], (h, w)))
            out_t = net(x_t, until=until) if partial else model(x_t)                 # f(t_phi(x))
        if tuple(out_t["features_in"].shape[-2:]) != phi.target_shape(h, w):
            raise ValueError(f"URSS translation={self.translation!r}: t_phi(x) gives a grid "
                             f"{tuple(out_t['features_in'].shape[-2:])}, expected {phi.target_shape(h, w)}; use an "
                             f"image size that is a multiple of the model's output stride")
        if self.self_supervision != "eigenspace":
            key = "features_in" if self.self_supervision == "features_in" else "features"
            return feature_consistency(out[key], out_t[key], phi)               # (7)
        a, b = paired_factors(phi, _factors(out), _factors(out_t), h, w)       # (10) factors of T(E(x)), E(t(x))
        return factored_eigenspace_loss(a, b, self.gamma, self.ss_loss)          # (9) / released, on V x V

    def losses(self, model: torch.nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        out = model(batch["image"])
        scribble = batch["scribble"]
        terms = {"ce": partial_cross_entropy(upsample(out["logits"], scribble.shape[-2:], self.align_corners), scribble)}
        if self.entropy != "none":
            terms["entropy"] = self.entropy_weight * self._entropy(out["logits"], batch)
        if self.self_supervision is not None:
            terms["ss"] = self.ss_weight * self._self_supervision(model, batch, out)
        return terms                                # (11) L = pCE + omega_1 E_{Omega-B} + omega_2 ss_P, summed by the loop
