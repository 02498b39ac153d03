"""Figures 1 and 2 of "Potts relaxations and soft self-labeling for weakly-supervised segmentation" (CVPR 2025).

Fig. 1 shows the six second-order relaxations of Tables 1-2 for K = 2, where a distribution is (x, 1 - x):
contour maps of P((x_i, 1 - x_i), (x_j, 1 - x_j)) over (x_i, x_j) in [0, 1]^2 (:func:`potential_contours`),
and surfaces over logit pairs (l_i, l_j) with x = 1 / (1 + e^{-2l}) (:func:`potential_surfaces`).
Fig. 2 shows two "moves" of a pair of neighbours on the K = 3 simplex (:func:`simplex_moves`); Sec. 2.1
reads the potential at three states of each move. :func:`move_profiles` gives it along the whole move.

The potentials come from :mod:`scribbleseg.potts.relaxations`, evaluated in float64 here.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from scribbleseg.potts.relaxations import LOG_FORMS, NAMES, potts

TITLES = {"BL": "bi-linear", "Q": "quadratic", "NQ": "normalised quadratic",
          "CCE": "collision cross-entropy", "CD": "collision divergence", "LQ": "log-quadratic"}
CLIP = 3.0  # display cap for the log forms: they reach -ln(EPS) = 13.8 for two different one-hot vectors
MOVES = {"a": "(a) inside an object: y_i = y_j = (1-t, t, 0), A -> B",
         "b": "(b) on a boundary: y_i = A, y_j = (0, t, 1-t), C -> B"}
VERTICES = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])  # A, B, C of the simplex drawing


def _t(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


def binary_potential(xi, xj, name: str) -> np.ndarray:
    """P((x_i, 1 - x_i), (x_j, 1 - x_j)), the K = 2 potential of Fig. 1.

    Args:
        xi, xj: broadcastable arrays of first-class probabilities in [0, 1].
        name: one of ``NAMES``.

    Returns:
        The potential, an array of the broadcast shape.
    """
    xi, xj = torch.broadcast_tensors(_t(xi), _t(xj))
    p, q = torch.stack([xi, 1 - xi], -1), torch.stack([xj, 1 - xj], -1)  # (x, 1 - x)
    return potts(p, q, name, dim=-1).numpy()


def logit_to_x(l) -> np.ndarray:
    """x = 1 / (1 + e^{-2l}), the Fig. 1 caption's map from a scalar logit to (x, 1 - x)."""
    return 1 / (1 + np.exp(-2 * np.asarray(l, dtype=np.float64)))


def discordant_slope(name: str, l: float) -> float:
    """dP/dl_i at (l_i, l_j) = (l, -l): the gradient pixel i's logit gets from a neighbour that
    confidently disagrees (the discordant corners of the Fig. 1 surfaces).

    Args:
        name: one of ``NAMES``.
        l: logit magnitude (> 0: both pixels confident, in different classes).

    Returns:
        The partial derivative, a float.
    """
    li = torch.tensor(float(l), dtype=torch.float64, requires_grad=True)
    xi, xj = torch.sigmoid(2 * li), torch.sigmoid(torch.tensor(-2.0 * l, dtype=torch.float64))
    potts(torch.stack([xi, 1 - xi]), torch.stack([xj, 1 - xj]), name, dim=0).backward()
    return float(li.grad)


def move_profiles(t, names=NAMES) -> dict[str, dict[str, np.ndarray]]:
    """The potential along the two moves of Fig. 2, parameterised by t in [0, 1].

    Args:
        t: array of move parameters (0: start, 1/2: the intermediate state y', 1: the end y'').
        names: relaxations to evaluate.

    Returns:
        ``{"a": {name: P(t)}, "b": {name: P(t)}}``, arrays shaped like ``t``.
    """
    t = _t(t)
    o, z = torch.ones_like(t), torch.zeros_like(t)
    ya = torch.stack([1 - t, t, z], -1)      # (a) y_i = y_j = (1 - t, t, 0): A -> (1/2, 1/2, 0) -> B
    yi = torch.stack([o, z, z], -1)          # (b) y_i = (1, 0, 0) = A, fixed
    yj = torch.stack([z, t, 1 - t], -1)      # (b) y_j = (0, t, 1 - t): C -> (0, 1/2, 1/2) -> B
    return {"a": {n: potts(ya, ya, n, dim=-1).numpy() for n in names},
            "b": {n: potts(yi, yj, n, dim=-1).numpy() for n in names}}


def bump_and_well(profile: np.ndarray) -> tuple[float, float]:
    """How far a move's profile leaves the range of its end states.

    Returns:
        (bump, well): bump = max_t P - max(P(0), P(1)) > 0 is a barrier the move must climb (P_BL on
        move a); well = min(P(0), P(1)) - min_t P > 0 is an intermediate state the move gets stuck in
        (P_Q on move b). Both are 0 for a monotone or constant profile.
    """
    ends = np.asarray(profile)[[0, -1]]
    return float(np.max(profile) - ends.max()), float(ends.min() - np.min(profile))


def is_monotone(profile: np.ndarray, tol: float = 1e-12) -> bool:
    """True if the profile never goes both up and down (constant counts as monotone)."""
    d = np.diff(profile)
    return bool(np.all(d >= -tol) or np.all(d <= tol))


def _panels(k: int, projection=None, size=(3.8, 3.4)):
    rows, cols = -(-k // 3), min(k, 3)
    fig = plt.figure(figsize=(size[0] * cols, size[1] * rows))
    return fig, [fig.add_subplot(rows, cols, i + 1, projection=projection) for i in range(k)]


def potential_contours(names=NAMES, n: int = 201, clip: float = CLIP):
    """Fig. 1 contour maps: iso-levels of P over (x_i, x_j) in [0, 1]^2, one panel per relaxation.

    The log forms' colours stop at ``clip`` (their iso-lines are those of their Table 1 counterpart,
    spaced differently, since -ln(1 - P) is monotone). Returns the Figure."""
    x = np.linspace(0, 1, n)
    xi, xj = np.meshgrid(x, x)                   # columns: x_i, rows: x_j
    fig, axes = _panels(len(names))
    for ax, name in zip(axes, names):
        top = clip if name in LOG_FORMS else 1.0
        levels = np.linspace(0, top, 11)
        z = np.minimum(binary_potential(xi, xj, name), top)
        ax.contourf(xi, xj, z, levels=levels, cmap="viridis")
        cs = ax.contour(xi, xj, z, levels=levels[1:-1], colors="k", linewidths=0.6)
        ax.clabel(cs, fontsize=7, fmt="%.2g")
        ax.set_title(f"P_{name} {TITLES[name]}" + (f"\n(colours capped at {clip:g})" if name in LOG_FORMS else ""),
                     fontsize=9)
        ax.set(xlabel="x_i", ylabel="x_j", aspect="equal")
    fig.tight_layout()
    return fig


def potential_surfaces(names=NAMES, extent: float = 3.0, n: int = 61):
    """Fig. 1 surfaces: P over logit pairs (l_i, l_j) in [-extent, extent]^2, x = 1/(1 + e^{-2l})."""
    l = np.linspace(-extent, extent, n)
    li, lj = np.meshgrid(l, l)
    fig, axes = _panels(len(names), projection="3d", size=(4.0, 3.6))
    for ax, name in zip(axes, names):
        z = binary_potential(logit_to_x(li), logit_to_x(lj), name)
        ax.plot_surface(li, lj, z, cmap="viridis", linewidth=0, antialiased=False)
        ax.set_title(f"P_{name} {TITLES[name]}", fontsize=9)
        ax.set(xlabel="l_i", ylabel="l_j")
        ax.tick_params(labelsize=7)
    fig.subplots_adjust(wspace=0.05, hspace=0.15)
    return fig


def simplex_moves(names=("BL", "Q", "NQ")):
    """Fig. 2: the two moves drawn on the K = 3 simplex (vertices A, B, C), each panel annotated with
    P(y), P(y'), P(y'') of ``names`` from :func:`move_profiles`. Returns the Figure."""
    xy = lambda y: np.asarray(y, dtype=np.float64) @ VERTICES  # barycentric -> plane
    A, B, C, AB, CB = (xy(y) for y in ([1, 0, 0], [0, 1, 0], [0, 0, 1], [.5, .5, 0], [0, .5, .5]))
    states = {"a": [(A, "y_i = y_j"), (AB, "y'_i = y'_j"), (B, "y''_i = y''_j")],
              "b": [(C, "y_j"), (CB, "y'_j"), (B, "y''_j")]}
    prof = move_profiles([0.0, 0.5, 1.0], names)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    for ax, move in zip(axes, "ab"):
        ax.fill(*VERTICES.T, color="#eef3fa", ec="k", lw=1)
        for v, lab, off in ((A, "A", (-.07, -.05)), (B, "B", (.03, -.05)), (C, "C", (-.09, -.02))):
            ax.text(*(v + off), lab, fontsize=13, weight="bold")
        (p0, _), _, (p1, _) = states[move]
        ax.annotate("", p1, p0, arrowprops=dict(arrowstyle="->", color="tab:red", lw=2))
        for p, lab in states[move]:
            ax.plot(*p, "o", color="tab:red", ms=7)
            ax.text(p[0] + .03, p[1] + .03, lab, fontsize=9, color="tab:red")
        if move == "b":                          # y_i stays at A; dotted: the neighbouring pair
            ax.plot(*A, "o", color="tab:blue", ms=7)
            ax.text(A[0] + .03, A[1] - .06, "y_i (fixed)", fontsize=9, color="tab:blue")
            ax.plot(*np.stack([A, CB]).T, ":", color="tab:blue")
        rows = [f"P_{n}: " + ", ".join(f"{v:.3g}" for v in prof[move][n]) for n in names]
        ax.text(0.98, 0.98, "P(y), P(y'), P(y''):\n" + "\n".join(rows), transform=ax.transAxes,
                ha="right", va="top", fontsize=8, family="monospace")
        ax.set_title(MOVES[move], fontsize=9, pad=14)
        ax.set_aspect("equal")
        ax.axis("off")
    fig.tight_layout()
    return fig


def move_profile_figure(n: int = 201, names=NAMES, clip: float = CLIP):
    """P along each move of Fig. 2 against t, one panel per move, one line per relaxation
    (log forms dashed and clipped at ``clip`` for display). Returns the Figure."""
    t = np.linspace(0, 1, n)
    prof = move_profiles(t, names)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, move in zip(axes, "ab"):
        for k, name in enumerate(names):         # thicker first, so that equal curves stay visible
            ax.plot(t, np.minimum(prof[move][name], clip), lw=4.5 - 0.6 * k,
                    ls="--" if name in LOG_FORMS else "-", label=f"P_{name}")
        ax.set_title(MOVES[move], fontsize=9)
        ax.set(xlabel="t (0: y, 1/2: y', 1: y'')")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"P(y_i, y_j)  (log forms clipped at {clip:g})")
    axes[0].legend(fontsize=8, loc="upper right", ncol=2)
    fig.tight_layout()
    return fig
