"""Fully connected CRF post-processing (Krähenbühl & Koltun, NeurIPS 2011; DeepLab, Chen et al.).

Mean-field inference of the dense CRF with energy
E(x) = sum_i -log P(x_i) + sum_{i<j} mu(x_i, x_j) [w1 exp(-|p_i-p_j|^2/2a^2 - |I_i-I_j|^2/2b^2)
                                                   + w2 exp(-|p_i-p_j|^2/2g^2)],
with a Potts compatibility mu. Mapping to the arguments: w1 = ``compat_bilateral``,
a = ``sxy_bilateral``, b = ``srgb``, w2 = ``compat_gauss``, g = ``sxy_gauss``.

The defaults (gaussian sxy=3, compat=3; bilateral sxy=80, srgb=13, compat=10; 5 iterations) are
the customary DeepLab-style CRF settings used with pydensecrf in weakly/scribble-supervised
segmentation code. (DeepLab itself cross-validates the bilateral parameters per dataset.)

Requires the optional package ``pydensecrf2`` (installs the module ``pydensecrf``):
``pip install pydensecrf2`` (builds from source, about 35 s).
"""
from __future__ import annotations

import numpy as np

_INSTALL_HINT = ("dense_crf needs the optional package pydensecrf2: `pip install pydensecrf2` "
                 "(it builds from source, about 35 s), or `pip install scribbleseg[crf]`")


def _import_pydensecrf():
    try:
        import pydensecrf.densecrf as dcrf
        from pydensecrf.utils import unary_from_softmax
    except ImportError as e:
        raise ImportError(_INSTALL_HINT) from e
    return dcrf, unary_from_softmax


def dense_crf(image, probs, iters: int = 5, sxy_gauss: float = 3, compat_gauss: float = 3,
              sxy_bilateral: float = 80, srgb: float = 13, compat_bilateral: float = 10) -> np.ndarray:
    """Refine class probabilities with a dense CRF.

    Args:
        image: (H, W, 3) uint8 RGB image (numpy array, or tensor convertible to one).
        probs: (K, H, W) class probabilities (e.g. ``predict(...)[i]``), summing to 1 over K.
        iters: mean-field iterations.
        sxy_gauss, compat_gauss: spatial std (px) and weight of the smoothness kernel.
        sxy_bilateral, srgb, compat_bilateral: spatial std (px), colour std and weight of the
            appearance (bilateral) kernel.

    Returns:
        (K, H, W) float32 refined probabilities summing to 1 over K.

    Raises:
        ImportError: pydensecrf2 is not installed (the message says how to install it).
        ValueError: wrong shapes or dtype.
    """
    dcrf, unary_from_softmax = _import_pydensecrf()
    img = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    p = probs.detach().cpu().numpy() if hasattr(probs, "detach") else np.asarray(probs)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8, got shape {img.shape} dtype {img.dtype}")
    if p.ndim != 3 or p.shape[1:] != img.shape[:2]:
        raise ValueError(f"probs must be (K, H, W) matching image {img.shape[:2]}, got {p.shape}")
    k, h, w = p.shape
    crf = dcrf.DenseCRF2D(w, h, k)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(p.astype(np.float32))))
    crf.addPairwiseGaussian(sxy=sxy_gauss, compat=compat_gauss)
    crf.addPairwiseBilateral(sxy=sxy_bilateral, srgb=srgb, rgbim=np.ascontiguousarray(img),
                             compat=compat_bilateral)
    q = np.asarray(crf.inference(iters), dtype=np.float32)
    return q.reshape(k, h, w)
