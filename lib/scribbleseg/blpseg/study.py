"""Ablation tables of BLPSeg (Wang et al., IEEE TIP 2023, Tables I-VI) on one shared recipe.

Every row is a (method, scribble variant) trained for the same seeds with the same training config,
so rows that two tables share (the "+ LAM + BLP" model is in Tables I-V) train once through the
results cache. Rows are compared by paired differences per seed (same seed = same initialisation and
batches) against a reference row, read with :func:`scribbleseg.study.verdict`.
"""
from __future__ import annotations

import numpy as np

from scribbleseg.data.folder import ScribbleVariant
from scribbleseg.experiment import RunResult
from scribbleseg.results import Table
from scribbleseg.study import run_seeds, values, verdict


def run_rows(dataset, rows: dict, seeds, train: dict, progress=None, log=print) -> dict[str, list[RunResult]]:
    """{name: [run per seed]} for rows {name: method} or {name: (method, ScribbleVariant)} (default width 3)."""
    out = {}
    for name, row in rows.items():
        method, variant = row if isinstance(row, tuple) else (row, ScribbleVariant(3))
        out[name] = run_seeds(dataset, variant, method, seeds, train, progress, log)
    return out


def table(title: str, runs: dict[str, list[RunResult]], paper: dict | None = None, metric: str = "miou") -> Table:
    """A results table: one row per name, mean and std over seeds, the paper's number (if any) beside it."""
    t = Table(title, "mIoU (%)" if metric == "miou" else metric)
    for name, rs in runs.items():
        t.add_row(name, values(rs, metric), paper=(paper or {}).get(name))
    return t


def _by_seed(runs: list[RunResult]) -> dict[int, float]:
    return {r.spec["train"]["seed"]: v for r, v in zip(runs, values(runs))}


def compare(runs: dict[str, list[RunResult]], reference: str, paper: dict | None = None) -> list[str]:
    """One line per row: its difference to ``reference`` paired over the seeds both have (ours, verdict) and the
    paper's difference."""
    ref = _by_seed(runs[reference])
    lines = []
    for name, rs in runs.items():
        if name == reference:
            continue
        mine = _by_seed(rs)
        ours = verdict(np.array([mine[s] - ref[s] for s in mine if s in ref]))
        theirs = ""
        if paper and paper.get(name) is not None and paper.get(reference) is not None:
            theirs = f" | paper {paper[name] - paper[reference]:+.2f}"
        lines.append(f"{name} - {reference}: {ours}{theirs}")
    return lines


def same_sign(runs: dict[str, list[RunResult]], reference: str, paper: dict) -> dict[str, bool]:
    """For each row with a paper number: does our mean difference to ``reference`` have the paper's sign?"""
    ref = np.mean(values(runs[reference]))
    return {name: bool(np.sign(np.mean(values(rs)) - ref) == np.sign(paper[name] - paper[reference]))
            for name, rs in runs.items() if name != reference and name in paper}


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
