"""Overhead of the Potts methods per training step, as ratios measured in one run.

    .venv/bin/python benchmarks/potts_overhead.py [--batch 16] [--repeats 5] [--threads 2]

SmallSegNet (width 16) on a batch of the embedded benchmark (128 x 128, stride-4 logits 32 x 32, K = 11).
Prints seconds per step and the ratio to pCE and to gradient descent on the DenseCRF loss (the
paper's "about 3 times slower" reference, App. B); writes results/potts/benchmark_overhead.json.
"""
from __future__ import annotations

import argparse
import json
import platform

import numpy as np
import torch

from scribbleseg.lab.benchmark import ratios, time_steps
from scribbleseg.files import repo_root
from scribbleseg.data.embedded import embedded_config
from scribbleseg.experiment import load_embedded
from scribbleseg.baseline import PartialCE
from scribbleseg.potts.method import PottsGD, SelfLabeling
from scribbleseg.train import TrainConfig, make_model, to_batch


def methods() -> dict:
    return {
        "pCE": PartialCE(),
        "GD, DenseCRF loss (BL, DN)": PottsGD("BL", "dense"),
        "GD, grid Potts (BL, NN)": PottsGD("BL", "grid"),
        "SL soft CD+CCE NN, 200 steps": SelfLabeling(steps=200),
        "SL soft CD+CCE NN, 100 steps": SelfLabeling(steps=100),
        "SL soft CD+CCE NN, 50 steps": SelfLabeling(steps=50),
        "SL soft Q+CCE DN, 50 steps": SelfLabeling("Q", neighbourhood="dense", steps=50),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_embedded(embedded_config(), "train")
    batch = to_batch(data, np.arange(args.batch), None, torch.device("cpu"))
    model = make_model(TrainConfig(width=16), data.num_classes)
    sec = time_steps(methods(), model, batch, repeats=args.repeats)
    vs_pce, vs_dense = ratios(sec, "pCE"), ratios(sec, "GD, DenseCRF loss (BL, DN)")
    device = f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}"
    print(f"device: {device}; batch {args.batch}; median of {args.repeats} steps")
    print(f"{'method':34s} {'s/step':>8s} {'x pCE':>7s} {'x DenseCRF GD':>14s}")
    for k in sec:
        print(f"{k:34s} {sec[k]:8.3f} {vs_pce[k]:7.2f} {vs_dense[k]:14.2f}")
    out = repo_root() / "results" / "potts" / "benchmark_overhead.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": device, "batch": args.batch, "seconds": sec, "ratio_to_pce": vs_pce,
                               "ratio_to_densecrf_gd": vs_dense}, indent=1))
    print("written", out.relative_to(repo_root()))


if __name__ == "__main__":
    main()
