"""Small helpers that notebooks use to turn runs over seeds into table rows: rows of (method, variant)
over seeds, tables with the paper's column, and differences paired per seed (same seed = same
initialisation and batches) read with :func:`verdict`."""
from __future__ import annotations

import dataclasses

import numpy as np

from scribbleseg.data.embedded import EmbeddedConfig
from scribbleseg.data.folder import ScribbleVariant
from scribbleseg.experiment import RunResult
from scribbleseg.lab.spread import Job, Spread, run_jobs
from scribbleseg.lab.results import Table
from scribbleseg.train import TrainConfig
from scribbleseg.lab.config import headless, thaw
from scribbleseg.data.embedded import embedded_config
from scribbleseg.experiment import VOCData


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

    if data == "embedded":
        return embedded_config(**thaw(dataset))
    if data == "voc":
        v = thaw(voc)
        return VOCData(**{**v, "scale": tuple(v.get("scale", (0.5, 2.0)))})
    raise ValueError(f"data must be 'embedded' or 'voc', got {data!r}")


def run_seeds(dataset: EmbeddedConfig, variant: ScribbleVariant, method, seeds, train: dict,
              progress=None, log=print, spread: Spread = Spread()) -> list[RunResult]:
    """One run per seed (each from the cache when it exists), on ``spread``'s workers (default: here, in turn)."""
    return run_jobs([Job(dataset, variant, train_config(s, **train), method) for s in seeds], spread, progress, log)


def run_stage_two(dataset, variant: ScribbleVariant, stage1: list[RunResult], rows: dict, seeds, train: dict,
                  progress=None, log=print, spread: Spread = Spread()) -> dict[str, list[RunResult]]:
    """{name: [stage-2 run per seed]} of two-stage training (URSS Sec. 4, Potts App. C): each row's run of a
    seed starts from the stage-1 run of that seed (``stage1``, one run per seed, of a network the rows'
    methods can load) and trains under ``train``."""
    init = {r.spec["train"]["seed"]: r for r in stage1}
    missing = [s for s in seeds if s not in init]
    if missing:
        raise ValueError(f"no stage-1 run for seed(s) {missing}: train stage 1 for them first")
    jobs = [Job(dataset, variant, train_config(s, **train), m, init[s]) for m in rows.values() for s in seeds]
    done = iter(run_jobs(jobs, spread, progress, log))
    return {name: [next(done) for _ in seeds] for name in rows}


def anchor_lines(runs: dict[str, list[RunResult]], width: int = 24) -> list[str]:
    """Regression anchors for nbval, one line per row: final training loss and pixel accuracy of every run
    (they change whenever a loss, the engine or the metric does)."""
    return [f"{name:{width}s} final loss " + ", ".join(f"{r.history[-1]['loss']:.4f}" for r in rs)
            + " | pixel acc " + ", ".join(f"{r.metrics['pixel_accuracy']:.3f}" for r in rs)
            for name, rs in runs.items()]


def values(runs: list[RunResult], metric: str = "miou") -> list[float]:
    """``metric`` of each run, rounded to 2 decimals (as stored in results files)."""
    return [round(float(r.metrics[metric]), 2) for r in runs]


def progress_bar():
    """The tqdm factory for notebooks: a widget bar per epoch when interactive; None when
    :func:`~scribbleseg.lab.config.headless` (under ``scribbleseg.lab.run``, which injects ``headless = True``,
    or with SCRIBBLESEG_BATCH=1), where the kernel would store every bar update in the notebook: there the one
    line per epoch, which carries its own epoch bar, shows progress. Call it after ``freeze_parameters``."""
    import functools

    if headless():
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


def run_rows(dataset, rows: dict, seeds, train: dict, progress=None, log=print,
             spread: Spread = Spread()) -> dict[str, list[RunResult]]:
    """{name: [run per seed]} for rows {name: method} or {name: (method, ScribbleVariant)} (default width 3), all
    rows' runs at once on ``spread``'s workers (default: here, row by row, seed by seed)."""
    jobs = []
    for row in rows.values():
        method, variant = row if isinstance(row, tuple) else (row, ScribbleVariant(3))
        jobs += [Job(dataset, variant, train_config(s, **train), method) for s in seeds]
    done = iter(run_jobs(jobs, spread, progress, log))
    return {name: [next(done) for _ in seeds] for name in rows}


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
