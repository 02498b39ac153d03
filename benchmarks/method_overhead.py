"""Every method's training step as a ratio to a pCE step, measured in one run (issue 15).

    .venv/bin/python benchmarks/method_overhead.py [--batch 16] [--repeats 3] [--threads 2] [--paper] [--paper-batch 2]

Part 1 (the cpu profile): SmallSegNet width 16 on one batch of the embedded benchmark (128 x 128, stride-4 logits
32 x 32, K = 11); every method of the four papers with its cpu-profile options, each costly option, and full-mask
CE, timed round-robin (:func:`scribbleseg.lab.benchmark.time_steps`: median of ``repeats`` after one warm-up).
Part 2 (``--paper``): one step per method on its paper-profile network and crop (benchmarks/paper_cases.py,
synthetic VOC-sized data), as a ratio to pCE on the same network where the method's network is pCE's.
Writes ``results/benchmark_method_overhead.json`` (device named) and prints the tables.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform

import numpy as np
import torch

import paper_cases
from gpu_check import paper_batch
from scribbleseg.baseline import PartialCE
from scribbleseg.blpseg.method import BLPSeg
from scribbleseg.cdsp.method import CDSP
from scribbleseg.cdsp.store import PseudoLabels
from scribbleseg.data.embedded import embedded_config
from scribbleseg.experiment import load_embedded
from scribbleseg.files import repo_root
from scribbleseg.lab.benchmark import ratios, time_steps, wrapped
from scribbleseg.potts.method import PottsGD, SelfLabeling
from scribbleseg.potts.solver import SolverConfig
from scribbleseg.runtime import Runtime
from scribbleseg.train import TrainConfig, make_model, to_batch
from scribbleseg.urss.method import URSS


@dataclasses.dataclass(frozen=True)
class AutogradSolver(SelfLabeling):
    """SelfLabeling with the solver's autograd gradient (``SolverConfig(gradient="autograd")``): the reference
    the hand-written gradient replaced, timed beside it."""

    def solver(self) -> SolverConfig:
        return dataclasses.replace(super().solver(), gradient="autograd")


def cpu_methods(pseudo: PseudoLabels) -> dict:
    """name -> (method, the paper's own overhead factor where it states one, else None)."""
    ur = dict(random_walk="paper", entropy="soft")
    return {
        "pCE": (PartialCE(), None),
        "full-mask CE": (PartialCE("mask"), None),
        "BLPSeg, BLP loss, no LAM": (BLPSeg(lam=False, sigma=2.0), None),
        "BLPSeg, dense LAM + BLP (cpu profile)": (BLPSeg(sigma=2.0), None),
        "BLPSeg, local LAM + BLP": (BLPSeg(sigma=2.0, lam_impl="local"), None),
        "URSS stage 1, soft entropy + random walk (cpu profile)": (URSS(**ur), None),
        "URSS stage 1, released": (URSS.released(), None),
        "URSS stage 2, eigenspace (cpu profile)": (URSS(**ur, self_supervision="eigenspace", transform="random"),
                                                   None),
        "CDSP, all terms (cpu profile)": (CDSP(pseudo=pseudo), None),
        "CDSP, released": (CDSP.released(pseudo=pseudo), None),
        "Potts GD, grid": (PottsGD("BL", "grid"), None),
        "Potts GD, dense (cpu profile)": (PottsGD("BL", "dense"), None),
        "Potts soft self-labelling, 50 steps (cpu profile)": (SelfLabeling(steps=50), 3.0),
        "Potts soft self-labelling, 50 steps, autograd solver (the replaced one)": (AutogradSolver(steps=50), 3.0),
        "Potts soft self-labelling, 200 steps (paper)": (SelfLabeling(steps=200), 3.0),
        "Potts soft self-labelling, dense, 50 steps": (SelfLabeling("Q", neighbourhood="dense", steps=50), 3.0),
    }


def markdown(rows: list[dict]) -> str:
    """The README's table of the cpu-profile rows."""
    lines = ["| method (cpu-profile options unless named) | s / step | × pCE | paper |", "|---|---|---|---|"]
    for r in rows:
        paper = f"about {r['paper_x']:g}x" if r["paper_x"] else ""
        lines.append(f"| {r['method']} | {r['s_per_step']:.3f} | {r['x_pce']:.2f} | {paper} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--paper", action="store_true", help="also one step per method on its paper-profile network")
    ap.add_argument("--paper-batch", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_embedded(embedded_config(), "train")
    batch = to_batch(data, np.arange(args.batch), None, torch.device("cpu"))
    methods = cpu_methods(PseudoLabels.from_array(data.masks, data.images))
    base = make_model(TrainConfig(width=16), data.num_classes)
    timed = {k: m for k, (m, _) in methods.items()}
    sec = time_steps(timed, wrapped(timed, base, data.num_classes), batch, repeats=args.repeats)
    vs = ratios(sec, "pCE")
    device = f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}"
    print(f"cpu profile: {device}; SmallSegNet width 16, batch {args.batch}; median of {args.repeats} steps")
    rows = []
    for k, (_, paper) in methods.items():
        rows.append({"method": k, "s_per_step": sec[k], "x_pce": vs[k], "paper_x": paper})
        print(f"{k:58s} {sec[k]:7.3f} s {vs[k]:6.2f}x" + (f"  (paper about {paper:g}x)" if paper else ""))
    report = {"device": device, "batch": args.batch, "repeats": args.repeats, "cpu_profile": rows}
    print("\nREADME table:\n" + markdown(rows))
    if args.paper:
        rt, paper_rows = Runtime.detect(workers=0), []
        pce_s = {}
        for name, case in paper_cases.CASES.items():
            cfg = paper_cases.case_config(case, args.paper_batch)
            net = rt.apply(make_model(cfg, 21))
            pair = {name: case.method, "pCE": PartialCE()}
            nets = {k: rt.apply(n) for k, n in wrapped(pair, net, 21).items()}
            b = paper_batch(case, args.paper_batch, rt)
            s = time_steps(pair, nets, b, repeats=1, warmup=1, runtime=rt)
            key = (cfg.model, cfg.backbone, case.crop)
            pce_s[key] = s["pCE"]
            paper_rows.append({"method": name, "network": list(key), "s_per_step": s[name], "pce_s": s["pCE"],
                               "x_pce": s[name] / s["pCE"]})
            print(f"paper profile {name:55s} {s[name]:7.2f} s, pCE on the same network {s['pCE']:6.2f} s: "
                  f"{s[name] / s['pCE']:5.2f}x", flush=True)
        report["paper_profile"] = {"device": rt.record(), "batch": args.paper_batch, "rows": paper_rows}
    out = repo_root() / "results" / "benchmark_method_overhead.json"
    out.write_text(json.dumps(report, indent=1))
    print("written", out.relative_to(repo_root()))


if __name__ == "__main__":
    main()
