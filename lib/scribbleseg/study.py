"""Small helpers that notebooks use to turn runs over seeds into table rows."""
from __future__ import annotations

import dataclasses

import numpy as np

from scribbleseg.data.embedded import EmbeddedConfig
from scribbleseg.data.folder import ScribbleVariant
from scribbleseg.experiment import RunResult, run_experiment
from scribbleseg.train import TrainConfig


def train_config(seed: int, **kw) -> TrainConfig:
    """TrainConfig from flat notebook params; unknown names raise ValueError naming them."""
    valid = {f.name for f in dataclasses.fields(TrainConfig)}
    bad = set(kw) - valid
    if bad:
        raise ValueError(f"unknown training parameter(s) {sorted(bad)}; valid: {sorted(valid)}")
    return TrainConfig(seed=seed, **kw)


def dataset_from_params(data: str, dataset, voc):
    """The experiment dataset a notebook's params name: "embedded" (knobs in ``dataset``) or "voc"
    (``voc`` holds the fields of :class:`~scribbleseg.experiment.VOCData`)."""
    from scribbleseg.config import thaw
    from scribbleseg.data.embedded import embedded_config
    from scribbleseg.experiment import VOCData

    if data == "embedded":
        return embedded_config(**thaw(dataset))
    if data == "voc":
        v = thaw(voc)
        return VOCData(**{**v, "scale": tuple(v.get("scale", (0.5, 2.0)))})
    raise ValueError(f"data must be 'embedded' or 'voc', got {data!r}")


def run_seeds(dataset: EmbeddedConfig, variant: ScribbleVariant, method, seeds, train: dict,
              progress=None, log=print) -> list[RunResult]:
    """One run per seed (each from the cache when it exists)."""
    return [run_experiment(dataset, variant, train_config(s, **train), method, progress=progress, log=log)
            for s in seeds]


def values(runs: list[RunResult], metric: str = "miou") -> list[float]:
    """``metric`` of each run, rounded to 2 decimals (as stored in results files)."""
    return [round(float(r.metrics[metric]), 2) for r in runs]


def progress_bar():
    """The tqdm factory for notebooks: a widget bar per epoch when interactive; None under
    ``scribbleseg.run`` (SCRIBBLESEG_BATCH=1), where the kernel would store every bar update in the
    notebook: there the one line per epoch, which carries its own epoch bar, shows progress."""
    import functools
    import os

    if os.environ.get("SCRIBBLESEG_BATCH") == "1":
        return None
    from tqdm.auto import tqdm

    return functools.partial(tqdm, mininterval=1.0)


def verdict(d, tie: float = 0.1) -> str:
    """Reading of paired differences a - b (mIoU points) for "a is at least as good as b".

    "better" when the mean exceeds one standard error, "worse" when it is below minus one standard error
    and at least ``tie`` points, "tie" otherwise (a difference under ``tie`` points is below what the
    cpu-profile runs here can resolve)."""
    d = np.asarray(d, dtype=float)
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
    m = float(d.mean())
    word = "better" if m > se and m >= tie else "worse" if m < -se and m <= -tie else "tie"
    return f"{m:+.2f} (standard error {se:.2f}, {len(d)} seed{'s' if len(d) != 1 else ''}): {word}"
