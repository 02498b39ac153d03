"""One training loop for every method (nanoGPT-style: plain, explicit, resumable).

A method is a frozen dataclass with ``losses(model, batch) -> dict[str, Tensor]``; the loop sums
the terms, steps the optimiser and logs each term. Every epoch it appends a row to
``metrics.csv`` and writes ``ckpt.pt`` (model, optimiser, scheduler, epoch) atomically, keeping the previous
one as ``ckpt.prev.pt``, so a run killed at any point resumes from its last finished epoch (from the one
before if the last checkpoint is unreadable) and ends bit-identical to an uninterrupted run on CPU (batch
order and flips come from ``(seed, epoch)``, not from global state). Checkpoints hold tensors and plain
numbers only and load with ``weights_only=True``: one holding other pickled objects is refused.

Where it runs is a :class:`~scribbleseg.runtime.Runtime` (device, AMP, channels-last, loader workers); under
torchrun it is data-parallel through :mod:`scribbleseg.distributed` (rank 0 writes every file). Loss terms stay
on the device and are read once per ``sync_every`` steps (every step on CPU, where reading costs nothing).
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from scribbleseg import distributed
from scribbleseg.data.folder import SplitData
from scribbleseg.distributed import shard_slices
from scribbleseg.files import (UnreadableFile, atomic_torch_save, atomic_write_text, remove_stale_temps,
                               temp_path, torch_load)
from scribbleseg.loader import EpochBatches, make_loader, to_device
from scribbleseg.models.build import build_model
from scribbleseg.runtime import Runtime

MEAN, STD = 0.45, 0.25  # input normalisation of the embedded set's [0, 1] pixels


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run (all enter the results-cache key).

    Attributes:
        model, backbone, output_stride, width: the network (``width`` only for model="small").
        epochs, batch_size: training length; steps = epochs * (N // batch_size).
        optimizer: "adamw" or "sgd" (momentum 0.9). lr, weight_decay: as usual.
        schedule: "onecycle" (linear warm-up then cosine, the default), "poly" (power 0.9) or "constant".
        warmup: fraction of the steps spent warming up (onecycle).
        flip: random horizontal flips (in-memory splits; a Dataset brings its own transform).
        seed: seeds the initialisation, the batch order and the flips.
        weights: None (from scratch) or "imagenet" (torchvision backbone weights; not for model="small").
        shards: micro-batches per global batch, each with its own forward / backward (BatchNorm statistics and
            loss normalisation per micro-batch) and the gradients averaged: under torchrun each of N ranks takes
            shards / N of them (at least 1: N ranks mean shards >= N), in one process they run in turn (gradient
            accumulation), with the same numbers either way (BatchNorm's running statistics follow the first
            micro-batch of each step: rank 0's, whose buffers DDP broadcasts).
        sync_bn: SyncBatchNorm across ranks on CUDA (PyTorch's runs on GPUs only; a CPU / gloo run keeps each
            micro-batch's own statistics).
    """

    model: str = "small"
    backbone: str = "resnet18"
    output_stride: int = 16
    width: int = 16
    epochs: int = 12
    batch_size: int = 16
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 1e-4
    schedule: str = "onecycle"
    warmup: float = 0.1
    flip: bool = True
    seed: int = 0
    weights: str | None = None
    shards: int = 1
    sync_bn: bool = False


_SCHEDULES = {"onecycle": "one-cycle ({warm:.0%} linear warm-up, then cosine decay)", "poly": "poly decay (power 0.9)",
              "constant": "constant"}


def describe(cfg: TrainConfig, n_images: int | None = None) -> str:
    """The recipe of ``cfg`` in words, for a notebook to print (so its prose cannot drift from the config).
    ``n_images``: training-set size, to state the number of steps."""
    net = f"{cfg.model} width {cfg.width}" if cfg.model == "small" else f"{cfg.model} {cfg.backbone} OS{cfg.output_stride}"
    opt = {"adamw": "AdamW", "sgd": "SGD (momentum 0.9)"}.get(cfg.optimizer, cfg.optimizer)
    steps = f" ({cfg.epochs * (n_images // cfg.batch_size)} steps)" if n_images else ""
    return (f"{net}, {opt} lr {cfg.lr:g}, weight decay {cfg.weight_decay:g}, "
            f"{_SCHEDULES.get(cfg.schedule, cfg.schedule).format(warm=cfg.warmup)}, batch {cfg.batch_size}, "
            f"{cfg.epochs} epochs{steps}, flips {'on' if cfg.flip else 'off'}, "
            f"{'ImageNet weights' if cfg.weights else 'from scratch'}")


def make_model(cfg: TrainConfig, num_classes: int) -> torch.nn.Module:
    """The network of ``cfg``, initialised from ``cfg.seed``."""
    torch.manual_seed(cfg.seed)
    return build_model(cfg.model, num_classes, backbone=cfg.backbone, output_stride=cfg.output_stride,
                       weights=cfg.weights, width=cfg.width)


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module, total_steps: int):
    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    else:
        raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {cfg.optimizer!r}")
    warm = max(1, int(cfg.warmup * total_steps))

    def factor(step: int) -> float:
        if cfg.schedule == "constant":
            return 1.0
        if cfg.schedule == "poly":
            return (1 - min(step, total_steps - 1) / total_steps) ** 0.9
        if cfg.schedule == "onecycle":
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total_steps - warm))))
        raise ValueError(f"schedule must be 'onecycle', 'poly' or 'constant', got {cfg.schedule!r}")

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def to_batch(data: SplitData, idx: np.ndarray, flips: np.ndarray | None, device: torch.device) -> dict:
    """Cut a batch: image (N, 3, H, W) float normalised, rgb (N, 3, H, W) float colours on 0-255 (for
    affinities), scribble / mask (N, H, W) long, index (N,), flip (N,) bool (which samples are mirrored, for
    methods that look up per-image maps by index)."""
    img, mask, scrib = data.images[idx], data.masks[idx], data.scribbles[idx]
    if flips is not None and flips.any():
        img, mask, scrib = img.copy(), mask.copy(), scrib.copy()
        img[flips], mask[flips], scrib[flips] = img[flips, :, ::-1], mask[flips, :, ::-1], scrib[flips, :, ::-1]
    image = torch.from_numpy(np.ascontiguousarray(img)).permute(0, 3, 1, 2).float().div(255)  # (N, 3, H, W)
    return {"image": ((image - MEAN) / STD).to(device), "rgb": (image * 255).to(device),
            "mask": torch.from_numpy(np.ascontiguousarray(mask)).long().to(device),
            "scribble": torch.from_numpy(np.ascontiguousarray(scrib)).long().to(device),
            "index": torch.from_numpy(idx),
            "flip": torch.zeros(len(idx), dtype=torch.bool) if flips is None else torch.from_numpy(np.asarray(flips, bool))}


def step_batches(data, cfg: TrainConfig, epoch: int, steps: int, order: np.ndarray, flips: np.ndarray,
                 device: torch.device, shards: int = 1, loader=None, channels_last: bool = False):
    """The steps of one epoch, each a list of this rank's micro-batches, all drawn from (seed, epoch):
    deterministic, resumable, and independent of the number of processes and loader workers.

    A global batch of ``cfg.batch_size`` is cut into ``shards`` micro-batches (:func:`~scribbleseg.distributed.
    shard_slices`); with N ranks each takes shards / N of them. In-memory splits are cut in ``order`` with
    ``flips``; a Dataset comes through ``loader`` (:func:`scribbleseg.loader.make_loader`, whose sampler yields
    the same cut). Full batches, or one short batch when the data are smaller than a batch.
    Each micro-batch carries "step", the global step (epoch * steps + index), for methods that change with time.
    """
    if isinstance(data, SplitData):
        parts = shard_slices(min(cfg.batch_size, len(order)), shards, distributed.world_size(), distributed.rank())
        for s in range(steps):
            glob = order[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            yield [{**to_batch(data, glob[p], flips[glob[p]], device), "step": epoch * steps + s} for p in parts]
        return

    loader.batch_sampler.set_epoch(epoch)
    it = iter(loader)
    per = len(loader) // steps
    for s in range(steps):
        yield [{**to_device(next(it), device, channels_last), "step": epoch * steps + s} for _ in range(per)]


def _flush(pending: list, first_step: int) -> list[dict[str, float]]:
    """Read the pending steps' loss terms from the device in one transfer (mean over the ranks), checking them."""
    flat = torch.cat([vals for _, vals in pending])
    if distributed.world_size() > 1:
        flat = distributed.all_reduce_sum(flat.clone()) / distributed.world_size()
    values, out, i = flat.tolist(), [], 0
    for s, (keys, _) in enumerate(pending):
        out.append(dict(zip(keys, values[i:i + len(keys)])))
        i += len(keys)
        if not all(math.isfinite(v) for v in out[-1].values()):
            raise FloatingPointError(f"non-finite loss at step {first_step + s}: {out[-1]}; lower lr or check the method")
    return out


@contextlib.contextmanager
def frozen_running_stats(model: torch.nn.Module):
    """BatchNorm layers of ``model`` normalise with the batch's statistics but leave their running statistics
    unchanged (momentum 0) inside the block: the running statistics follow the first micro-batch of every step,
    on one process as under DDP, which broadcasts rank 0's buffers before every forward."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (mom, tracked) in zip(norms, saved):
            m.momentum = mom
            m.num_batches_tracked.copy_(tracked)


def fit_epoch(model: torch.nn.Module, opt, batches, losses, sched=None, scaler=None, autocast=None,
              on_step=None, sync_every: int = 1) -> list[dict[str, float]]:
    """One epoch of the optimisation step every training loop of the library shares (segmentation here,
    CDSP's stage-1 classifier, the Potts label-noise classifier): per step, the loss terms
    ``losses(model, batch) -> dict`` (under ``autocast``, a context factory, if given), back-propagated (through
    ``scaler``, a ``torch.amp.GradScaler``, if given), an optimiser step and a scheduler step (if ``sched``).

    A step is a batch dict or a list of micro-batches: each is back-propagated with weight 1 / len (gradient
    accumulation; under DDP only the last one all-reduces the gradients) and the step's terms are their mean;
    BatchNorm running statistics follow the first (:func:`frozen_running_stats`).
    The terms stay on the device and are read every ``sync_every`` steps and at the end (one host sync per
    interval; checked finite then, with the step named). Returns the terms of every step as floats (the mean
    over the ranks under DDP); ``on_step(step)`` after each.
    """
    history, pending, first = [], [], 0
    for s, step in enumerate(batches):
        micro = step if isinstance(step, list) else [step]
        opt.zero_grad(set_to_none=True)
        sums = {}
        for j, batch in enumerate(micro):
            sync = contextlib.nullcontext() if j == len(micro) - 1 or not hasattr(model, "no_sync") else model.no_sync()
            with sync, (frozen_running_stats(model) if j > 0 else contextlib.nullcontext()):
                with autocast() if autocast is not None else contextlib.nullcontext():
                    terms = losses(model, batch)
                loss = sum(terms.values()) / len(micro)
                (scaler.scale(loss) if scaler is not None else loss).backward()
            for k, v in terms.items():
                sums[k] = sums[k] + v.detach().double() if k in sums else v.detach().double()
        if len(micro) > 1:
            sums = {k: v / len(micro) for k, v in sums.items()}
        pending.append((list(sums), torch.stack(list(sums.values()))))  # float64, on the device
        if len(pending) >= sync_every:  # before the step: a non-finite loss never reaches the weights (sync_every 1)
            history += _flush(pending, first)
            pending, first = [], s + 1
        if scaler is not None:
            scaler.step(opt), scaler.update()
        else:
            opt.step()
        if sched is not None:
            sched.step()
        if on_step is not None:
            on_step(s)
    return history + (_flush(pending, first) if pending else [])


CKPT, CKPT_PREV = "ckpt.pt", "ckpt.prev.pt"  # this epoch's checkpoint and the previous one
UNREADABLE = ".unreadable"  # suffix of a checkpoint set aside because it could not be read
_PLAIN = (torch.Tensor, int, float, bool, str, type(None))


def _check_plain(obj, where: str = "checkpoint") -> None:
    """Raise TypeError unless ``obj`` is tensors, numbers, strings and None in dicts / lists / tuples: what
    ``torch.load(weights_only=True)`` reads back (caught when saving, not at the resume that would refuse it)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(k, where), _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
    elif not isinstance(obj, _PLAIN):
        raise TypeError(f"{where} is a {type(obj).__name__}: a checkpoint holds tensors, numbers, strings and "
                        "plain containers only (it is loaded with weights_only=True)")


def save_checkpoint(state: dict, run_dir: Path) -> None:
    """Write ``state`` as ``run_dir/ckpt.pt`` atomically, keeping the one it replaces as ``ckpt.prev.pt``.

    At every moment ``ckpt.pt`` is a whole checkpoint (the old one or the new one): the old one is first
    hard-linked to ``ckpt.prev.pt`` (renamed where the filesystem has no hard links: then a kill in between
    leaves the previous epoch only), then the new one is renamed over it (:func:`scribbleseg.files.atomic_open`)."""
    _check_plain(state)
    latest, prev = run_dir / CKPT, run_dir / CKPT_PREV
    # (the two are one file when the last save was killed after its link: prev already holds latest)
    if latest.exists() and not (prev.exists() and os.path.samefile(latest, prev)):
        link = temp_path(prev)
        try:
            os.link(latest, link)
            os.replace(link, prev)
        except OSError:
            link.unlink(missing_ok=True)
            os.replace(latest, prev)
        link.unlink(missing_ok=True)  # rename() leaves both names when they are one file already
    atomic_torch_save(state, latest)


def load_checkpoint(run_dir: Path, map_location=None, log=print, discard: bool = False) -> dict | None:
    """The newest readable checkpoint of ``run_dir`` (``ckpt.pt``, else ``ckpt.prev.pt``), or None.

    A truncated or corrupt one is skipped with one warning line through ``log`` (the previous epoch is used, or
    training starts over); one holding pickled objects other than tensors and plain data is refused
    (:class:`scribbleseg.files.UnsafeFile`: loading it could run code). ``discard``: rename an unreadable one
    to ``<name>.unreadable`` (the writing rank only; :func:`remove_checkpoints` deletes it with the others)."""
    run_dir = Path(run_dir)
    for name in (CKPT, CKPT_PREV):
        path = run_dir / name
        if not path.exists():
            continue
        try:
            ck = torch_load(path, map_location)
            if not isinstance(ck, dict) or not {"model", "opt", "sched", "epoch", "rows"} <= set(ck):
                raise UnreadableFile(f"{path} is not a checkpoint of this training loop")
        except FileNotFoundError:  # set aside by rank 0 meanwhile (below)
            continue
        except UnreadableFile as e:
            fallback = name == CKPT and (run_dir / CKPT_PREV).exists()
            log(f"warning: {e}; " + (f"falling back to the previous epoch's {CKPT_PREV}" if fallback else
                                     "no usable checkpoint: training starts over"))
            if discard:  # so that the next save does not keep it as the previous checkpoint
                with contextlib.suppress(OSError):
                    os.replace(path, path.with_name(path.name + UNREADABLE))
            continue
        return ck
    return None


def remove_checkpoints(run_dir: Path) -> None:
    """Delete both checkpoints of ``run_dir`` and the temporaries of killed writers (the run is finished)."""
    for name in (CKPT, CKPT_PREV, CKPT + UNREADABLE, CKPT_PREV + UNREADABLE):
        (Path(run_dir) / name).unlink(missing_ok=True)
    remove_stale_temps(run_dir)


def effective_shards(cfg: TrainConfig) -> int:
    """Micro-batches per global batch: ``cfg.shards``, at least one per process (torchrun ranks)."""
    return max(cfg.shards, distributed.world_size())


def train(cfg: TrainConfig, method, train_data: SplitData | Dataset, run_dir: Path, progress=None,
          device: str | torch.device | None = None, log=print, workers: int | None = None,
          init_state: dict | None = None, runtime: Runtime | None = None) -> tuple[torch.nn.Module, list[dict]]:
    """Train ``method`` under ``cfg``; checkpoint and log into ``run_dir``; resume if a checkpoint exists.

    Args:
        cfg: hyperparameters. method: object with ``losses(model, batch) -> dict`` (and optionally ``wrap`` and
            ``prepare_item``, see :mod:`scribbleseg.method`).
        train_data: the training split in memory (the embedded set), or a Dataset of item dicts of one
            size (e.g. VOC with RandomScaleCropFlip), read through :func:`scribbleseg.loader.make_loader`.
        run_dir: folder for ``ckpt.pt`` and ``metrics.csv`` (written by rank 0 only under torchrun).
        progress: a tqdm-like factory (``progress(total=..., desc=...)``), e.g. ``tqdm.auto.tqdm``; None = silent bar.
        device, workers: shorthands for ``runtime`` (:meth:`Runtime.detect`: CUDA if available, AMP on CUDA,
            min(8, cores) loader workers).
        log: one printed line per epoch goes through this (rank 0 only).
        init_state: weights to start from (two-stage training: stage 2 starts from stage 1's model);
            a checkpoint in ``run_dir`` takes precedence (resume).

    Under torchrun (:mod:`scribbleseg.distributed`) ``cfg.batch_size`` is the global batch: each of the N ranks
    takes batch_size / N per step (``shards`` micro-batches in all), so the learning rate needs no rescaling.

    Returns:
        (trained model in eval mode, unwrapped from DDP; metrics rows: one dict per epoch with the mean of each term).
    """
    rt = runtime or Runtime.detect(device, **({} if workers is None else {"workers": workers}))
    dev, main = rt.torch_device, distributed.is_main()
    log = log if main else (lambda *_: None)
    run_dir = Path(run_dir)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    n, shards = len(train_data), effective_shards(cfg)
    steps_per_epoch = max(1, n // cfg.batch_size)
    model = make_model(cfg, len(train_data.class_names))
    if hasattr(method, "wrap"):  # methods with their own heads/modules (e.g. BLPSeg) wrap the network
        model = method.wrap(model, len(train_data.class_names))
    model = rt.apply(model)
    if init_state is not None:
        model.load_state_dict(init_state)
    opt, sched = make_optimizer(cfg, model, cfg.epochs * steps_per_epoch)
    scaler = rt.scaler()
    rows, start = [], 0
    if main:
        remove_stale_temps(run_dir)  # left by a writer killed mid-write
    ck = load_checkpoint(run_dir, dev, log, discard=main)  # resume after a kill: nothing finished is lost
    if ck is not None:
        model.load_state_dict(ck["model"]), opt.load_state_dict(ck["opt"]), sched.load_state_dict(ck["sched"])
        if scaler is not None and ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        rows, start = ck["rows"], ck["epoch"] + 1
        log(f"resuming {run_dir.name} after epoch {start}/{cfg.epochs}")
    net = distributed.wrap_ddp(model, dev, cfg.sync_bn)
    loader = None if isinstance(train_data, SplitData) else make_loader(
        train_data, EpochBatches(n, cfg.batch_size, steps_per_epoch, cfg.seed, shards, distributed.world_size(),
                                 distributed.rank()), getattr(method, "prepare_item", None), rt.workers,
        pin_memory=dev.type == "cuda")
    sync_every = 1 if dev.type == "cpu" else 50
    for epoch in range(start, cfg.epochs):
        net.train()
        rng = np.random.default_rng([cfg.seed, epoch])
        order = rng.permutation(n)  # = loader.epoch_order(n, cfg.seed, epoch)
        flips = rng.random(n) < 0.5 if cfg.flip else np.zeros(n, dtype=bool)  # (in-memory splits)
        torch.manual_seed(cfg.seed * 100_003 + epoch)  # dropout and any sampling inside methods
        t0 = time.time()
        bar = progress(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False) \
            if progress and main else None
        batches = step_batches(train_data, cfg, epoch, steps_per_epoch, order, flips, dev, shards, loader,
                               rt.channels_last)
        try:
            steps = fit_epoch(net, opt, batches, method.losses, sched, scaler, rt.autocast,
                              (lambda s: bar.update(1)) if bar else None, sync_every)
        except FloatingPointError as e:
            raise FloatingPointError(f"epoch {epoch + 1}: {e}") from None
        if bar:
            bar.close()
        sums = {}
        for terms in steps:
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
        row = {"epoch": epoch + 1, "lr": sched.get_last_lr()[0], "seconds": round(time.time() - t0, 2)}
        row.update({k: v / steps_per_epoch for k, v in sums.items()})
        row["loss"] = sum(v / steps_per_epoch for v in sums.values())
        rows.append(row)
        if main:
            _write_csv(run_dir / "metrics.csv", rows)
            save_checkpoint({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                             "scaler": scaler.state_dict() if scaler is not None else {},
                             "epoch": epoch, "rows": rows}, run_dir)
        distributed.barrier()
        done = round(20 * (epoch + 1) / cfg.epochs)
        log(f"epoch {epoch + 1:>3}/{cfg.epochs} [{'#' * done}{'.' * (20 - done)}] " + " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items() if k != "epoch"))
    model.eval()
    return model, rows


def _write_csv(path: Path, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())
