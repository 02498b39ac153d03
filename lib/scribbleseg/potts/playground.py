"""Playground views of "Potts relaxations and soft self-labeling" (CVPR 2025): the soft pseudo-labels of the strokes
on one image with no network, for :mod:`scribbleseg.lab.playground`.

With no trained network the predictions are uniform, sigma_i = 1 / K, so what the strokes become is the Potts term's
work alone (Eq. 6 with the unary term pulling towards uniform):

- the closed form of H_Q + P_Q (App. B's "random walker" reference, :func:`~scribbleseg.potts.random_walker.
  quadratic_optimum`): (eta I + lambda L_UU) Y_U = eta Sigma_U + lambda W_US Y_S;
- the solver of App. B on the method's relaxation and cross-entropy (:meth:`~scribbleseg.potts.method.SelfLabeling.
  pseudo_labels`, from logits l = 0), the pseudo-labels a training step would use.

Both on the method's grid (the image pooled by ``stride``, as the logits of a stride-4 network), with the method's
colour affinities (4-neighbour grid).

Shapes: inputs as :meth:`scribbleseg.lab.playground.Sketch.inputs` gives them; panels (K, h, w) soft labellings.
"""
from __future__ import annotations

import torch

from scribbleseg.data.grid import labels_to_grid
from scribbleseg.potts.method import SelfLabeling
from scribbleseg.potts.neighbourhood import grid_affinities, pool_colours
from scribbleseg.potts.random_walker import quadratic_optimum


@torch.no_grad()
def propagations(inputs: dict, method: SelfLabeling = SelfLabeling(), stride: int = 4) -> dict[str, torch.Tensor]:
    """{title: (K, h, w)} the closed-form H_Q + P_Q optimum and ``method``'s solver output for uniform predictions.

    Args:
        inputs: rgb (1, 3, H, W) on 0-255, scribble (1, H, W), num_classes K.
        method: the self-labelling settings (relaxation, cross-entropy, eta, lambda, steps, sigma_rgb).
        stride: the grid is (H / stride, W / stride).
    """
    rgb, scribble, k = inputs["rgb"], inputs["scribble"], inputs["num_classes"]
    size = (rgb.shape[-2] // stride, rgb.shape[-1] // stride)
    seeds = labels_to_grid(scribble, size, k)                                   # (1, h, w)
    sigma = torch.full((k, *size), 1.0 / k, dtype=torch.float64)                # no network: sigma_i = 1 / K
    w = grid_affinities(pool_colours(rgb, size), method.sigma_rgb)[0]           # (2, h, w) 4-neighbour weights
    closed = quadratic_optimum(sigma, seeds[0], w, method.eta, method.lam)      # argmin H_Q + P_Q, (K, h, w)
    solved = method.pseudo_labels(torch.zeros(1, k, *size), scribble, rgb)[0]   # App. B from l = 0, (K, h, w)
    return {f"closed form H_Q + P_Q, eta {method.eta:g}, lambda {method.lam:g}": closed.float(),
            f"solver H_{method.cross_entropy} + P_{method.relaxation}, {method.steps} steps": solved}
