"""Smoke runs of every method under torchrun (or in one process), for tests/test_distributed.py.

    torchrun --nproc_per_node=2 tests/ddp_script.py OUT.json      # 2 ranks, gloo on CPU
    python tests/ddp_script.py OUT.json --shards 2                  # 1 process, the same global batch in 2 parts

$SCRIBBLESEG_DATA and $SCRIBBLESEG_CACHE must point at the test's folders. Every rank records the dataset
indices of its batches and, before every optimiser step, a fingerprint of its gradients; rank 0 writes the
final metrics, the indices of every rank and the largest gradient difference between ranks to OUT.json. On
ranks other than 0, writing a file under the cache raises (only rank 0 may write). ``--kill RANK:STEP`` kills
that rank (SIGKILL) at that global training step of the first run that reaches it, to test resuming.
"""
from __future__ import annotations

import argparse
import builtins
import json
import os
import signal
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from scribbleseg import distributed
from scribbleseg.baseline import PartialCE
from scribbleseg.blpseg.method import BLPSeg
from scribbleseg.cdsp.method import CDSP
from scribbleseg.cdsp.store import PseudoLabels
from scribbleseg.data.embedded import EmbeddedConfig, SceneConfig
from scribbleseg.data.folder import ScribbleVariant
from scribbleseg.experiment import cache_root, load_embedded, run_experiment
from scribbleseg.potts.method import PottsGD, SelfLabeling
from scribbleseg.runtime import Runtime
from scribbleseg.train import TrainConfig
from scribbleseg.urss.method import URSS

DATA = EmbeddedConfig(n_train=24, n_val=8, scene=SceneConfig(size=64, object_size=(16, 32)))


def forbid_writes_under(root: Path) -> None:
    """Make every write under ``root`` raise on this process (torch.save, open for writing, os.replace)."""
    root = str(root.resolve())
    real_open, real_save, real_replace = builtins.open, torch.save, os.replace

    def inside(p) -> bool:
        return isinstance(p, (str, os.PathLike)) and os.path.abspath(os.fspath(p)).startswith(root)

    def guarded_open(file, mode="r", *a, **k):
        if inside(file) and any(c in mode for c in "wax+"):
            raise PermissionError(f"rank {distributed.rank()} wrote {file}")
        return real_open(file, mode, *a, **k)

    def guarded_save(obj, f, *a, **k):
        if inside(f):
            raise PermissionError(f"rank {distributed.rank()} saved {f}")
        return real_save(obj, f, *a, **k)

    def guarded_replace(src, dst, *a, **k):
        if inside(dst):
            raise PermissionError(f"rank {distributed.rank()} replaced {dst}")
        return real_replace(src, dst, *a, **k)

    builtins.open, torch.save, os.replace = guarded_open, guarded_save, guarded_replace


def methods(train_split) -> dict:
    """Every method of the four papers, smoke-sized; "URSS stage 2" starts from "URSS stage 1" (listed before)."""
    pseudo = PseudoLabels.from_array(train_split.masks, train_split.images)
    return {"pCE": PartialCE(), "BLPSeg": BLPSeg(), "URSS stage 1": URSS(random_walk="paper", entropy="soft"),
            "CDSP": CDSP(pseudo=pseudo), "Potts GD": PottsGD(neighbourhood="grid"),
            "Potts self-labelling": SelfLabeling(steps=5),
            "URSS stage 2": URSS(random_walk="paper", entropy="soft", self_supervision="eigenspace",
                                 transform="random")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--kill", default=None, help="RANK:STEP")
    ap.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU per rank)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rt = Runtime.detect(args.device, workers=0)  # starts the process group under torchrun
    if not distributed.is_main():
        forbid_writes_under(cache_root())
    seen, grad_gap = [], [0.0]

    def fingerprint(opt, *_):
        if type(opt) is not torch.optim.AdamW:  # the training loop's optimiser (not the Potts solver's Adam)
            return
        g = torch.cat([p.grad.flatten() for grp in opt.param_groups for p in grp["params"] if p.grad is not None])
        every = distributed.all_gather_objects(g)
        grad_gap[0] = max(grad_gap[0], max(float((e - every[0]).abs().max()) for e in every))

    register_optimizer_step_pre_hook(fingerprint)
    kill = tuple(map(int, args.kill.split(":"))) if args.kill else None

    methods_ = methods(load_embedded(DATA, "train"))
    for cls in {type(m) for m in methods_.values()}:  # each class once (URSS serves both stages)
        original = cls.losses

        def recording(self, model, batch, _original=original):
            seen.append(batch["index"].tolist())
            if kill and distributed.rank() == kill[0] and batch["step"] == kill[1]:
                os.kill(os.getpid(), signal.SIGKILL)
            return _original(self, model, batch)

        cls.losses = recording
    cfg = TrainConfig(width=4, epochs=2, batch_size=8, lr=1e-2, shards=args.shards)
    quiet = {"log": lambda *_: None, "runtime": rt}
    results = {}
    for name, m in methods_.items():
        results[name] = run_experiment(DATA, ScribbleVariant(), cfg, m, init=results.get("URSS stage 1")
                                       if name == "URSS stage 2" else None, **quiet)
    every_seen = distributed.all_gather_objects(seen)
    if distributed.is_main():
        args.out.write_text(json.dumps({
            "world_size": distributed.world_size(), "grad_gap": grad_gap[0], "seen": every_seen,
            "metrics": {k: r.metrics["miou"] for k, r in results.items()},
            "loss": {k: r.history[-1]["loss"] for k, r in results.items()},
            "cached": {k: r.cached for k, r in results.items()}}))
    distributed.shutdown()


if __name__ == "__main__":
    main()
