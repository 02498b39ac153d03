"""Two-stage training runs shared by the Potts notebooks (paper App. C: "two-stage training, where
only the cross-entropy loss on scribbles is used in the first stage").

Stage 1 is the pCE baseline run of ``notebooks/01_baselines`` (same dataset, variant and training
config, hence the same cache entry). Stage 2 starts from its weights and trains ``method`` with the
``stage2`` training config; "pCE, stage 2" (PartialCE for the same stage-2 schedule) is the control
every Potts method is compared against, so that extra training alone is not credited to a loss.

Scribble length ratio (Table 3, Fig. 4, Fig. 6) maps to URSS's shrink variant: length L keeps the
middle L of every stroke, i.e. ``ScribbleVariant(shrink=1 - L)``; L = 0 leaves one point per stroke.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from scribbleseg.data.folder import ScribbleVariant
from scribbleseg.experiment import RunResult, run_experiment
from scribbleseg.baseline import PartialCE
from scribbleseg.lab.results import Table
from scribbleseg.lab import study
from scribbleseg.lab.study import run_stage_two, train_config, values, verdict  # noqa: F401  (verdict: for the notebooks)


def length_variant(length: float, width: int = 3) -> ScribbleVariant:
    """Scribbles at ``length`` ratio of their full length (1.0 = the original strokes)."""
    if not 0 <= length <= 1:
        raise ValueError(f"scribble length ratio must be in [0, 1], got {length}")
    return ScribbleVariant(width, shrink=round(1 - length, 6))


@dataclasses.dataclass
class TwoStage:
    """Runs (stage 1 pCE -> stage 2 method) on one dataset, cached per (variant, seed, method).

    Attributes:
        dataset: the experiment dataset. stage1, stage2: flat training params (see ``train_config``).
        width: scribble brush width. progress, log: passed to ``run_experiment``.
    """

    dataset: object
    stage1: dict
    stage2: dict
    width: int = 3
    progress: object = None
    log: object = print

    def first(self, length: float, seed: int) -> RunResult:
        """The stage-1 pCE run at ``length``, seed ``seed``."""
        return run_experiment(self.dataset, length_variant(length, self.width), train_config(seed, **self.stage1),
                              PartialCE(), progress=self.progress, log=self.log)

    def second(self, method, length: float, seed: int) -> RunResult:
        """Stage 2 of ``method`` from the stage-1 run of the same length and seed."""
        return run_stage_two(self.dataset, length_variant(length, self.width), [self.first(length, seed)],
                             {"stage 2": method}, [seed], self.stage2, self.progress, self.log)["stage 2"][0]

    def grid(self, methods: dict, lengths, seeds) -> dict:
        """{(name, length): [RunResult per seed]} for every method, length and seed; "pCE, stage 1"
        (the initialisations) and "pCE, stage 2" (the control) are included."""
        out = {}
        for length in lengths:
            out[("pCE, stage 1", length)] = [self.first(length, s) for s in seeds]
            out[("pCE, stage 2", length)] = [self.second(PartialCE(), length, s) for s in seeds]
            for name, m in methods.items():
                out[(name, length)] = [self.second(m, length, s) for s in seeds]
        return out


def run_lengths(two: TwoStage, methods: dict, lengths, seeds, sweep_seeds) -> dict:
    """:meth:`TwoStage.grid` with every seed at full length (max of ``lengths``) and ``sweep_seeds`` elsewhere."""
    full = max(lengths)
    runs = two.grid(methods, [full], seeds)
    for length in [x for x in lengths if x != full]:
        runs.update(two.grid(methods, [length], sweep_seeds))
    return runs


def length_tables(runs: dict, title: str, paper=lambda name, length: None) -> list:
    """One :class:`~scribbleseg.lab.results.Table` per scribble length (longest first), a row per method;
    ``paper(name, length)`` gives the paper's number for the row or None."""
    tables = []
    for length in sorted({ln for _, ln in runs}, reverse=True):
        t = Table(f"{title}, scribble length {length} (val)", "mIoU (%)")
        for (name, ln), rs in runs.items():
            if ln == length:
                t.add_row(name, values(rs), paper=paper(name, length))
        tables.append(t)
    return tables


def paired(runs: dict, a: str, b: str, length: float):
    """Per-seed mIoU differences a - b at ``length``: both stage-2 runs of a seed start from the same
    stage-1 model and see the same batches, so the difference removes most of the seed's noise."""
    return np.array(values(runs[(a, length)])) - np.array(values(runs[(b, length)]))


def anchor_lines(runs: dict) -> list[str]:
    """Regression anchors for nbval: final training loss and pixel accuracy of every run."""
    ordered = sorted(runs.items(), key=lambda kv: (-kv[0][1], kv[0][0]))
    return study.anchor_lines({f"{name:20s} length {length}:": rs for (name, length), rs in ordered}, width=0)


def by_length(runs: dict, names) -> tuple[list[float], dict]:
    """(lengths, {name: (mean mIoU per length, zeros)}) for :func:`scribbleseg.lab.plots.lines_with_std`."""
    xs = sorted({ln for _, ln in runs})
    return xs, {n: ([float(np.mean(values(runs[(n, x)]))) for x in xs], [0.0] * len(xs)) for n in names}


def run_keys(runs: dict) -> dict:
    """{"name @ length": [cache keys]} for a results file's ``extra``."""
    return {f"{n} @ {ln}": [r.key for r in rs] for (n, ln), rs in runs.items()}

