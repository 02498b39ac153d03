"""One trainer per run key: the claim a process takes on a cache folder before training it (issue 16), so that
two processes asked for the same key (two dask workers, two notebooks, two people sharing one cache) train it
once, and a trainer killed mid-run leaves the key to the next one, which resumes from the run's checkpoints.

The claim is an exclusive ``flock`` on ``<cache>/<key>/claim.lock``, taken through the ``filelock`` package
(:class:`filelock.FileLock`): the kernel drops a lock when its holder dies, however it dies, so no stale claim is
left to clean up. The protocol of :func:`scribbleseg.experiment.run_experiment`:

1. a finished run (``result.json``) is read without any claim (no lock file is made for it);
2. otherwise the process claims the folder (waiting while another one trains it), then looks again: the run
   it waited for may have finished, and then it returns that result; else it trains (resuming from the
   checkpoints of a killed holder, if any);
3. the holder removes ``claim.lock`` after ``result.json`` is written and before it lets go.

Removing the lock file while holding it is safe here because every holder checks for a finished result
before training: a waiter still blocked on the removed file gets it next and finds the result, and a process
arriving later makes a new file, gets it at once and finds the result too. Under torchrun the ranks of one
job train together and only rank 0 writes, so :func:`claimed` is entered there by rank 0 only when the job has
one process; a multi-rank job relies on owning its keys (one job per cache at a time).

``filelock`` falls back to a marker file where the file system has no ``flock`` (some network mounts): a
holder killed there leaves ``claim.lock`` behind, and the log line of a waiting process names it to delete.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

from filelock import FileLock, Timeout

LOCK_NAME = "claim.lock"


@contextlib.contextmanager
def claimed(folder: Path, log=print):
    """Hold the claim on run folder ``folder`` (created if missing) for the ``with`` block, waiting while
    another process holds it (one log line, naming the lock file). Yields None."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / LOCK_NAME)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log(f"run {folder.name}: another process is training it; waiting for it to finish (the claim is "
            f"{folder / LOCK_NAME}, released when that process ends)")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def drop_claim_file(folder: Path) -> None:
    """Remove ``claim.lock`` from a run folder whose ``result.json`` is written (call it while holding the
    claim; see the module docstring for why that is safe)."""
    (folder / LOCK_NAME).unlink(missing_ok=True)
