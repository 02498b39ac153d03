"""One training loop for every method (nanoGPT-style: plain, explicit, resumable).

A method is a frozen dataclass with ``losses(model, batch) -> dict[str, Tensor]``; the loop sums
the terms, steps the optimiser and logs each term. Every epoch it appends a row to
``metrics.csv`` and writes ``ckpt.pt`` (model, optimiser, scheduler, epoch) atomically, so a run
killed at any point resumes from its last finished epoch and ends bit-identical to an
uninterrupted run on CPU (batch order and flips come from ``(seed, epoch)``, not from global state).
"""
from __future__ import annotations

import csv
import dataclasses
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from scribbleseg.data.folder import SplitData
from scribbleseg.models.build import build_model
from scribbleseg.data.voc import collate

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


def epoch_batches(data, cfg: TrainConfig, epoch: int, steps: int, order: np.ndarray, flips: np.ndarray,
                  device: torch.device, workers: int = 0):
    """The batches of one epoch, all drawn from (seed, epoch): deterministic and resumable.

    In-memory splits are cut in ``order`` with ``flips``; a Dataset goes through a DataLoader whose
    shuffling generator is seeded from (seed, epoch) (its transform draws from torch's RNG, which
    ``train`` seeds per epoch; with workers > 0 each worker is seeded by the DataLoader).
    Both yield ``steps`` batches: full ones, or one short batch when the data are smaller than a batch.
    Each batch carries "step", the global step (epoch * steps + index), for methods that change with time.
    """
    if isinstance(data, SplitData):
        for s in range(steps):
            idx = order[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            yield {**to_batch(data, idx, flips[idx], device), "step": epoch * steps + s}
        return

    loader = DataLoader(data, batch_size=cfg.batch_size, shuffle=True, drop_last=len(data) >= cfg.batch_size,
                        num_workers=workers,
                        collate_fn=collate, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
    for s, batch in enumerate(loader):
        yield {**{k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}, "step": epoch * steps + s}


def fit_epoch(model: torch.nn.Module, opt, batches, losses, sched=None, scaler=None, device_type: str = "cpu",
              on_step=None) -> list[dict[str, float]]:
    """One epoch of the optimisation step every training loop of the library shares (segmentation here,
    CDSP's stage-1 classifier, the Potts label-noise classifier): per batch, the loss terms
    ``losses(model, batch) -> dict`` (under autocast when ``scaler`` is enabled), their sum checked finite,
    back-propagated (through ``scaler``, a ``torch.amp.GradScaler``, if given), an optimiser step and a
    scheduler step (if ``sched``). Returns the terms of every step as floats; ``on_step(step)`` after each."""
    history = []
    amp = scaler is not None and scaler.is_enabled()
    for s, batch in enumerate(batches):
        with torch.autocast(device_type, enabled=amp):
            terms = losses(model, batch)
        loss = sum(terms.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {s}: {({k: float(v) for k, v in terms.items()})}; "
                                     "lower lr or check the method")
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt), scaler.update()
        else:
            loss.backward()
            opt.step()
        if sched is not None:
            sched.step()
        history.append({k: float(v.detach()) for k, v in terms.items()})
        if on_step is not None:
            on_step(s)
    return history


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(cfg: TrainConfig, method, train_data: SplitData | Dataset, run_dir: Path, progress=None,
          device: str | torch.device | None = None, log=print, workers: int = 0,
          init_state: dict | None = None) -> tuple[torch.nn.Module, list[dict]]:
    """Train ``method`` under ``cfg``; checkpoint and log into ``run_dir``; resume if a checkpoint exists.

    Args:
        cfg: hyperparameters. method: object with ``losses(model, batch) -> dict``.
        train_data: the training split in memory (the embedded set), or a Dataset of item dicts of one
            size (e.g. VOC with RandomScaleCropFlip), read through a DataLoader with ``workers`` processes.
        run_dir: folder for ``ckpt.pt`` and ``metrics.csv``.
        progress: a tqdm-like factory (``progress(total=..., desc=...)``), e.g. ``tqdm.auto.tqdm``; None = silent bar.
        device: torch device (default: CUDA if available, else CPU).
        log: one printed line per epoch goes through this.
        init_state: weights to start from (two-stage training: stage 2 starts from stage 1's model);
            a checkpoint in ``run_dir`` takes precedence (resume).

    Returns:
        (trained model in eval mode, metrics rows: one dict per epoch with the mean of each loss term).
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    n = len(train_data)
    steps_per_epoch = max(1, n // cfg.batch_size)
    model = make_model(cfg, len(train_data.class_names))
    if hasattr(method, "wrap"):  # methods with their own heads/modules (e.g. BLPSeg) wrap the network
        model = method.wrap(model, len(train_data.class_names))
    model = model.to(device)
    if init_state is not None:
        model.load_state_dict(init_state)
    opt, sched = make_optimizer(cfg, model, cfg.epochs * steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    rows, start = [], 0
    ckpt_path = run_dir / "ckpt.pt"
    if ckpt_path.exists():  # resume after a kill: nothing finished is lost
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ck["model"]), opt.load_state_dict(ck["opt"]), sched.load_state_dict(ck["sched"])
        rows, start = ck["rows"], ck["epoch"] + 1
        log(f"resuming {run_dir.name} after epoch {start}/{cfg.epochs}")
    for epoch in range(start, cfg.epochs):
        model.train()
        rng = np.random.default_rng([cfg.seed, epoch])
        order = rng.permutation(n)
        flips = rng.random(n) < 0.5 if cfg.flip else np.zeros(n, dtype=bool)  # (in-memory splits)
        torch.manual_seed(cfg.seed * 100_003 + epoch)  # dropout and any sampling inside methods
        t0 = time.time()
        bar = progress(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False) if progress else None
        batches = epoch_batches(train_data, cfg, epoch, steps_per_epoch, order, flips, device, workers)
        try:
            steps = fit_epoch(model, opt, batches, method.losses, sched, scaler, device.type,
                              (lambda s: bar.update(1)) if bar else None)
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
        _write_csv(run_dir / "metrics.csv", rows)
        _save_atomic({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                      "epoch": epoch, "rows": rows}, ckpt_path)
        done = round(20 * (epoch + 1) / cfg.epochs)
        log(f"epoch {epoch + 1:>3}/{cfg.epochs} [{'#' * done}{'.' * (20 - done)}] " + " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items() if k != "epoch"))
    model.eval()
    return model, rows


def _write_csv(path: Path, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
