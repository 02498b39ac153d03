"""Measurements behind URSS's analysis tables and figures (Pan et al., ICCV 2021).

- :func:`variation` (Table 3) and :func:`variation_maps` (Fig. 7): how much f^{L-1}, f^L and P move
  under a transform phi, as the relative error |T_phi(f) - f'| / (|T_phi(f)| + |f'|) (Sec. 5.2), f' the
  representation of t_phi(x). Norms are Frobenius over the compared positions V (Eq. 10) and channels
  (per image for the table, per position for the maps; for P a position is a row of the V x V block).
- :func:`entropy_maps` (Fig. 3): the per-pixel entropy of the prediction, Eq. (2), over log K.
- :func:`leading_eigenvectors` (Fig. 4): eigenvectors of P with the largest eigenvalues (Eq. 8's U_P).
- :func:`cost` (Table 5): parameters, activation memory and inference speed.

Shapes: images (N, 3, H, W) normalised; representations (N, D, h, w); P (N, M, M), M = h w (the network
builds P only when asked: ``model(x, matrices=True)``, :class:`~scribbleseg.urss.model.URSSNet`).
"""
from __future__ import annotations

import time

import numpy as np
import torch

from scribbleseg.urss.method import grid_stride
from scribbleseg.models.base import upsample
from scribbleseg.urss.self_supervision import eigenspace, paired
from scribbleseg.urss.transforms import Transform

NAMES = {"f^(L-1)": "features_in", "f^L": "features", "P": "transition"}


@torch.no_grad()
def _pair(model, images: torch.Tensor, transform: Transform) -> tuple[dict, dict]:
    model.eval()
    out = model(images, matrices=True)                                               # with P (N, M, M)
    stride = grid_stride(model, images.shape[-2:], out["logits"].shape[-2:])          # image pixels per grid cell
    return out, model(transform.image(images, stride), matrices=True)


def _rows(out: dict, out_t: dict, name: str, transform: Transform) -> tuple[torch.Tensor, torch.Tensor]:
    """(T(r), r') of one representation as (N, |V|, D) rows over the compared positions V."""
    h, w = out["features"].shape[-2:]
    if name == "P":
        return paired(transform, out["transition"], out_t["transition"], h, w)     # (N, |V|, |V|)
    key = NAMES[name]
    dst = transform.index(h, w)[0]
    a = transform.grid(out[key]).flatten(2)[:, :, dst]                               # (N, D, |V|)
    b = out_t[key].flatten(2)[:, :, dst]                                             # (N, D, |V|)
    return a.transpose(1, 2), b.transpose(1, 2)                                      # (N, |V|, D)


def variation(model, images: torch.Tensor, transform: Transform, batch_size: int = 25) -> dict[str, float]:
    """Table 3: mean over images of |T(f) - f'|_F / (|T(f)|_F + |f'|_F) for f^{L-1}, f^L and P (a model
    with a random walk), in %."""
    vals = {n: [] for n in NAMES}
    for i in range(0, len(images), batch_size):
        out, out_t = _pair(model, images[i:i + batch_size], transform)
        for n in NAMES:
            a, b = _rows(out, out_t, n, transform)
            num = torch.linalg.vector_norm(a - b, dim=(1, 2))
            vals[n].append(num / (torch.linalg.vector_norm(a, dim=(1, 2)) + torch.linalg.vector_norm(b, dim=(1, 2))))
    return {n: 100 * float(torch.cat(v).mean()) for n, v in vals.items()}


def variation_maps(model, image: torch.Tensor, transform: Transform) -> dict[str, np.ndarray]:
    """Fig. 7: per-position relative error (h, w) of f^{L-1}, f^L and P (a row of P per position) for one
    image (3, H, W), on t(x)'s grid; NaN where a position has no source in x (translation)."""
    out, out_t = _pair(model, image[None], transform)
    h, w = out["features"].shape[-2:]
    dst = transform.index(h, w)[0]
    maps = {}
    for n in NAMES:
        a, b = _rows(out, out_t, n, transform)                                       # (1, |V|, D)
        e = torch.linalg.vector_norm(a - b, dim=-1) / (torch.linalg.vector_norm(a, dim=-1)
                                                       + torch.linalg.vector_norm(b, dim=-1)).clamp(min=1e-12)
        m = torch.full((h * w,), float("nan"))
        m[dst] = e[0]
        maps[n] = m.reshape(h, w).numpy()                                            # (h, w)
    return maps


def entropy_map(logits: torch.Tensor, size) -> torch.Tensor:
    """Eq. (2)'s per-pixel entropy of softmax(logits (N, K, h, w)) upsampled to ``size``, over log K: (N, H, W)."""
    logp = upsample(logits, size).log_softmax(1)                                     # (N, K, H, W)
    return -(logp.exp() * logp).sum(1) / np.log(logits.shape[1])                     # (2) / log K


@torch.no_grad()
def entropy_maps(model, images: torch.Tensor, batch_size: int = 50) -> np.ndarray:
    """Fig. 3: :func:`entropy_map` of the model's logits on each image: (N, H, W) in [0, 1]."""
    model.eval()
    maps = []
    for i in range(0, len(images), batch_size):
        out = model(images[i:i + batch_size])
        maps.append(entropy_map(out["logits"] if isinstance(out, dict) else out, images.shape[-2:]))
    return torch.cat(maps).numpy()


def eigenvector_maps(p: torch.Tensor, size, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k eigenvalues of one P (1, M, M) with the largest real part (k,) and the real parts of their unit
    eigenvectors as maps (k, h, w) on the (h, w) = ``size`` grid."""
    vals, vecs = eigenspace(p.double(), k)                                           # (1, k), (1, M, k)
    maps = vecs[0].real.T.reshape(k, *size)                                          # (k, h, w)
    return vals[0].real.numpy(), maps.numpy()


@torch.no_grad()
def leading_eigenvectors(model, image: torch.Tensor, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Fig. 4: :func:`eigenvector_maps` of the model's P for one image (3, H, W). The first is constant for a
    stochastic P."""
    model.eval()
    out = model(image[None], matrices=True)
    return eigenvector_maps(out["transition"], out["features"].shape[-2:], k)


def pca_rgb(f: torch.Tensor) -> np.ndarray:
    """Fig. 4's feature panels: the 3 leading principal components of f (D, h, w) as colours (h, w, 3) in [0, 1]."""
    x = f.flatten(1).T.double()                                                      # (M, D)
    x = x - x.mean(0)
    u, s, _ = torch.linalg.svd(x, full_matrices=False)
    c = (u[:, :3] * s[:3]).numpy()                                                   # (M, 3)
    c = (c - c.min(0)) / np.maximum(c.max(0) - c.min(0), 1e-12)
    return c.reshape(*f.shape[1:], -1)


def cost(model, method, batch: dict, repeats: int = 5) -> dict[str, float]:
    """Table 5 on this machine: parameters (M); training memory (MB) as the parameters plus every tensor
    autograd saves for the backward of one training step of ``method`` on ``batch`` (device-independent,
    unlike a CUDA peak, and what grows with the random walk's M x M matrix); inference speed (images/s,
    eval mode, ``repeats`` timed passes over batch["image"])."""
    params = sum(p.numel() for p in model.parameters())
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        sum(method.losses(model, batch).values())
    model.eval()
    with torch.no_grad():
        model(batch["image"])
        t0 = time.perf_counter()
        for _ in range(repeats):
            model(batch["image"])
        dt = time.perf_counter() - t0
    return {"params_M": params / 1e6, "memory_MB": (4 * params + sum(saved)) / 2**20,
            "speed_img_s": repeats * len(batch["image"]) / dt}
