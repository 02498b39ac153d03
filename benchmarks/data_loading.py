"""Data loading against the training step, paper profile, synthetic VOC-sized data, workers 0 and N, one run.

    .venv/bin/python benchmarks/data_loading.py [--cases pCE URSS CDSP] [--batch 16] [--steps 6] [--workers 0 8]

For each case (benchmarks/paper_cases.py: the paper profile's network and crop per method) and each worker
count, it trains ``steps`` steps the way :func:`scribbleseg.train.train` does (the loader of
:mod:`scribbleseg.loader`, the method's per-item work in the workers, the runtime's AMP) and splits every step's
wall time into the wait for the next batch and the compute (forward, losses, backward, optimiser step; the
device is synchronised). The first step is a warm-up (worker start, cuDNN) and is not counted. Prints medians
and the wait as a fraction of the compute; writes ``benchmarks/results/data_loading_<device>.json``.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

import paper_cases
from scribbleseg.files import repo_root
from scribbleseg.lab.benchmark import synchronize
from scribbleseg.loader import EpochBatches, make_loader, to_device
from scribbleseg.runtime import Runtime, default_workers
from scribbleseg.train import make_model


def measure(case, batch: int, steps: int, workers: int, rt: Runtime) -> dict:
    cfg = paper_cases.case_config(case, batch)
    data = paper_cases.dataset(case, batch * (steps + 1))
    model = make_model(cfg, len(data.class_names))
    if hasattr(case.method, "wrap"):
        model = case.method.wrap(model, len(data.class_names))
    model = rt.apply(model).train()
    opt, scaler = torch.optim.SGD(model.parameters(), lr=1e-4), rt.scaler()
    loader = make_loader(data, EpochBatches(len(data), batch, steps + 1, seed=0), getattr(case.method, "prepare_item", None),
                         workers, pin_memory=rt.torch_device.type == "cuda")
    it, waits, computes = iter(loader), [], []
    for s in range(steps + 1):
        t0 = time.perf_counter()
        b = {**to_device(next(it), rt.torch_device, rt.channels_last), "step": s}
        synchronize(rt.torch_device)
        t1 = time.perf_counter()
        with rt.autocast():
            loss = sum(case.method.losses(model, b).values())
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt), scaler.update()
        synchronize(rt.torch_device)
        if s > 0:
            waits.append(t1 - t0), computes.append(time.perf_counter() - t1)
    wait, compute = statistics.median(waits), statistics.median(computes)
    return {"workers": workers, "wait_s": wait, "compute_s": compute, "wait_over_compute": wait / compute,
            "images_per_s": batch / (wait + compute)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="*", default=["pCE", "URSS stage 1", "CDSP"],
                    help="substrings of benchmarks/paper_cases.py's case names")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--workers", type=int, nargs="*", default=[0, default_workers()])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rt = Runtime.detect()
    names = [n for n in paper_cases.CASES if any(c in n for c in args.cases)]
    rows = []
    for name in names:
        for w in args.workers:
            r = {"case": name, **measure(paper_cases.CASES[name], args.batch, args.steps, w, rt)}
            rows.append(r)
            print(f"{name:55s} workers {w}: wait {r['wait_s']:.3f} s, compute {r['compute_s']:.3f} s "
                  f"(wait/compute {r['wait_over_compute']:.2f}), {r['images_per_s']:.2f} img/s", flush=True)
    device = rt.record()
    out = repo_root() / "benchmarks" / "results" / (args.out or f"data_loading_{rt.torch_device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": device, "machine": platform.processor() or platform.machine(),
                               "threads": torch.get_num_threads(), "batch": args.batch, "steps": args.steps,
                               "rows": rows}, indent=1))
    print("written", out)


if __name__ == "__main__":
    main()
