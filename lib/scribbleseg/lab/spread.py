"""A study's runs spread over dask.distributed workers (issue 16): every row x seed x column is an independent
cached run, so they can train at once on as many workers as the user has.

- ``Spread()`` (one worker, no scheduler): every run in this process, in order: exactly the calls, logs and
  results of running them one by one.
- ``Spread(workers=N)``: a ``distributed.LocalCluster`` of N worker processes (one thread each, not daemonic,
  so that a VOC run's DataLoader may start its own workers) for the duration of :func:`run_jobs`. With GPUs,
  give one worker per GPU: worker i trains on ``cuda:<i mod the GPU count>`` (untested here: no GPU).
- ``Spread(scheduler="tcp://host:8786")``: the workers of an existing cluster (a Slurm or Kubernetes cluster
  joins through dask-jobqueue / dask-kubernetes and gives its scheduler's address). They must see the same
  results cache (the client's :func:`~scribbleseg.experiment.cache_root`, passed to every run) and data
  (``$SCRIBBLESEG_DATA`` in their environment).

The cache is safe under concurrency: two workers asked for the same key train it once and a killed worker's
run is resumed by the next one (:mod:`scribbleseg.claim`). A job may start from another job's result
(two-stage training): dask passes the first job's RunResult to the second when it is ready.

Shapes: none (orchestration). Nothing here changes a run's key or its numbers.
"""
from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any

from scribbleseg.experiment import RunResult, cache_root, run_experiment
from scribbleseg.runtime import Runtime


@dataclasses.dataclass(frozen=True)
class Spread:
    """Where runs go. workers: processes of a LocalCluster (1 = this process). scheduler: a dask scheduler's
    address (overrides workers). threads: torch threads per worker process."""
    workers: int = 1
    scheduler: str | None = None
    threads: int = 1

    def __post_init__(self):
        if not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"Spread.workers must be a whole number >= 1, got {self.workers!r}")
        if not isinstance(self.threads, int) or self.threads < 1:
            raise ValueError(f"Spread.threads must be a whole number >= 1, got {self.threads!r}")

    @property
    def local(self) -> bool:
        """True when the runs train in this process, one after another."""
        return self.workers == 1 and self.scheduler is None


@dataclasses.dataclass(frozen=True)
class Job:
    """One run_experiment call. init: a finished RunResult, or the index in the job list of the job whose
    result this one starts from (that job must come earlier), or None."""
    dataset: Any
    variant: Any
    cfg: Any
    method: Any
    init: RunResult | int | None = None


def _run_on_worker(job: Job, init: RunResult | None, root: str, threads: int) -> RunResult:
    """A job on a dask worker: its torch threads, the client's cache root, its GPU (worker i: GPU i mod count,
    for a LocalCluster's workers, named 0..N-1), no progress bar, no log."""
    import torch
    from distributed import get_worker

    torch.set_num_threads(threads)
    runtime = None
    if torch.cuda.is_available():
        name = str(get_worker().name)
        runtime = Runtime.detect(f"cuda:{int(name) % torch.cuda.device_count() if name.isdigit() else 0}")
    return run_experiment(job.dataset, job.variant, job.cfg, job.method, log=lambda *_: None, root=Path(root),
                          init=init, runtime=runtime)


@contextlib.contextmanager
def _client(spread: Spread):
    """A dask Client: of the scheduler at ``spread.scheduler``, else of a LocalCluster made and shut here."""
    import dask
    from distributed import Client, LocalCluster

    if spread.scheduler is not None:
        with Client(spread.scheduler) as client:
            yield client
        return
    with dask.config.set({"distributed.worker.daemon": False}):
        cluster = LocalCluster(n_workers=spread.workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
    with cluster, Client(cluster) as client:
        yield client


def run_jobs(jobs: list[Job], spread: Spread = Spread(), progress=None, log=print) -> list[RunResult]:
    """The RunResult of every job, in the jobs' order (each from the cache when it exists)."""
    for i, job in enumerate(jobs):
        if isinstance(job.init, int) and not 0 <= job.init < i:
            raise ValueError(f"job {i} starts from job {job.init}, which does not come before it")
    if spread.local:
        out: list[RunResult] = []
        for job in jobs:
            init = out[job.init] if isinstance(job.init, int) else job.init
            out.append(run_experiment(job.dataset, job.variant, job.cfg, job.method, progress, log, init=init))
        return out
    from distributed import as_completed

    root = str(cache_root())
    with _client(spread) as client:
        futures = []
        for job in jobs:
            init = futures[job.init] if isinstance(job.init, int) else job.init
            futures.append(client.submit(_run_on_worker, job, init, root, spread.threads, pure=False))
        where = spread.scheduler or f"{spread.workers} local workers"
        log(f"{len(jobs)} runs on {where}")
        for future in as_completed(futures):
            r = future.result()
            log(f"run {r.key}: val mIoU {r.metrics['miou']:.2f} ({'cached' if r.cached else 'trained'})")
        return client.gather(futures)
