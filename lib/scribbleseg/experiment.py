"""Run an experiment once: the results cache keyed by the resolved configuration.

An experiment is (dataset, scribble variant, training config, method). Its key is a hash of all
four, so a run shared by several tables (the pCE baseline appears in almost every ablation) trains
once. ``results/cache/<key>/`` holds ``config.json``, ``ckpt.pt`` and ``ckpt.prev.pt`` (the last two epochs,
deleted when the run is done), ``metrics.csv``, ``model.pt`` and ``result.json`` (written last: its presence
means the run is complete), each written atomically, and ``claim.lock`` while a process trains it
(:mod:`scribbleseg.claim`; left by a killed trainer, harmless) (:mod:`scribbleseg.files`). A killed run resumes from its
last epoch on the next call; a truncated or unreadable ``result.json`` or ``model.pt`` makes the run unfinished
(said once in the log), never a crash.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import zipfile
from functools import lru_cache
from pathlib import Path

import torch

from scribbleseg.claim import claimed, drop_claim_file
from scribbleseg.files import stable_hash
from scribbleseg.constants import EMBEDDED_CLASSES
from scribbleseg.data.embedded import EmbeddedConfig, embedded_root, ensure_embedded
from scribbleseg.data.folder import ScribbleVariant, SplitData, load_split
from scribbleseg.evaluate import evaluate
from scribbleseg import distributed
from scribbleseg.runtime import Runtime
from scribbleseg.train import TrainConfig, effective_shards, make_model, remove_checkpoints, train
from scribbleseg.data.voc import Normalize, RandomScaleCropFlip, VOCScribbleDataset
from scribbleseg.files import (UnreadableFile, atomic_torch_save, atomic_write_json, read_json, repo_root,
                               torch_load)

CACHE_VERSION = 1  # bump when a change to the engine invalidates cached results
# Fields added after runs were cached, {name: default}: they enter the key only when they differ from the
# default, so that older cache entries stay valid. A method lists its own in a ``KEY_OPTIONAL`` class attribute.
_OPTIONAL_TRAIN_FIELDS = {"weights": None, "shards": 1, "sync_bn": False}
_OPTIONAL_VARIANT_FIELDS = {"superpixels": 0}
_OPTIONAL_VOC_FIELDS = {"rotation": 0.0, "blur_sigma": 0.0, "pseudo_dir": None}


@dataclasses.dataclass(frozen=True)
class VOCData:
    """PASCAL VOC 2012 + SBD + ScribbleSup (see :mod:`scribbleseg.data.voc`) as an experiment's dataset.

    Attributes:
        root: folder holding ``VOC2012/`` and ``scribble_annotation/pascal_2012/``.
        train_split, val_split: ImageSets/Segmentation lists. crop, scale, rotation, blur_sigma:
            RandomScaleCropFlip (rotation and blur, URSS's augmentations, enter the key only when set).
        pseudo_dir: a folder of pseudo-label PNGs read with the training images (CDSP with BMP / AFA / SEAM
            labels); enters the key only when set.
    """

    root: str
    train_split: str = "trainaug"
    val_split: str = "val"
    crop: int = 321
    scale: tuple[float, float] = (0.5, 2.0)
    rotation: float = 0.0
    blur_sigma: float = 0.0
    pseudo_dir: str | None = None

    def key(self) -> str:
        return "voc-" + stable_hash(_key_fields(self, _OPTIONAL_VOC_FIELDS))


def load_data(dataset: EmbeddedConfig | VOCData, split: str, variant: ScribbleVariant = ScribbleVariant()):
    """The training ("train") or evaluation ("val") data of an experiment's dataset."""
    if isinstance(dataset, EmbeddedConfig):
        return load_embedded(dataset, split, variant)

    if split == "train":
        augment = RandomScaleCropFlip(dataset.crop, tuple(dataset.scale), rotation=dataset.rotation,
                                      blur_sigma=dataset.blur_sigma)
        return VOCScribbleDataset(dataset.root, dataset.train_split, dataclasses.replace(variant, clip=False),
                                  transform=augment, pseudo_dir=dataset.pseudo_dir)
    return VOCScribbleDataset(dataset.root, dataset.val_split, transform=Normalize(), with_scribbles=False)


def _key_fields(obj, optional: dict) -> dict:
    """The dataclass fields of ``obj`` without the ``optional`` {name: default} ones left at their default."""
    return {k: v for k, v in dataclasses.asdict(obj).items() if k not in optional or v != optional[k]}


def variant_spec(variant: ScribbleVariant) -> dict:
    """The scribble variant as it enters a cache key (also the key of CDSP's stage-1 classifiers)."""
    return _key_fields(variant, _OPTIONAL_VARIANT_FIELDS)


def _method_spec(method) -> dict:
    """The method's stable ``NAME`` (its module path when it has none) and fields (those in its ``KEY_OPTIONAL``
    only when not at their default): see :mod:`scribbleseg.method`. A method with ``key_spec(spec_of)`` gives
    its own, with ``spec_of`` for the methods it holds."""
    if hasattr(method, "key_spec"):  # a method made of methods (scribbleseg.combine.Combined)
        return method.key_spec(_method_spec)
    cls = type(method)
    fields = _key_fields(method, getattr(cls, "KEY_OPTIONAL", {}))
    return {"class": getattr(cls, "NAME", f"{cls.__module__}.{cls.__qualname__}"), **fields}


def experiment_key(dataset: EmbeddedConfig | VOCData, variant: ScribbleVariant, cfg: TrainConfig, method,
                   init: str | None = None, runtime: Runtime | None = None) -> tuple[str, dict]:
    """(key, resolved configuration) of an experiment; ``init`` is the key of the run it starts from.

    ``runtime`` (default :meth:`Runtime.detect`): its device type and AMP mode enter the key unless the run is a
    plain CPU one (:meth:`Runtime.key_fields`), so a CPU-trained run is never reused by a GPU run; ``cfg.shards``
    enters as the micro-batches actually used (at least one per torchrun rank); SyncBatchNorm only where it runs."""
    rt = runtime or Runtime.detect()
    sync_bn = cfg.sync_bn and rt.torch_device.type == "cuda" and distributed.world_size() > 1
    cfg = dataclasses.replace(cfg, shards=effective_shards(cfg), sync_bn=sync_bn)
    spec = {"version": CACHE_VERSION, "dataset": dataset.key(), "variant": variant_spec(variant),
            "train": _key_fields(cfg, _OPTIONAL_TRAIN_FIELDS), "method": _method_spec(method)}
    if rt.key_fields():
        spec["runtime"] = rt.key_fields()
    if init is not None:
        spec["init"] = init
    return stable_hash(spec, 16), spec


def load_embedded(dataset: EmbeddedConfig, split: str, variant: ScribbleVariant = ScribbleVariant()) -> SplitData:
    """Build (once: rank 0 under torchrun, while the others wait) and load a split of the embedded benchmark;
    memoised per process and data root (``$SCRIBBLESEG_DATA`` may change between calls, as in the tests)."""
    return _load_embedded(dataset, split, variant, embedded_root())


@lru_cache(maxsize=8)
def _load_embedded(dataset: EmbeddedConfig, split: str, variant: ScribbleVariant, root: Path) -> SplitData:
    """load_embedded's memo: ``root`` (the data root the dataset is built under, ensure_embedded's default)
    keys it only."""
    if distributed.world_size() > 1:
        if distributed.is_main():
            ensure_embedded(dataset)
        distributed.barrier()
    return load_split(ensure_embedded(dataset), split, EMBEDDED_CLASSES, variant)


@dataclasses.dataclass
class RunResult:
    """A finished run: its key, folder, evaluation (``metrics``), per-epoch ``history`` and ``seconds``."""

    key: str
    folder: Path
    spec: dict
    metrics: dict
    history: list
    seconds: float
    cached: bool

    def load_model(self, method=None) -> torch.nn.Module:
        """The trained network, in eval mode on CPU; pass the run's ``method`` when it wraps the network
        (e.g. BLPSeg), so that its heads are rebuilt before the weights are loaded."""
        num_classes = self.metrics.get("num_classes", len(EMBEDDED_CLASSES))
        model = make_model(TrainConfig(**{**self.spec["train"], "weights": None}), num_classes)
        if hasattr(method, "wrap"):
            model = method.wrap(model, num_classes)
        model.load_state_dict(torch_load(self.folder / "model.pt", map_location="cpu"))
        return model.eval()


def cache_root() -> Path:
    """``$SCRIBBLESEG_CACHE`` if set (``make test`` points it at a fresh folder, so that the nbval runs
    retrain with the current code), else ``<repo>/results/cache``. The key does not hash the code:
    after changing a loss or the engine, clear the cache (``make clean-cache``) or bump CACHE_VERSION."""
    return Path(os.environ.get("SCRIBBLESEG_CACHE") or repo_root() / "results" / "cache")


def finished_result(folder: Path, log=print) -> dict | None:
    """The stored result of the run in ``folder`` if it is complete and readable, else None (unfinished).

    Complete: ``result.json`` parses and holds metrics, history and seconds, and ``model.pt`` is whole (the
    size recorded in result.json, a readable zip). A truncated or unreadable one is reported in one line through
    ``log``; the caller then trains again, resuming from the checkpoints if any are left."""
    done, weights = folder / "result.json", folder / "model.pt"
    if not done.exists():
        return None
    try:
        r = read_json(done)
        if not isinstance(r, dict) or not {"metrics", "history", "seconds"} <= set(r):
            raise UnreadableFile(f"{done} lacks metrics, history or seconds")
        size = weights.stat().st_size if weights.exists() else None
        if size is None or size != r.get("model_bytes", size):
            raise UnreadableFile(f"{weights} is {'missing' if size is None else f'{size} bytes'}, "
                                 f"not the {r.get('model_bytes', '?')} bytes that were written")
        try:
            with zipfile.ZipFile(weights) as z:
                z.namelist()
        except (OSError, zipfile.BadZipFile) as e:
            raise UnreadableFile(f"{weights} is unreadable ({type(e).__name__}: {e})") from e
    except UnreadableFile as e:
        log(f"run {folder.name}: {e}; treating the run as unfinished (training it again, resuming if possible)")
        return None
    return r


def _ensure_config(folder: Path, spec: dict, log) -> None:
    """Rewrite ``config.json`` (the run's resolved configuration, for people and tools reading the cache) when it
    is missing, unreadable or not this run's (one log line); the run itself never depends on it."""
    path = folder / "config.json"
    try:
        if read_json(path) == json.loads(json.dumps(spec)):
            return
        problem = f"{path} does not match the run's key"
    except FileNotFoundError:
        problem = f"{path} is missing"
    except UnreadableFile as e:
        problem = str(e)
    log(f"run {folder.name}: {problem}; writing it again")
    atomic_write_json(folder / "config.json", spec, indent=1, sort_keys=True)


def _cached(key: str, folder: Path, spec: dict, r: dict, main: bool, log) -> RunResult:
    """The RunResult of a finished run read from ``folder`` (tidying what a kill after its result left)."""
    if main:
        remove_checkpoints(folder)  # left by a run killed after its result was written
        _ensure_config(folder, spec, log)
    return RunResult(key, folder, spec, r["metrics"], r["history"], r["seconds"], cached=True)


def run_experiment(dataset: EmbeddedConfig | VOCData, variant: ScribbleVariant, cfg: TrainConfig, method,
                   progress=None, log=print, root: Path | None = None, init: RunResult | None = None,
                   runtime: Runtime | None = None) -> RunResult:
    """Train and evaluate (embedded benchmark or VOC), or return the cached result.

    ``init``: a finished run whose model this one starts from (the second stage of two-stage
    training); its key enters this run's key. ``runtime``: where it runs (default :meth:`Runtime.detect`).
    Under torchrun every rank calls this; rank 0 writes the folder's files, the others wait for it. In one
    process the run is trained under the folder's claim (:mod:`scribbleseg.claim`): processes asked for the
    same key at once train it once, the others wait and read its result."""
    rt = runtime or Runtime.detect()
    key, spec = experiment_key(dataset, variant, cfg, method, init.key if init is not None else None, rt)
    folder = Path(root or cache_root()) / key
    done = folder / "result.json"
    main = distributed.is_main()
    log = log if main else (lambda *_: None)
    r = finished_result(folder, log)
    if r is not None:
        return _cached(key, folder, spec, r, main, log)
    one = distributed.world_size() == 1  # a multi-rank job owns its keys (scribbleseg.claim)
    with claimed(folder, log) if one else contextlib.nullcontext():  # one trainer per key
        r = finished_result(folder, lambda *_: None) if one else None
        if r is not None:  # another process finished it while this one waited for the claim
            drop_claim_file(folder)
            return _cached(key, folder, spec, r, main, log)
        if main:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_json(folder / "config.json", spec, indent=1, sort_keys=True)
        train_data = load_data(dataset, "train", variant)
        val_data = load_data(dataset, "val")  # evaluation always on the full masks
        log(f"run {key}: {type(method).__name__}{dataclasses.asdict(method)} seed={cfg.seed} "
            f"variant={dataclasses.asdict(variant)}")
        init_state = None if init is None else torch_load(init.folder / "model.pt", map_location="cpu")
        model, history = train(cfg, method, train_data, folder, progress=progress, log=log, init_state=init_state,
                               runtime=rt)
        seconds = sum(r["seconds"] for r in history)  # training time, resumed runs included
        metrics = evaluate(model, val_data)  # sharded over the ranks, confusion matrix all-reduced
        if main:  # model.pt, then result.json (its presence marks the run complete), each atomically
            atomic_torch_save(model.state_dict(), folder / "model.pt")
            atomic_write_json(done, {"metrics": metrics, "history": history, "seconds": seconds,
                                     "runtime": rt.record(), "model_bytes": (folder / "model.pt").stat().st_size},
                              indent=1)
            remove_checkpoints(folder)  # the final weights are in model.pt
            if one:
                drop_claim_file(folder)
        distributed.barrier()
    log(f"run {key}: val mIoU {metrics['miou']:.2f}")
    return RunResult(key, folder, spec, metrics, history, seconds, cached=False)
