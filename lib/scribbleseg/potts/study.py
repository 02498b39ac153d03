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

from scribbleseg.data.folder import ScribbleVariant
from scribbleseg.experiment import RunResult, run_experiment
from scribbleseg.methods import PartialCE
from scribbleseg.study import train_config


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
        init = self.first(length, seed)
        return run_experiment(self.dataset, length_variant(length, self.width), train_config(seed, **self.stage2),
                              method, progress=self.progress, log=self.log, init=init)

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
