"""Where and how a run executes: device, mixed precision, memory format, loader workers.

None of this is a hyperparameter of the method, but some of it changes the numbers (a GPU's
kernels, fp16 autocast), so :func:`scribbleseg.experiment.experiment_key` puts :meth:`Runtime.key_fields`
into the results-cache key (a CPU run is never reused by a GPU run) and every run records
:meth:`Runtime.record` (device name, AMP, torch version, number of processes) in its ``result.json``.

Defaults (:meth:`Runtime.detect`): CUDA when available, else CPU; fp16 autocast with a GradScaler on CUDA,
none on CPU; loader workers min(8, cores). Overrides for measuring or debugging, read once by ``detect``:
``SCRIBBLESEG_DEVICE`` (cpu, cuda, cuda:1), ``SCRIBBLESEG_AMP`` (off, fp16, bf16), ``SCRIBBLESEG_CHANNELS_LAST``
and ``SCRIBBLESEG_CUDNN_BENCHMARK`` (1 / 0), ``SCRIBBLESEG_WORKERS`` (an int).
"""
from __future__ import annotations

import dataclasses
import os

import torch

from scribbleseg import distributed

AMP_DTYPES = {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def default_workers() -> int:
    """min(8, the CPU cores this process may use): DataLoader processes per rank."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(8, cores)


@dataclasses.dataclass(frozen=True)
class Runtime:
    """Args:
        device: a torch device string ("cpu", "cuda", "cuda:0").
        amp: "off", "fp16" (autocast float16 + GradScaler) or "bf16" (autocast bfloat16, no scaler).
        channels_last: convert the network and images to channels-last memory format.
        cudnn_benchmark: ``torch.backends.cudnn.benchmark`` (fixed crops: lets cuDNN pick the fastest kernels).
        workers: DataLoader processes for Dataset splits (0 = the main process); never changes results.
    """

    device: str = "cpu"
    amp: str = "off"
    channels_last: bool = False
    cudnn_benchmark: bool = False
    workers: int = 0

    def __post_init__(self):
        if self.amp not in AMP_DTYPES:
            raise ValueError(f"Runtime.amp must be one of {tuple(AMP_DTYPES)}, got {self.amp!r} "
                             "(check SCRIBBLESEG_AMP)")

    @classmethod
    def detect(cls, device: str | torch.device | None = None, **overrides) -> Runtime:
        """The defaults of the module docstring for this machine (and this torchrun rank), then ``overrides``."""
        env = os.environ
        ddp_device = distributed.init_from_env(torch.device(device).type if device else None)
        dev = torch.device(device or env.get("SCRIBBLESEG_DEVICE") or ddp_device
                           or ("cuda" if torch.cuda.is_available() else "cpu"))
        if ddp_device is not None and dev.type == "cuda":
            dev = ddp_device  # each rank its own GPU
        values = {"device": str(dev), "amp": env.get("SCRIBBLESEG_AMP", "fp16" if dev.type == "cuda" else "off"),
                  "channels_last": env.get("SCRIBBLESEG_CHANNELS_LAST", "0") == "1",
                  "cudnn_benchmark": env.get("SCRIBBLESEG_CUDNN_BENCHMARK", "0") == "1",
                  "workers": int(env.get("SCRIBBLESEG_WORKERS", default_workers()))}
        return cls(**{**values, **overrides})

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return AMP_DTYPES[self.amp]

    def key_fields(self) -> dict:
        """What enters the cache key: nothing for a plain CPU run (so keys of older CPU runs stay valid),
        else the device type and the AMP mode."""
        dev = self.torch_device.type
        return {} if dev == "cpu" and self.amp == "off" else {"device": dev, "amp": self.amp}

    def record(self) -> dict:
        """What a run writes into its result: device (with the GPU's name), AMP, torch version, processes."""
        dev = self.torch_device
        name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
        return {"device": str(dev), "device_name": name, "amp": self.amp, "channels_last": self.channels_last,
                "torch": torch.__version__, "world_size": distributed.world_size(), "workers": self.workers}

    def autocast(self):
        """The autocast context of this runtime (disabled when amp is "off")."""
        dtype = self.amp_dtype
        return torch.autocast(self.torch_device.type, dtype=dtype, enabled=dtype is not None)

    def scaler(self) -> torch.amp.GradScaler:
        """A GradScaler, enabled for fp16 only (bf16 has float32's range)."""
        return torch.amp.GradScaler(self.torch_device.type, enabled=self.amp == "fp16")

    def apply(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move ``model`` to the device (channels-last if asked) and set cuDNN's benchmark flag."""
        if self.torch_device.type == "cuda":
            torch.backends.cudnn.benchmark = self.cudnn_benchmark
        model = model.to(self.torch_device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model
