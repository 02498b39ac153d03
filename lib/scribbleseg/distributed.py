"""Many processes (GPUs) through PyTorch's own engine: torchrun's environment, DDP, one writer.

Launch any training script or notebook-driving command under ``torchrun --nproc_per_node=N``: torchrun
sets RANK, WORLD_SIZE and LOCAL_RANK, :func:`init_from_env` starts the process group from them (NCCL on
CUDA, gloo on CPU) and the training loop (:func:`scribbleseg.train.train`) then

- cuts every global batch of ``TrainConfig.batch_size`` into ``shards`` micro-batches (at least one per rank)
  and gives each rank its own, so the ranks see disjoint data (:func:`shard_slices`);
- wraps the network in ``DistributedDataParallel`` after ``method.wrap`` (SyncBatchNorm on CUDA when
  asked for), so that gradients are averaged over the ranks;
- writes checkpoints, CSV and results from rank 0 only, with barriers around them (:func:`is_main`);
- all-reduces the evaluation's confusion matrix (:func:`all_reduce_sum`).

Without torchrun (WORLD_SIZE unset or 1) every function here is the single-process identity, so the
library never needs to know whether it is distributed. Methods read attributes of the network through
:func:`unwrap`, which strips the DDP wrapper.
"""
from __future__ import annotations

import atexit
import datetime
import os

import torch
import torch.distributed as dist
from torch import nn


def world_size() -> int:
    """Number of processes of the job (1 without torchrun; torchrun's WORLD_SIZE before the group starts)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's rank (0 without torchrun; torchrun's RANK before the group starts, e.g. in a notebook
    kernel started by a runner under torchrun, which inherits the environment)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """True on the one process that writes files (rank 0)."""
    return rank() == 0


def init_from_env(device_type: str | None = None) -> torch.device | None:
    """Start the process group from torchrun's environment (once), and return this rank's device.

    Returns None when not launched by torchrun with WORLD_SIZE > 1 (single process: nothing to do).
    The backend is NCCL when CUDA is available (``device_type`` "cuda" or None), else gloo; each rank takes
    the GPU of its LOCAL_RANK.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    cuda = torch.cuda.is_available() and device_type in (None, "cuda")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=30))
        atexit.register(shutdown, wait=False)
    if cuda:
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def shutdown(wait: bool = True) -> None:
    """End the process group (no-op without one); with ``wait``, after every rank has reached this call.

    :func:`init_from_env` registers ``shutdown(wait=False)`` at exit: a gloo group left to the interpreter's
    teardown can abort a rank ("terminate called without an active exception", SIGABRT) after its work is
    done, which torchrun reports as a failure. At exit there is no barrier, so a rank leaving on an error
    does not wait for ranks that will never come.
    """
    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if world_size() > 1:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over the ranks, in place and returned (no-op in one process). A CPU tensor under NCCL
    (which reduces GPU tensors only), e.g. the evaluation's confusion matrix, goes through this rank's GPU."""
    if world_size() > 1:
        if t.device.type == "cpu" and dist.get_backend() == "nccl":
            on_gpu = t.to(torch.device("cuda", torch.cuda.current_device()))
            dist.all_reduce(on_gpu, op=dist.ReduceOp.SUM)
            t.copy_(on_gpu)
        else:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_objects(obj) -> list:
    """[obj of rank 0, obj of rank 1, ...] (picklable objects; [obj] in one process)."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a ``DistributedDataParallel`` (or ``torch.compile``) wrapper; ``model`` otherwise."""
    while isinstance(model, nn.parallel.DistributedDataParallel) or hasattr(model, "_orig_mod"):
        model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model._orig_mod
    return model


def shard_slices(n: int, shards: int, world: int, rank_: int) -> list[slice]:
    """The micro-batches of one rank: a global batch of ``n`` items cut into ``shards`` near-equal parts,
    parts ``rank * shards / world ... (rank + 1) * shards / world - 1`` for this rank (in order).

    >>> shard_slices(16, 2, 2, 1)
    [slice(8, 16, None)]
    """
    if shards % world:
        raise ValueError(f"TrainConfig.shards={shards} must be a multiple of the number of processes ({world}); "
                         f"set shards to {world} or a multiple of it")
    bounds = [round(j * n / shards) for j in range(shards + 1)]
    per = shards // world
    return [slice(bounds[j], bounds[j + 1]) for j in range(rank_ * per, (rank_ + 1) * per)]


def wrap_ddp(model: nn.Module, device: torch.device, sync_bn: bool = False) -> nn.Module:
    """``model`` in ``DistributedDataParallel`` when there are several ranks (with SyncBatchNorm on CUDA if
    ``sync_bn``: PyTorch's SyncBatchNorm runs on GPUs only); ``model`` itself in one process."""
    if world_size() == 1:
        return model
    if sync_bn and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)
