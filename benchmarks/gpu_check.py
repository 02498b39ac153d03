"""Everything a GPU must show, in one run: smoke training of every method on CUDA with AMP, the paper profile's
step time, images/s and peak memory per method, the cheap wins (AMP modes, channels-last, cuDNN benchmark), the
data-loading wait with 0 and N workers, and a 1-GPU torchrun launch. Run through benchmarks/gpu_check.sh.

    .venv/bin/python benchmarks/gpu_check.py [--batch 8] [--out benchmarks/results/gpu_check.json]
    .venv/bin/python benchmarks/gpu_check.py --quick --device cpu     # the same code path in a minute, on CPU

Writes one JSON (device named, torch version) and prints a line per measurement.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import data_loading
import paper_cases

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import ddp_script  # noqa: E402  (the torchrun test's method list: both checks train the same methods)
from scribbleseg.data.folder import ScribbleVariant
from scribbleseg.data.voc import collate
from scribbleseg.experiment import load_embedded, run_experiment
from scribbleseg.files import repo_root
from scribbleseg.lab.benchmark import time_steps
from scribbleseg.loader import to_device
from scribbleseg.runtime import Runtime
from scribbleseg.train import TrainConfig, make_model

ROOT = repo_root()
TINY = ddp_script.DATA


def smoke(rt: Runtime, log) -> dict:
    """Every method (the torchrun test's list) trained 2 epochs on a tiny embedded set under ``rt``: finite?"""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SCRIBBLESEG_DATA"] = os.environ["SCRIBBLESEG_CACHE"] = tmp
        split = load_embedded(TINY, "train")
        cfg = TrainConfig(width=8, epochs=2, batch_size=8, lr=1e-2)
        runs = {}
        for name, m in ddp_script.methods(split).items():
            t0 = time.perf_counter()
            init = runs.get("URSS stage 1") if name == "URSS stage 2" else None
            runs[name] = r = run_experiment(TINY, ScribbleVariant(), cfg, m, log=lambda *_: None, runtime=rt, init=init)
            finite = all(math.isfinite(v) for h in r.history for k, v in h.items() if k not in ("epoch", "lr"))
            out[name] = {"finite": finite, "miou": r.metrics["miou"], "seconds": time.perf_counter() - t0}
            log(f"smoke {name}: finite={finite} mIoU {r.metrics['miou']:.2f} ({out[name]['seconds']:.1f} s)")
    return out


def paper_batch(case, batch: int, rt: Runtime, crop: int | None = None) -> dict:
    data = paper_cases.dataset(dataclasses.replace(case, crop=crop or case.crop), batch)
    items = [data[i] for i in range(batch)]
    prepare = getattr(case.method, "prepare_item", None)
    if prepare is not None:
        items = [{**it, **prepare(it)} for it in items]
    return {**to_device(collate(items), rt.torch_device, rt.channels_last), "step": 0}


def paper_steps(names, batch: int, rt: Runtime, log, repeats: int = 3, small: bool = False) -> dict:
    """Seconds per step, images/s and peak memory of each case's real network on its crop."""
    out = {}
    for name in names:
        case = paper_cases.CASES[name]
        cfg = paper_cases.case_config(case, batch)
        if small:  # --quick: the CPU model and a small crop, to check the code path only
            cfg, case = dataclasses.replace(cfg, model="small", width=8), dataclasses.replace(case, crop=64)
        model = make_model(cfg, 21)
        if hasattr(case.method, "wrap"):
            model = case.method.wrap(model, 21)
        model = rt.apply(model)
        b = paper_batch(case, batch, rt)
        if rt.torch_device.type == "cuda":
            torch.cuda.empty_cache(), torch.cuda.reset_peak_memory_stats(rt.torch_device)
        try:
            s = time_steps({name: case.method}, model, b, repeats=repeats, warmup=1, runtime=rt)[name]
            peak = torch.cuda.max_memory_allocated(rt.torch_device) / 2**30 if rt.torch_device.type == "cuda" else None
            out[name] = {"s_per_step": s, "images_per_s": batch / s, "peak_gib": peak}
            log(f"paper step {name} [{rt.amp}{', channels-last' if rt.channels_last else ''}"
                f"{', cudnn.benchmark' if rt.cudnn_benchmark else ''}]: {s:.3f} s/step, {batch / s:.1f} img/s, "
                f"peak {peak if peak is None else round(peak, 2)} GiB")
        except (RuntimeError, ValueError) as e:  # e.g. out of memory: reported, the rest still runs
            out[name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
            log(f"paper step {name}: {out[name]['error']}")
        del model, b
    return out


def torchrun_launch(device: str, log) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "SCRIBBLESEG_DATA": tmp, "SCRIBBLESEG_CACHE": tmp}
        cmd = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node=1",
               str(ROOT / "tests" / "ddp_script.py"), f"{tmp}/out.json", "--device", device]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        ok = r.returncode == 0
        res = json.loads(Path(f"{tmp}/out.json").read_text()) if ok else {"stderr": r.stderr[-2000:]}
    log(f"torchrun 1 process on {device}: {'ok' if ok else 'FAILED'} ({time.perf_counter() - t0:.0f} s)")
    return {"ok": ok, "seconds": time.perf_counter() - t0, **{k: res.get(k) for k in ("metrics", "stderr") if k in res}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="small model and crop, pCE only: check the code path")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu_check.json")
    args = ap.parse_args()
    t_start = time.perf_counter()
    report = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": args.quick, "batch": args.batch}

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.0f} s] {line}", flush=True)

    def save() -> None:  # after every part: a timeout still leaves what was measured
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1, default=str))

    rt = Runtime.detect(args.device, workers=0)
    report["runtime"] = rt.record()
    log(f"device {report['runtime']['device_name']}, torch {torch.__version__}, AMP {rt.amp}")
    report["smoke"] = smoke(rt, log)
    save()
    names = [n for n in paper_cases.CASES if not args.quick or n.startswith("pCE")]
    report["paper_steps"] = paper_steps(names, args.batch, rt, log, small=args.quick)
    save()
    base = names[0]  # the cheap wins, measured on pCE's network (item 8 of issue 13)
    variants = {"amp off": dict(amp="off"), "fp16": dict(amp="fp16"), "bf16": dict(amp="bf16"),
                "fp16 + channels-last": dict(amp="fp16", channels_last=True),
                "fp16 + cudnn.benchmark": dict(amp="fp16", cudnn_benchmark=True)}
    report["variants"] = {v: paper_steps([base], args.batch, dataclasses.replace(rt, **kw), log, small=args.quick)[base]
                          for v, kw in variants.items()}
    save()
    case = paper_cases.CASES[next(n for n in paper_cases.CASES if n.startswith("URSS stage 1"))]
    if args.quick:
        case = dataclasses.replace(case, cfg=dataclasses.replace(case.cfg, model="small", width=8), crop=64)
    report["data_loading"] = {}
    for w in (0, min(8, os.cpu_count() or 1)):
        r = data_loading.measure(case, args.batch, 3, w, rt)
        report["data_loading"][f"workers {w}"] = r
        log(f"data loading URSS stage 1, workers {w}: wait {r['wait_s']:.3f} s, compute {r['compute_s']:.3f} s")
    save()
    report["torchrun"] = torchrun_launch(str(rt.torch_device), log)
    report["seconds"] = time.perf_counter() - t_start
    save()
    log(f"written {args.out}")


if __name__ == "__main__":
    main()
