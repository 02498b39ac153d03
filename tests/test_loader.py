"""The training data path on real hardware (issue 13, items 2, 3 and 7): loader workers that cannot change
the numbers, per-item method work delivered in the batch, loss terms read once per interval, and a results
cache that knows the device."""
import json

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from scribbleseg import train as train_mod
from scribbleseg.baseline import PartialCE
from scribbleseg.constants import IGNORE_INDEX
from scribbleseg.data.folder import ScribbleVariant
from scribbleseg.data.voc import RandomScaleCropFlip
from scribbleseg.experiment import experiment_key, run_experiment
from scribbleseg.loader import EpochBatches, SeededItems, make_loader
from scribbleseg.runtime import Runtime
from scribbleseg.train import TrainConfig, fit_epoch, train
from scribbleseg.urss.boundaries import batch_boundaries
from scribbleseg.urss.method import URSS

CFG = TrainConfig(width=4, epochs=2, batch_size=4, lr=1e-2)


class Synthetic(Dataset):
    """12 random 40 x 48 items with VOC's item keys, randomly scaled / cropped / flipped to 32 x 32."""

    class_names = ("background", "a", "b")

    def __init__(self, n: int = 12):
        g = np.random.default_rng(0)
        self.images = g.integers(0, 256, (n, 3, 40, 48), dtype=np.uint8)
        self.masks = g.integers(0, 3, (n, 40, 48))
        self.transform = RandomScaleCropFlip(32, (0.75, 1.25))

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        scribble = np.full_like(self.masks[i], IGNORE_INDEX)
        scribble[::7] = self.masks[i][::7]
        return self.transform({"image": torch.from_numpy(self.images[i]), "mask": torch.from_numpy(self.masks[i]),
                               "scribble": torch.from_numpy(scribble), "index": torch.tensor(i)})


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.state_dict().values() if p.dtype.is_floating_point])


def test_worker_count_does_not_change_results(tmp_path):
    ds = Synthetic()
    runs = [train(CFG, PartialCE(), ds, tmp_path / f"w{w}", log=lambda *_: None, runtime=Runtime(workers=w))
            for w in (0, 2)]
    assert torch.equal(_params(runs[0][0]), _params(runs[1][0]))
    assert runs[0][1][-1]["ce"] == runs[1][1][-1]["ce"]


def test_items_are_seeded_by_seed_epoch_and_index_and_leave_the_callers_rng_alone():
    items = SeededItems(Synthetic(), seed=3)
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    a = items[(1, 5)]["image"]
    assert torch.equal(torch.rand(1), before)                                  # the caller's RNG is untouched
    assert torch.equal(a, items[(1, 5)]["image"]) and not torch.equal(a, items[(2, 5)]["image"])


def test_ranks_take_disjoint_micro_batches_that_make_up_the_global_batch():
    single = list(EpochBatches(12, 4, 3, seed=0, shards=2))
    ranks = [list(EpochBatches(12, 4, 3, seed=0, shards=2, world=2, rank=r)) for r in (0, 1)]
    assert [a + b for a, b in zip(*ranks)] == [single[2 * s] + single[2 * s + 1] for s in range(3)]
    assert sorted(i for step in single for _, i in step) == list(range(12))     # one epoch: every item once
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        list(EpochBatches(12, 4, 3, seed=0, shards=3, world=2, rank=0))


def test_loader_delivers_pseudo_boundaries_computed_in_the_workers():
    method = URSS(random_walk="paper", entropy="soft")
    loader = make_loader(Synthetic(), EpochBatches(12, 4, 3, seed=0), method.prepare_item, workers=2)
    batch = next(iter(loader))
    assert batch["boundary"].shape == (4, 32, 32) and batch["boundary"].dtype == torch.bool
    assert torch.equal(batch["boundary"], batch_boundaries(batch["rgb"], method.n_segments, method.compactness))


def test_loss_terms_are_read_once_per_interval_and_a_nan_names_its_step(monkeypatch):
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    reads = []
    real = train_mod._flush
    monkeypatch.setattr(train_mod, "_flush", lambda pending, first: reads.append(len(pending)) or real(pending, first))
    batches = [{"x": torch.ones(1, 2), "v": v} for v in [1.0] * 7]
    history = fit_epoch(model, opt, batches, lambda m, b: {"l": m(b["x"]).sum() * 0 + b["v"]}, sync_every=3)
    assert reads == [3, 3, 1] and [h["l"] for h in history] == [1.0] * 7
    bad = [{"x": torch.ones(1, 2), "v": v} for v in [1.0, 1.0, float("nan"), 1.0]]
    with pytest.raises(FloatingPointError, match="step 2"):
        fit_epoch(model, opt, bad, lambda m, b: {"l": m(b["x"]).sum() * 0 + b["v"]}, sync_every=4)


def test_micro_batches_average_the_gradient_of_the_whole_batch():
    torch.manual_seed(0)
    x = torch.randn(8, 3)
    grads = []
    for step in ({"x": x}, [{"x": x[:4]}, {"x": x[4:]}]):
        model = torch.nn.Linear(3, 1)
        torch.nn.init.ones_(model.weight), torch.nn.init.zeros_(model.bias)
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        fit_epoch(model, opt, [step], lambda m, b: {"l": m(b["x"]).pow(2).mean()})
        grads.append(model.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)                         # equal halves: mean of means


def test_the_cache_key_holds_the_device_and_amp_and_the_run_records_them(tiny_dataset, tmp_path, monkeypatch):
    cfg_ds, root = tiny_dataset
    key = lambda rt: experiment_key(cfg_ds, ScribbleVariant(), CFG, PartialCE(), runtime=rt)  # noqa: E731
    cpu, spec = key(Runtime())
    assert "runtime" not in spec and cpu == key(Runtime(workers=4))[0]           # CPU keys as before; workers never
    assert len({cpu, key(Runtime("cuda", "fp16"))[0], key(Runtime("cuda", "bf16"))[0], key(Runtime("cuda"))[0],
                key(Runtime("cpu", "bf16"))[0]}) == 5
    assert key(Runtime("cuda", "fp16"))[1]["runtime"] == {"device": "cuda", "amp": "fp16"}
    assert cpu != experiment_key(cfg_ds, ScribbleVariant(), TrainConfig(**{**CFG.__dict__, "shards": 2}),
                                 PartialCE(), runtime=Runtime())[0]
    monkeypatch.setattr("scribbleseg.experiment.ensure_embedded", lambda c: root)
    r = run_experiment(cfg_ds, ScribbleVariant(), CFG, PartialCE(), log=lambda *_: None, root=tmp_path,
                       runtime=Runtime())
    rec = json.loads((r.folder / "result.json").read_text())["runtime"]
    assert rec["device"] == "cpu" and rec["amp"] == "off" and rec["torch"] == torch.__version__
    assert rec["world_size"] == 1


def test_bf16_autocast_runtime_trains_on_cpu(tmp_path):
    ds = Synthetic(8)
    model, rows = train(CFG, PartialCE(), ds, tmp_path / "bf16", log=lambda *_: None,
                        runtime=Runtime(amp="bf16", channels_last=True))
    assert np.isfinite(rows[-1]["ce"]) and torch.isfinite(_params(model)).all()
    with pytest.raises(ValueError, match="SCRIBBLESEG_AMP"):
        Runtime(amp="fp8")
