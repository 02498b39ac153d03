"""The embedded benchmark: build it on disk in VOC + ScribbleSup layout, deterministically from a seed.

Training scenes use Fashion-MNIST's train split, validation scenes its t10k split, so no object
photo is shared. ``ensure_embedded`` builds once per configuration under ``data/`` (keyed by a
hash of the configuration) and returns the folder; a half-built folder is never used.
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from filelock import FileLock
from PIL import Image

from scribbleseg.constants import EMBEDDED_CLASSES
from scribbleseg.data.fashion import clean_objects, load_fashion_mnist
from scribbleseg.data.io import write_label
from scribbleseg.data.scenes import SceneConfig, compose_scene
from scribbleseg.data.scribblegen import ScribbleConfig, generate_strokes
from scribbleseg.data.strokes import write_xml
from scribbleseg.files import repo_root, stable_hash

SCRIBBLE_DIR = "scribble_annotation"
_SPLITS = {"train": ("train", 0), "val": ("test", 1)}  # split -> (Fashion-MNIST split, rng stream)


@dataclasses.dataclass(frozen=True)
class EmbeddedConfig:
    """Everything that determines the embedded dataset's files."""

    seed: int = 0
    n_train: int = 2000
    n_val: int = 400
    scene: SceneConfig = SceneConfig()
    scribble: ScribbleConfig = ScribbleConfig()

    def key(self) -> str:
        """Short stable hash of the configuration (names the dataset folder)."""

        return stable_hash(dataclasses.asdict(self))


def embedded_config(**kw) -> EmbeddedConfig:
    """Build an EmbeddedConfig from flat notebook params.

    Accepts ``seed, n_train, n_val`` and the fields of SceneConfig and ScribbleConfig by name
    (lists become tuples). Unknown names raise ValueError naming them.
    """
    scene_f = {f.name for f in dataclasses.fields(SceneConfig)}
    scrib_f = {f.name for f in dataclasses.fields(ScribbleConfig)}
    top_f = {"seed", "n_train", "n_val"}
    bad = set(kw) - scene_f - scrib_f - top_f
    if bad:
        raise ValueError(f"unknown dataset parameter(s) {sorted(bad)}; valid: {sorted(scene_f | scrib_f | top_f)}")
    tup = {k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()}
    return EmbeddedConfig(
        **{k: tup[k] for k in top_f & set(tup)},
        scene=SceneConfig(**{k: tup[k] for k in scene_f & set(tup)}),
        scribble=ScribbleConfig(**{k: tup[k] for k in scrib_f & set(tup)}),
    )


_WORK: dict = {}  # the object pool and config, inherited by forked workers


def _write_scene(i: int) -> tuple[str, int]:
    """Compose, scribble and write scene ``i`` of the split in ``_WORK``; returns (id, foreground px)."""
    root, split, cfg, pool, stream = (_WORK[k] for k in ("root", "split", "cfg", "pool", "stream"))
    rng = np.random.default_rng([cfg.seed, stream, i])
    img, cls_map, inst = compose_scene(rng, cfg.scene, *pool)
    strokes = generate_strokes(rng, cls_map, inst, cfg.scribble)
    sid = f"{split}_{i:05d}"
    Image.fromarray(img).save(root / "JPEGImages" / f"{sid}.jpg", quality=95)
    write_label(root / "SegmentationClass" / f"{sid}.png", cls_map)
    write_xml(root / SCRIBBLE_DIR / f"{sid}.xml", strokes, f"{sid}.jpg", cls_map.shape, EMBEDDED_CLASSES)
    return sid, int((cls_map > 0).sum())


def build_embedded(root: Path, cfg: EmbeddedConfig, workers: int | None = None) -> dict:
    """Write the dataset to ``root`` and return its statistics (also saved as ``root/meta.json``).

    Scenes are independent (one generator each), so ``workers`` processes (default: all cores)
    give byte-identical files to a serial build.
    """
    root = Path(root)
    for sub in ("JPEGImages", "SegmentationClass", SCRIBBLE_DIR, "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    stats = {"config": dataclasses.asdict(cfg), "classes": list(EMBEDDED_CLASSES)}
    workers = workers or os.cpu_count() or 1
    for split, n in (("train", cfg.n_train), ("val", cfg.n_val)):
        fm_split, stream = _SPLITS[split]
        _WORK.update(root=root, split=split, cfg=cfg, stream=stream,
                     pool=clean_objects(*load_fashion_mnist(fm_split)))
        if workers > 1 and n > 50:
            with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as ex:
                out = list(ex.map(_write_scene, range(n), chunksize=32))
        else:
            out = [_write_scene(i) for i in range(n)]
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(i for i, _ in out) + "\n")
        stats[f"{split}_foreground_fraction"] = sum(f for _, f in out) / max(n * cfg.scene.size ** 2, 1)
    _WORK.clear()
    (root / "meta.json").write_text(json.dumps(stats, indent=1, sort_keys=True))
    return stats


def embedded_root() -> Path:
    """Where embedded datasets live: ``$SCRIBBLESEG_DATA`` (make test: a fresh folder) or ``<repo>/data``."""
    return Path(os.environ.get("SCRIBBLESEG_DATA") or repo_root() / "data")


def ensure_embedded(cfg: EmbeddedConfig, data_root: Path | None = None) -> Path:
    """Return ``<data root>/embedded-<key>``, building it first if it is missing or half-built.

    Processes that need it at once (dask workers on a fresh machine) build it once: the builder holds an
    exclusive ``flock`` on ``embedded-<key>.lock`` beside it (:class:`filelock.FileLock`, dropped by the kernel
    if the builder dies), the others wait and then find it built; the lock file is removed once the dataset is
    in place (safe for the same reason as :mod:`scribbleseg.claim`'s: every holder looks before building)."""
    final = Path(data_root or embedded_root()) / f"embedded-{cfg.key()}"
    if (final / "meta.json").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    lock_path = final.with_name(final.name + ".lock")
    with FileLock(lock_path):
        if not (final / "meta.json").exists():  # not built by the process this one waited for
            tmp = final.with_name(final.name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            build_embedded(tmp, cfg)
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
        lock_path.unlink(missing_ok=True)
    return final
    tmp = final.with_name(final.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    build_embedded(tmp, cfg)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final
