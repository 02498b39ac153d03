"""Time training steps of several methods on one batch, in one run, and report ratios.

Speed is measured, never asserted: absolute seconds depend on the machine and its load, ratios
measured in the same process on the same batch are what a reader can compare (e.g. the Potts paper's
"200 solver steps make training about 3x slower than SGD with a dense CRF loss", App. B).
Each method runs ``warmup`` untimed steps, then ``repeats`` timed ones, interleaved round-robin so
that a change in machine load hits all methods alike; the median is reported.
"""
from __future__ import annotations

import contextlib
import copy
import statistics
import time

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(methods: dict, model: torch.nn.Module, batch: dict, repeats: int = 5, warmup: int = 1,
               lr: float = 1e-4, runtime=None) -> dict[str, float]:
    """Median seconds of one training step (forward, the method's losses, backward, SGD step) per method.

    Args:
        methods: name -> object with ``losses(model, batch) -> dict``.
        model: the network (copied per method, so every method starts from the same weights), or a dict
            name -> network (e.g. each wrapped by its method's ``wrap``).
        batch: one training batch (see :func:`scribbleseg.train.to_batch`).
        repeats, warmup: timed and untimed steps per method.
        runtime: a :class:`~scribbleseg.runtime.Runtime` whose autocast and GradScaler the steps use (default: none);
            on CUDA every timed step ends with a synchronize, so the time is the GPU's.

    Returns:
        name -> median seconds per step.
    """
    nets = {k: copy.deepcopy(model[k] if isinstance(model, dict) else model).train() for k in methods}
    opts = {k: torch.optim.SGD(nets[k].parameters(), lr=lr) for k in methods}
    device = next(next(iter(nets.values())).parameters()).device
    autocast = runtime.autocast if runtime is not None else contextlib.nullcontext
    scaler = runtime.scaler() if runtime is not None else None
    times: dict[str, list[float]] = {k: [] for k in methods}
    for r in range(warmup + repeats):
        for k, m in methods.items():
            synchronize(device)
            t0 = time.perf_counter()
            with autocast():
                loss = sum(m.losses(nets[k], batch).values())
            opts[k].zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opts[k]), scaler.update()
            else:
                loss.backward()
                opts[k].step()
            synchronize(device)
            if r >= warmup:
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def wrapped(methods: dict, model: torch.nn.Module, num_classes: int) -> dict[str, torch.nn.Module]:
    """name -> the network each method trains: ``model`` wrapped by the method's ``wrap`` on its own copy (e.g.
    BLPSeg's LAM head), or ``model`` itself; every method starts from the same initial weights."""
    return {k: m.wrap(copy.deepcopy(model), num_classes) if hasattr(m, "wrap") else model for k, m in methods.items()}


def ratios(seconds: dict[str, float], reference: str) -> dict[str, float]:
    """Each method's time divided by ``reference``'s."""
    return {k: v / seconds[reference] for k, v in seconds.items()}
