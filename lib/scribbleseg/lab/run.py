"""Execute notebooks with a parameter profile: ``python -m scribbleseg.lab.run --profile cpu [--kernel NAME]``.

For each notebook (default: every ``notebooks/**/*.ipynb``, sorted) the overrides
of ``params/<profile>/<key>.yaml`` are validated first (all errors are listed and
nothing runs if any), then the notebook runs under papermill on the Jupyter kernel
``--kernel`` (default ``python3``; any installed kernelspec, e.g. one of a GPU
environment or one that starts a remote kernel) with its folder as cwd; the executed
copy goes to ``build/notebooks/<profile>/<key>.ipynb``.

Everything the kernel needs comes as notebook parameters, never as environment
variables of this process (which a remote kernel would not see): the yaml's overrides,
``profile`` and ``headless = True`` (no widgets, no progress bars in stored outputs).
The kernel finds the repository from its cwd and must have scribbleseg installed
(``pip install -e .``, as ``make env`` does in ``.venv``).

A completed notebook leaves ``build/stamps/<profile>/<key>.done`` holding a hash
of the notebook, its parameters, its output path and the kernel: a rerun skips it unless
``--force`` or something changed, so an interrupted run resumes where it stopped.
For the cpu profile the executed notebook is also written back to ``notebooks/``
(the committed notebooks show the cpu run) without the run settings in its injected
cell, so that running that copy by hand writes to ``build/scratch/``, not over the
committed results. ``--refresh-references`` (smoke profile only) writes scrubbed
executed copies to ``tests/nbval/`` instead: the nbval reference notebooks.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import json
import logging
import sys
import time
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import find_kernel_specs

from scribbleseg import distributed
from scribbleseg.files import atomic_write_text
from scribbleseg.lab.config import DEFAULT_PROFILE, RUN_SETTINGS, ParamsError, check_profile, injected, load_params, \
    notebook_key, notebook_parameters, repo_root

VOLATILE_NB = ("start_time", "end_time", "duration", "input_path", "output_path")
VOLATILE_CELL = ("start_time", "end_time", "duration")


def discover(root: Path) -> list[Path]:
    """All notebooks under ``<root>/notebooks``, sorted, without checkpoints."""
    found = (root / "notebooks").rglob("*.ipynb")
    return sorted((p for p in found if ".ipynb_checkpoints" not in p.parts),
                  key=lambda p: p.relative_to(root).as_posix())


def stamp_hash(notebook: Path, params: dict, output: Path, kernel: str = "python3") -> str:
    """Hash of the notebook's code (sources only: its stored outputs may change), params, output path and kernel."""
    nb = nbformat.read(str(notebook), as_version=4)
    sources = [c.source for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    h = hashlib.sha256(json.dumps(sources).encode())
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    h.update(str(output.resolve()).encode())
    h.update(kernel.encode())
    return h.hexdigest()


def run_parameters(notebook: Path, profile: str) -> dict:
    """What the runner injects into ``notebook``: the validated overrides of its profile yaml, then ``profile``
    and ``headless = True`` where the notebook declares them (:func:`~scribbleseg.lab.config.injected` form)."""
    params = load_params(notebook, profile)
    declared = notebook_parameters(notebook)
    if "profile" in declared:
        params["profile"] = profile
    if "headless" in declared:
        params["headless"] = True
    return injected(params)


def without_run_settings(path: Path, profile: str) -> bool:
    """Drop ``profile`` and the :data:`RUN_SETTINGS` assignments from the injected-parameters cell of the notebook
    at ``path`` (in place), leaving a comment that says what ran. The committed notebooks are such copies: run by
    hand (JupyterLab, plain papermill without a profile) they keep the notebook's default profile
    (build/scratch/) instead of writing over the committed results. True if the cell changed."""
    nb = nbformat.read(str(path), as_version=4)
    drop = ("profile", *RUN_SETTINGS)
    changed = False
    for cell in nb.cells:
        if "injected-parameters" not in cell.metadata.get("tags", []):
            continue
        lines = cell.source.splitlines()
        gone, removed = set(), []
        for stmt in ast.parse(cell.source).body:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 \
                    and getattr(stmt.targets[0], "id", None) in drop:
                gone.update(range(stmt.lineno - 1, stmt.end_lineno))
                removed.append(ast.get_source_segment(cell.source, stmt))
        if not removed:
            continue
        kept = [line for i, line in enumerate(lines) if i not in gone]
        note = [f"# Ran as `python -m scribbleseg.lab.run --profile {profile}` with {', '.join(removed)}; left",
                f"# out here, so that running this copy by hand writes to build/{DEFAULT_PROFILE}/, not over the",
                "# committed results and figures (to update those, use the runner with --profile cpu)."]
        cell.source = "\n".join(kept + note) + "\n"
        changed = True
    if changed:
        nbformat.write(nb, str(path))
    return changed


def check_kernel(name: str) -> None:
    """:class:`ParamsError` unless a Jupyter kernelspec ``name`` is installed (papermill starts kernels from them)."""
    known = find_kernel_specs()
    if name not in known:
        raise ParamsError(f"unknown kernel {name!r} (installed kernels: {', '.join(sorted(known)) or 'none'}; "
                          "`jupyter kernelspec list` shows them; in the environment that should run the notebooks, "
                          "`python -m ipykernel install --sys-prefix --name NAME` adds one)")


def scrub(path: Path) -> None:
    """Drop timestamps and durations so reference notebooks only change when outputs do."""
    nb = nbformat.read(str(path), as_version=4)
    for key in VOLATILE_NB:
        nb.metadata.get("papermill", {}).pop(key, None)
    for cell in nb.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.id = "injected-parameters"  # papermill draws a random id on every run
        cell.metadata.pop("execution", None)
        for key in VOLATILE_CELL:
            cell.metadata.get("papermill", {}).pop(key, None)
    nbformat.write(nb, str(path))


class _CellOutput(logging.Formatter):
    """Papermill logs cell output with trailing newlines; drop them."""

    def format(self, record):
        return record.getMessage().rstrip("\n")


def _quiet_papermill_chatter(record: logging.LogRecord) -> bool:
    msg = record.getMessage()
    return not msg.startswith(("Executing Cell", "Ending Cell", "Input Notebook",
                               "Output Notebook", "Working directory", "Executing notebook"))


@contextlib.contextmanager
def _stream_cell_output():
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_CellOutput())
    handler.addFilter(_quiet_papermill_chatter)
    log = logging.getLogger("papermill")
    old_level, old_propagate = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
        log.propagate = old_propagate


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m scribbleseg.lab.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", required=True, help="params/<profile>/: smoke, cpu, paper...")
    p.add_argument("--kernel", default="python3",
                   help="Jupyter kernel to run the notebooks on (default python3; see `jupyter kernelspec list`)")
    p.add_argument("notebooks", nargs="*", type=Path, help="default: all under notebooks/")
    p.add_argument("--output-dir", type=Path,
                   help="where executed copies go (default build/notebooks/<profile>)")
    p.add_argument("--refresh-references", action="store_true",
                   help="smoke profile only: write the nbval references to tests/nbval/")
    p.add_argument("--force", action="store_true", help="rerun notebooks already done")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failure")
    args = p.parse_args(argv)
    if args.refresh_references and args.profile != "smoke":
        p.error("--refresh-references needs --profile smoke (references are smoke runs)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    root, profile = repo_root(), args.profile
    notebooks = [n.resolve() for n in args.notebooks] or discover(root)
    if not notebooks:
        print(f"no notebooks under {root / 'notebooks'}: nothing to run")
        return 0

    try:
        check_profile(profile)                 # once, not once per notebook
        check_kernel(args.kernel)
    except ParamsError as e:
        print(f"{e}; nothing was executed", file=sys.stderr)
        return 2
    jobs, errors = [], []
    for nb in notebooks:
        try:
            if not nb.is_file():
                raise ParamsError(f"{nb}: no such notebook")
            jobs.append((nb, notebook_key(nb), run_parameters(nb, profile)))
        except ParamsError as e:
            errors.append(str(e))
    if errors:
        print(f"parameter errors in {len(errors)} notebook(s); nothing was executed:",
              file=sys.stderr)
        for e in errors:
            print(f"- {e}", file=sys.stderr)
        return 2

    out_dir = args.output_dir or (root / "tests" / "nbval" if args.refresh_references
                                  else root / "build" / "notebooks" / profile)
    out_dir = out_dir if out_dir.is_absolute() else Path.cwd() / out_dir
    stamps = root / "build" / "stamps" / profile
    main_rank = distributed.is_main()
    if not main_rank:  # under torchrun: every rank runs each notebook (its kernel inherits RANK...); rank 0 keeps it
        out_dir, stamps = out_dir / f"rank{distributed.rank()}", out_dir / f"rank{distributed.rank()}" / "stamps"
    kernel = "" if args.kernel == "python3" else f", kernel {args.kernel}"
    failed = []
    for i, (nb, key, params) in enumerate(jobs, 1):
        output, stamp = out_dir / f"{key}.ipynb", stamps / f"{key}.done"
        print(f"[{i}/{len(jobs)}] notebooks/{key}.ipynb (profile {profile}{kernel})", flush=True)
        digest = stamp_hash(nb, params, output, args.kernel)
        if not args.force and output.is_file() and stamp.is_file() \
                and stamp.read_text().split("\n")[0] == digest:
            print("  skip (done)", flush=True)
            continue
        stamp.unlink(missing_ok=True)
        output.parent.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        try:
            import papermill
            with _stream_cell_output():
                papermill.execute_notebook(
                    str(nb), str(output), parameters=params, cwd=str(nb.parent),
                    kernel_name=args.kernel, language="python", log_output=True, progress_bar=False)
        except Exception as e:  # noqa: BLE001 - any failure is reported, the rest still run
            print(f"  FAILED after {time.monotonic() - start:.0f}s: {type(e).__name__}: {e}",
                  file=sys.stderr, flush=True)
            print(f"  inspect the executed copy: {output}" if output.is_file() else
                  "  (no executed copy was written)", file=sys.stderr, flush=True)
            failed.append((key, output))
            if args.fail_fast:
                break
            continue
        if args.refresh_references or (profile == "cpu" and args.output_dir is None):
            scrub(output)
        if profile == "cpu" and args.output_dir is None and main_rank:  # committed notebooks show the cpu run
            nb.write_bytes(output.read_bytes())
            without_run_settings(nb, profile)
        stamp.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(stamp, f"{digest}\n{json.dumps(params, sort_keys=True, default=str)}\n")
        print(f"  done in {time.monotonic() - start:.0f}s -> {output}", flush=True)

    if failed:
        print(f"{len(failed)} notebook(s) failed:", file=sys.stderr)
        for key, output in failed:
            print(f"- notebooks/{key}.ipynb: see {output}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
