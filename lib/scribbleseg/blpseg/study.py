"""Ablation tables of BLPSeg (Wang et al., IEEE TIP 2023, Tables I-VI) on one shared recipe.

Every row is a (method, scribble variant) trained for the same seeds with the same training config,
so rows that two tables share (the "+ LAM + BLP" model is in Tables I-V) train once through the
results cache. Rows are compared by paired differences per seed (same seed = same initialisation and
batches) against a reference row, read with :func:`scribbleseg.lab.study.verdict`.
"""
from __future__ import annotations

from scribbleseg.experiment import RunResult
from scribbleseg.lab.study import compare, run_rows, same_sign, table  # noqa: F401  (the notebooks' study.*)


def learnt_sigma(run: RunResult, method) -> float:
    """The LAM's sigma at the end of a run with ``learn_sigma=True`` (in grid cells)."""
    model = run.load_model(method)
    if model.lam is None:
        raise ValueError(f"run {run.key} has no LAM")
    return float(model.lam.sigma.detach())


SELF_TRAINING = ("none", "paper", "released")


def recipe(sigma: float, gamma: float = 2.0, empty_weight: float = 0.02, self_training: str = "none",
           self_train_from: int | None = None) -> dict:
    """The BLPSeg keyword arguments every row of a table shares (a notebook's params).

    ``self_training``: "none" (off), "paper" (one-hot argmax of p_seg from step ``self_train_from``) or
    "released" (the released code's masked, thresholded rule)."""
    if self_training not in SELF_TRAINING:
        raise ValueError(f"self_training must be one of {SELF_TRAINING}, got {self_training!r}")
    common = {"sigma": sigma, "gamma": gamma, "empty_weight": empty_weight}
    if self_training == "none":
        return common
    if self_train_from is None:
        raise ValueError(f"self_training={self_training!r} needs self_train_from (a global step)")
    return {**common, "self_train_from": self_train_from, "self_train": self_training}
