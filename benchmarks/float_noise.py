"""How far a smoke training run moves under float32 rounding noise alone: the yardstick for issue 15's
"the smoke nbval references do not change beyond float noise".

A smoke run (embedded set 48 / 16 images, 3 epochs, batch 8, width 8, lr 0.01: ``params/smoke``) is short and
chaotic: its mIoU sits at 8-20 % and moves by whole points when a single rounding changes early on. This
script trains each method on that recipe per seed twice, as is and with every initial weight multiplied by
(1 + eps u), u ~ N(0, 1) drawn from its own seeded generator, eps = 2^-24 (half a float32 ulp: the size of one
rounding), and prints both mIoUs and the final losses (URSS stage 2 starts from the stage 1 run
of its own row: the eps run from the eps stage 1, whose weights it loads). Run it in two checkouts (the old and the new code)
with the same arguments: a code change is float noise when its mIoU moves against the old code are the size
of the eps row's moves within one checkout.

    PYTHONPATH=lib python benchmarks/float_noise.py OUT.json [--methods blpseg urss1 urss2] [--seeds 0 1 2]

Each run trains in a fresh temporary cache (nothing is reused, nothing is written to the results cache).
Takes about 20 s a run on this 2-core CPU.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

import scribbleseg.train as train_module
from scribbleseg.blpseg.method import BLPSeg
from scribbleseg.data.embedded import embedded_config
from scribbleseg.data.folder import ScribbleVariant
from scribbleseg.experiment import run_experiment
from scribbleseg.runtime import Runtime
from scribbleseg.train import TrainConfig
from scribbleseg.urss.method import URSS

EPS = 2.0 ** -24
DATA = embedded_config(n_train=48, n_val=16)


def methods() -> dict:
    """The methods whose training changed in issue 15 (urss2 starts from urss1's unperturbed run)."""
    return {"blpseg": BLPSeg(), "urss1": URSS(random_walk="paper", entropy="soft"),
            "urss2": URSS(random_walk="paper", entropy="soft", self_supervision="eigenspace", transform="random")}


def perturbed_make_model(eps: float, seed: int):
    """train's make_model with every floating parameter multiplied by (1 + eps u), u ~ N(0, 1)."""
    real = train_module.make_model

    def make(cfg, num_classes):
        model = real(cfg, num_classes)
        g = torch.Generator().manual_seed(1000 + seed)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1 + eps * torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype))
        return model
    return make


def run(method, seed: int, eps: float, root: Path, init=None):
    """One smoke run in its own folder under ``root``: (its RunResult, {"miou", "loss"})."""
    cfg = TrainConfig(epochs=3, batch_size=8, lr=0.01, width=8, seed=seed)
    real = train_module.make_model
    train_module.make_model = perturbed_make_model(eps, seed) if eps else real
    try:
        r = run_experiment(DATA, ScribbleVariant(), cfg, method, log=lambda *_: None, root=root, init=init,
                           runtime=Runtime.detect("cpu", workers=0))
    finally:
        train_module.make_model = real
    return r, {"miou": r.metrics["miou"], "loss": r.history[-1]["loss"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--methods", nargs="+", default=["blpseg", "urss1", "urss2"], choices=sorted(methods()))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = ap.parse_args()
    torch.set_num_threads(2)
    ms, rows = methods(), []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            stage1 = {}  # urss2 starts from urss1 of the same seed and eps (trained here if not listed before)
            for name in args.methods:
                if name == "urss2" and not stage1:
                    stage1 = {e: run(ms["urss1"], seed, e, Path(tmp) / f"urss1-{seed}-{e}")[0] for e in (0.0, EPS)}
                kept, plain = run(ms[name], seed, 0.0, Path(tmp) / f"{name}-{seed}", stage1.get(0.0) if name == "urss2"
                                  else None)
                kept_eps, noisy = run(ms[name], seed, EPS, Path(tmp) / f"{name}-{seed}-eps", stage1.get(EPS)
                                      if name == "urss2" else None)
                if name == "urss1":
                    stage1 = {0.0: kept, EPS: kept_eps}
                rows.append({"method": name, "seed": seed, "miou": plain["miou"], "miou_eps": noisy["miou"],
                             "loss": plain["loss"], "loss_eps": noisy["loss"]})
                print(f"{name:7s} seed {seed}: mIoU {plain['miou']:.3f}, with eps {noisy['miou']:.3f} (moved "
                      f"{noisy['miou'] - plain['miou']:+.3f}); loss {plain['loss']:.6f} / {noisy['loss']:.6f}",
                      flush=True)
    args.out.write_text(json.dumps({"eps": EPS, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
