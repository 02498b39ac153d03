"""The head-to-head leaderboard (notebooks/03_head_to_head.ipynb): every method on one recipe and every kind of
scribble, with and without dense-CRF post-processing, against full masks.

Per cell (row r, column c): mIoU mean and std over the column's seeds, the share of full-mask mIoU
``100 mean_r / full`` and the share of the pCE -> full gap closed ``100 (mean_r - pce_c) / (full - pce_c)``, where
full is the full-mask run (one per seed: the masks do not depend on the scribbles, so one run serves every column)
and pce_c pCE's mean in the same column (for a "+ CRF" row, those of the full-mask and pCE rows + CRF). A row
with ``init`` starts from that row's run of the same column and seed and trains under the stage-2 recipe (URSS's
stage 2, Potts App. C's two-stage training).

Shapes: none (runs and numbers).
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch

from scribbleseg.data.folder import ScribbleVariant, SplitData
from scribbleseg.evaluate import evaluate
from scribbleseg.experiment import RunResult, load_data
from scribbleseg.files import atomic_write_json, read_json
from scribbleseg.lab.benchmark import ratios, time_steps, wrapped
from scribbleseg.lab.results import results_path
from scribbleseg.lab.spread import Job, Spread, run_jobs
from scribbleseg.lab.study import train_config, values
from scribbleseg.train import make_model, to_batch
from scribbleseg import distributed

FULL, PCE, CRF = "full masks", "pCE", " + CRF"


@dataclasses.dataclass(frozen=True)
class Row:
    """A leaderboard row: ``method`` (or {column: method}, e.g. CDSP with each training set's own pseudo-labels),
    trained from scratch, or (``init`` an earlier row's name) from that row's run of the same column and seed."""

    method: object
    init: str | None = None

    def for_column(self, column: str):
        """The method of ``column``."""
        if not isinstance(self.method, dict):
            return self.method
        if column not in self.method:
            raise ValueError(f"row has methods for columns {sorted(self.method)}, not for {column!r}")
        return self.method[column]


def columns(width: int = 3, drop: float = 0.5, shrinks=(0.5, 1.0)) -> dict[str, ScribbleVariant]:
    """The training sets: the scribbles, scribble-drop at ``drop``, scribble-shrink at each of ``shrinks``."""
    out = {"scribbles": ScribbleVariant(width), f"drop {drop:g}": ScribbleVariant(width, drop=drop)}
    out.update({f"shrink {s:g}": ScribbleVariant(width, shrink=s) for s in shrinks})
    return out


def run_board(dataset, rows: dict[str, Row], cols: dict[str, ScribbleVariant], seeds: dict[str, list[int]],
              train: dict, stage2: dict, full_method, progress=None, log=print,
              spread: Spread = Spread()) -> dict:
    """{(row, column): [RunResult per seed]} and {(FULL, column): the full-mask runs} for every row and column.

    ``seeds[column]``: the seeds of that column (the full-mask row trains the union once, on the first column's
    variant, which its loss never reads). Every run is one job of one batch on ``spread``; a row with ``init``
    (an earlier row) starts from that row's run of the same column and seed, under ``stage2``."""
    for name, row in rows.items():
        if row.init is not None and (row.init not in rows or list(rows).index(row.init) > list(rows).index(name)):
            raise ValueError(f"row {name!r} starts from {row.init!r}, which is not an earlier row of the leaderboard")
    union = sorted({s for c in cols for s in seeds[c]})
    first = next(iter(cols.values()))
    jobs = [Job(dataset, first, train_config(s, **train), full_method) for s in union]
    at = {(FULL, None, s): i for i, s in enumerate(union)}                  # job index of each (row, column, seed)
    for name, row in rows.items():
        for c, variant in cols.items():
            for s in seeds[c]:
                init = None if row.init is None else at[(row.init, c, s)]
                cfg = train_config(s, **(train if row.init is None else stage2))
                at[(name, c, s)] = len(jobs)
                jobs.append(Job(dataset, variant, cfg, row.for_column(c), init))
    done = run_jobs(jobs, spread, progress, log)                            # one batch: every worker busy
    board = {(FULL, c): [done[at[(FULL, None, s)]] for s in seeds[c]] for c in cols}
    board.update({(name, c): [done[at[(name, c, s)]] for s in seeds[c]] for name in rows for c in cols})
    return board


def crf_miou(run: RunResult, method, dataset) -> float:
    """mIoU of ``run``'s network with dense-CRF post-processing on the validation split, stored beside the run
    (``crf_metrics.json``, rank 0) so that it is computed once."""
    path = run.folder / "crf_metrics.json"
    if path.exists():
        return float(read_json(path)["miou"])
    metrics = evaluate(run.load_model(method), load_data(dataset, "val"), crf=True)
    if distributed.is_main():
        atomic_write_json(path, {"miou": metrics["miou"], "pixel_accuracy": metrics["pixel_accuracy"]})
    return float(metrics["miou"])


def step_costs(methods: dict[str, object], dataset, train: dict, repeats: int = 3) -> dict[str, float] | None:
    """Seconds of one training step of each method (``methods`` must hold "pCE") divided by pCE's, timed
    round-robin in this process on the first batch of the training split, each method on its own wrapped copy
    of one network (:func:`scribbleseg.lab.benchmark.time_steps`); None for a Dataset split (VOC), which has no
    in-memory batch to cut."""
    data = load_data(dataset, "train")
    if not isinstance(data, SplitData):
        return None
    cfg = train_config(0, **train)
    batch = to_batch(data, np.arange(min(cfg.batch_size, len(data.ids))), None, torch.device("cpu"))
    torch.manual_seed(0)
    nets = wrapped(methods, make_model(cfg, len(data.class_names)), len(data.class_names))
    return {n: round(r, 2) for n, r in ratios(time_steps(methods, nets, batch, repeats), PCE).items()}


def cell(scores: list[float], full: float, pce: float) -> dict:
    """mean, std (0 for one seed), n, % of full-mask mIoU and % of the pCE -> full gap closed (None where pCE is
    not below full), of ``scores``."""
    m = float(np.mean(scores))
    sd = float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0
    gap = full - pce
    closed = round(100 * (m - pce) / gap, 1) if gap > 0 else None
    return {"mean": round(m, 2), "std": round(sd, 2), "n": len(scores), "of_full": round(100 * m / full, 1),
            "gap_closed": closed}


def scores(board: dict, rows: dict[str, Row], dataset, crf: bool) -> dict:
    """{(row, column): [mIoU per seed]} of every row (with dense CRF when ``crf``: rows named "<row> + CRF")
    and the full-mask row."""
    out = {}
    for (name, c), runs in board.items():
        method = rows[name].for_column(c) if name in rows else None
        out[(name, c)] = values(runs)
        if crf:
            out[(name + CRF, c)] = [round(crf_miou(r, method, dataset), 2) for r in runs]
    return out


def leaderboard(score: dict, cols, costs: dict[str, float] | None = None) -> list[dict]:
    """The table as rows {"method", "cost" (step time / pCE's, when measured), column: cell}, in ``score``'s
    row order; every cell against the full-mask mean of its column and pCE's in that column, both with the same
    post-processing as the row (a "+ CRF" row against "full masks + CRF" and "pCE + CRF"), so that the CRF's own
    lift, which full masks get too, does not count as gap closed."""
    names = list(dict.fromkeys(name for name, _ in score))
    table = []
    for name in names:
        base = name.removesuffix(CRF)
        post = CRF if base != name and (FULL + CRF, next(iter(cols))) in score else ""
        row = {"method": name, "cost": None if costs is None else costs.get(base)}
        for c in cols:
            full, pce = float(np.mean(score[(FULL + post, c)])), float(np.mean(score[(PCE + post, c)]))
            row[c] = cell(score[(name, c)], full, pce)
        table.append(row)
    return table


def markdown(table: list[dict], cols, seeds: dict[str, list[int]]) -> str:
    """The leaderboard as a markdown table: per column "mean ± std (% of full, % of the gap closed)"; "no gap"
    where pCE is not below full masks in that column."""
    head = ["method", "step cost (x pCE)"] + [f"{c} ({len(seeds[c])} seed{'s' * (len(seeds[c]) != 1)})" for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table:
        cost = "" if row["cost"] is None else f"{row['cost']:.2f}"
        cells = [f"{row[c]['mean']:.2f} ± {row[c]['std']:.2f} ({row[c]['of_full']:.1f}%, "
                 + ("no gap" if row[c]["gap_closed"] is None else f"{row[c]['gap_closed']:.0f}%") + ")" for c in cols]
        lines.append("| " + " | ".join([row["method"], cost] + cells) + " |")
    return "\n".join(lines)


START, END = "<!-- head-to-head:start -->", "<!-- head-to-head:end -->"


def update_readme(readme: str, block: str) -> str:
    """``readme`` with the text between the head-to-head markers replaced by ``block``; a ValueError when the
    markers are missing (add them where the table belongs)."""
    if START not in readme or END not in readme or readme.index(START) > readme.index(END):
        raise ValueError(f"README has no '{START}' ... '{END}' markers: add them where the leaderboard belongs")
    head, rest = readme.split(START, 1)
    return head + START + "\n" + block.strip() + "\n" + END + rest.split(END, 1)[1]


def readme_block(results: dict) -> str:
    """The README's leaderboard section from the notebook's results file (its device, commit and table)."""
    return (f"Measured by `notebooks/03_head_to_head.ipynb` ({results['profile']} profile, {results['device']}, "
            f"commit {results['commit']}); mIoU mean ± std (% of full-mask mIoU, % of the pCE → full gap closed):\n\n"
            + results["markdown"])


def main(argv=None) -> None:
    """``python -m scribbleseg.lab.head_to_head [README.md]``: put the cpu profile's leaderboard
    (results/03_head_to_head.json) between the README's head-to-head markers."""
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("readme", nargs="?", default="README.md", type=Path)
    ap.add_argument("--profile", default="cpu")
    args = ap.parse_args(argv)
    path = results_path("notebooks/03_head_to_head.ipynb", args.profile)
    if not path.exists():
        raise SystemExit(f"{path} does not exist: run `python -m scribbleseg.lab.run --profile {args.profile} "
                         f"notebooks/03_head_to_head.ipynb` first")
    args.readme.write_text(update_readme(args.readme.read_text(), readme_block(read_json(path))))
    print(f"{args.readme}: leaderboard from {path}")


if __name__ == "__main__":
    main()
