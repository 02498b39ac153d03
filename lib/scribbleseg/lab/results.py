"""The one results schema, and where results and figures go.

Every notebook writes ``results/<notebook key>.json`` (see :func:`results_path`)::

    {"notebook": "notebooks/blpseg/t1_ablation.ipynb", "profile": "cpu",
     "commit": "<sha>[+dirty]", "device": "cpu: <model> x<n>", "torch": "2.x",
     "params": {...},
     "tables": [{"name": ..., "metric": ...,
                 "rows": [{"setting": ..., "values": [one per seed],
                           "mean": ..., "std": ..., "paper": number or null}]}]}

Extend it (``extra=`` adds top-level keys), never change it.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from scribbleseg import distributed
from scribbleseg.files import atomic_write_text
from scribbleseg.lab.config import notebook_key, repo_root, thaw

__all__ = ["Table", "write_results", "results_path", "figures_dir", "format_table"]

SCHEMA_KEYS = ("notebook", "profile", "commit", "device", "torch", "params", "tables")


@dataclass
class Table:
    """One results table: a row per setting, one value per seed."""

    name: str
    metric: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add_row(self, setting: str, values: Iterable[float], paper: float | None = None) -> dict:
        """Append a row; mean and sample std (ddof=1, 0.0 for one value) are computed here."""
        values = [float(v) for v in values]
        if not values:
            raise ValueError(f"table {self.name!r}, row {setting!r}: no values (one per seed)")
        row = {"setting": str(setting), "values": values, "mean": statistics.fmean(values),
               "std": statistics.stdev(values) if len(values) > 1 else 0.0,
               "paper": None if paper is None else float(paper)}
        self.rows.append(row)
        return row

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "metric": self.metric, "rows": [dict(r) for r in self.rows]}


CODE_PATHS = ("lib", "params", "pyproject.toml", "Makefile", "environment.yml")


def _git_commit(root: Path) -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
    try:
        sha = git("rev-parse", "HEAD")
        # "+dirty": uncommitted changes to code or params. The outputs a run writes itself
        # (notebooks' stored outputs, results/, figures/) do not count.
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine() or "unknown cpu"


def _device_and_torch() -> tuple[str, str]:
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpu = f"cpu: {_cpu_name()} x{nproc}"
    try:
        import torch
    except ImportError:
        return cpu, "not installed"
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        return f"cuda: {torch.cuda.get_device_name(0)}" + (f" x{n}" if n > 1 else ""), \
            torch.__version__
    return cpu, torch.__version__


def write_results(path: str | os.PathLike, notebook: str | os.PathLike, profile: str,
                  params: Any, tables: Sequence[Table | Mapping], extra: Mapping | None = None
                  ) -> dict[str, Any]:
    """Write the results JSON to ``path`` (folders created) and return it as a dict.

    ``params`` may be a dict or a :func:`~scribbleseg.lab.config.freeze` dataclass;
    ``extra`` adds top-level keys but may not replace a schema key. Under torchrun only rank 0 writes.
    """
    root = repo_root()
    device, torch_version = _device_and_torch()
    out = {"notebook": f"notebooks/{notebook_key(notebook)}.ipynb", "profile": profile,
           "commit": _git_commit(root), "device": device, "torch": torch_version,
           "params": thaw(params),
           "tables": [t.to_dict() if isinstance(t, Table) else thaw(t) for t in tables]}
    clash = set(extra or {}) & set(SCHEMA_KEYS)
    if clash:
        raise ValueError(f"extra keys {sorted(clash)} would change the results schema; "
                         "use other names (extend, never change)")
    out.update(thaw(dict(extra or {})))
    if not distributed.is_main():  # under torchrun every rank runs the notebook; rank 0 writes
        return out
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(out, indent=2, sort_keys=True) + "\n")  # whole or not at all
    return out


def _out_root(profile: str) -> Path:
    """Committed outputs for the ``cpu`` profile; the git-ignored ``build/<profile>/`` for the others (smoke runs in
    tests, a user's paper runs and runs without a profile, whose default is ``scratch``, must not overwrite the
    committed results and figures)."""
    return repo_root() if profile == "cpu" else repo_root() / "build" / profile


def results_path(notebook_path: str | os.PathLike, profile: str = "cpu") -> Path:
    """``notebooks/blpseg/t1_ablation.ipynb`` -> ``<root>/results/blpseg/t1_ablation.json``."""
    return _out_root(profile) / "results" / f"{notebook_key(notebook_path)}.json"


def figures_dir(notebook_path: str | os.PathLike, profile: str = "cpu") -> Path:
    """``notebooks/blpseg/x.ipynb`` -> ``<root>/figures/blpseg`` (created); top level -> figures."""
    folder = (_out_root(profile) / "figures" / notebook_key(notebook_path)).parent
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def format_table(table: Table | Mapping, fmt: str = "{:.2f}") -> str:
    """Aligned plain text: ``setting | ours (mean ± std, n seeds) | paper``."""
    t = table.to_dict() if isinstance(table, Table) else table
    lines = [["setting", f"ours ({t['metric']}, mean ± std)", "paper"]]
    for r in t["rows"]:
        n = len(r["values"])
        ours = f"{fmt.format(r['mean'])} ± {fmt.format(r['std'])} ({n} seed{'s' * (n != 1)})"
        lines.append([r["setting"], ours, "-" if r["paper"] is None else fmt.format(r["paper"])])
    widths = [max(len(row[i]) for row in lines) for i in range(3)]
    text = [" | ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in lines]
    text.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join([f"{t['name']} ({t['metric']})", *text])
