"""Files a later run reads back: atomic writes, truncated files treated as unfinished runs, two checkpoints with
fallback, and checkpoints loaded with ``weights_only=True`` (a pickled callable is refused, never run).

Truncation offsets are drawn from a seeded generator; every resumed or retrained run must end with the same
weights and metrics as the uninterrupted one (CPU, bit for bit)."""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from scribbleseg import files
from scribbleseg.baseline import PartialCE
from scribbleseg.constants import EMBEDDED_CLASSES
from scribbleseg.data.folder import ScribbleVariant, load_split
from scribbleseg.experiment import run_experiment
from scribbleseg.files import UnreadableFile, UnsafeFile
from scribbleseg.train import CKPT, CKPT_PREV, TrainConfig, load_checkpoint, save_checkpoint, train

CFG = TrainConfig(width=4, epochs=3, batch_size=8, lr=1e-2)
RNG_SEED = 18


@pytest.fixture(scope="module")
def split(tiny_dataset):
    return load_split(tiny_dataset[1], "train", EMBEDDED_CLASSES)


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.state_dict().values() if p.dtype.is_floating_point])


def _losses(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def _truncate(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(offset)


def _offsets(path: Path, rng, n: int) -> list[int]:
    """0 (empty file) and n - 1 random offsets inside the file (never its full size)."""
    size = path.stat().st_size
    return [0] + sorted(int(o) for o in rng.integers(1, size, n - 1))


# --- atomic writes ------------------------------------------------------------------------------------------------

def test_atomic_write_leaves_the_old_file_when_interrupted(tmp_path):
    target = tmp_path / "result.json"
    files.atomic_write_json(target, {"v": 1})
    with pytest.raises(KeyboardInterrupt):
        with files.atomic_open(target) as f:
            f.write(b'{"v": 2, "trunc')
            raise KeyboardInterrupt
    assert files.read_json(target) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]  # no temporary left
    files.atomic_torch_save({"w": torch.ones(3)}, tmp_path / "m.pt")
    files.atomic_np_save(tmp_path / "a.npy", np.arange(4, dtype=np.uint8))
    assert torch.equal(files.torch_load(tmp_path / "m.pt")["w"], torch.ones(3))
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.arange(4))


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    mine = files.temp_path(tmp_path / "ckpt.pt")
    theirs = mine.with_name(mine.name.replace(f".{os.getpid()}.", f".{dead}."))
    other_host = tmp_path / f".ckpt.pt.otherhost.{dead}.abcd1234.tmp"
    for p in (mine, theirs, other_host):
        p.write_bytes(b"half")
    files.remove_stale_temps(tmp_path)
    assert mine.exists() and other_host.exists() and not theirs.exists()


def test_readers_name_truncated_files(tmp_path):
    files.atomic_write_json(tmp_path / "r.json", {"metrics": [1.0] * 50})
    files.atomic_torch_save({"w": torch.zeros(100)}, tmp_path / "m.pt")
    rng = np.random.default_rng(RNG_SEED)
    for name, read in (("r.json", files.read_json), ("m.pt", files.torch_load)):
        data = (tmp_path / name).read_bytes()
        for off in _offsets(tmp_path / name, rng, 4):
            (tmp_path / "cut").write_bytes(data[:off])
            with pytest.raises(UnreadableFile, match="unreadable"):
                read(tmp_path / "cut")


# --- checkpoints: two kept, fallback, weights_only -------------------------------------------------------------

@pytest.fixture(scope="module")
def uninterrupted(split, tmp_path_factory):
    model, rows = train(CFG, PartialCE(), split, tmp_path_factory.mktemp("full"), log=lambda *_: None)
    return _params(model), _losses(rows)


@pytest.fixture(scope="module")
def killed_in_epoch_3(split, tmp_path_factory):
    """A run folder as a kill inside epoch 3 leaves it: ckpt.pt (epoch 2) and ckpt.prev.pt (epoch 1)."""
    folder = tmp_path_factory.mktemp("killed") / "run"
    steps = len(split.ids) // CFG.batch_size
    calls = {"n": 0}

    class Killer(PartialCE):
        def losses(self, model, batch):
            calls["n"] += 1
            if calls["n"] > 2 * steps:
                raise KeyboardInterrupt
            return super().losses(model, batch)

    with pytest.raises(KeyboardInterrupt):
        train(CFG, Killer(), split, folder, log=lambda *_: None)
    assert torch.load(folder / CKPT, weights_only=True)["epoch"] == 1      # 0-based: epochs 2 and 1
    assert torch.load(folder / CKPT_PREV, weights_only=True)["epoch"] == 0
    return folder


@pytest.mark.parametrize("which", [(CKPT,), (CKPT_PREV,), (CKPT, CKPT_PREV)])
def test_truncated_checkpoints_resume_to_the_uninterrupted_result(which, split, uninterrupted, killed_in_epoch_3,
                                                                 tmp_path):
    """Each checkpoint cut at random offsets: a bad latest falls back to the previous epoch with one warning,
    a bad previous one is never needed, both bad start over; every run ends as the uninterrupted one."""
    rng = np.random.default_rng([RNG_SEED, len(which), which[0] == CKPT])
    expect_epoch = {(CKPT,): 1, (CKPT_PREV,): 2, (CKPT, CKPT_PREV): None}[which]
    for trial, off in enumerate(_offsets(killed_in_epoch_3 / which[0], rng, 3)):
        run = tmp_path / f"t{trial}"
        shutil.copytree(killed_in_epoch_3, run)
        for name in which:
            _truncate(run / name, min(off, (run / name).stat().st_size - 1))
        logs = []
        model, rows = train(CFG, PartialCE(), split, run, log=logs.append)
        warnings = [m for m in logs if m.startswith("warning:")]
        assert len(warnings) == (0 if which == (CKPT_PREV,) else len(which)), logs  # each file read, said once
        assert all("unreadable" in w for w in warnings)
        if CKPT in which:
            assert "falling back" in warnings[0]
        if which == (CKPT, CKPT_PREV):
            assert "training starts over" in warnings[-1]
        resumed = [m for m in logs if m.startswith("resuming")]
        assert resumed == ([f"resuming {run.name} after epoch {expect_epoch}/{CFG.epochs}"] if expect_epoch else [])
        assert torch.equal(_params(model), uninterrupted[0])
        assert _losses(rows) == uninterrupted[1]
        assert torch.load(run / CKPT, weights_only=True)["epoch"] == CFG.epochs - 1   # both whole again
        assert torch.load(run / CKPT_PREV, weights_only=True)["epoch"] == CFG.epochs - 2


class _MakeDir:
    """Pickles as a call of ``os.mkdir``: loading it with weights_only=False would create ``path``."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (str(self.path),))  # would create the marker folder if it ever ran


def test_a_checkpoint_carrying_a_pickled_callable_is_refused(split, killed_in_epoch_3, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(killed_in_epoch_3, run)
    marker = tmp_path / "code-ran"
    ck = torch.load(run / CKPT, weights_only=True)
    torch.save({**ck, "hook": _MakeDir(marker)}, run / CKPT)
    with pytest.raises(UnsafeFile, match=r"refusing to load .*ckpt\.pt.*could run code"):
        train(CFG, PartialCE(), split, run, log=lambda *_: None)
    assert not marker.exists()
    with pytest.raises(UnsafeFile, match=r"\((posix|os|nt)\.mkdir\)"):  # the offending global is named
        files.torch_load(run / CKPT)
    # a model.pt too (RunResult.load_model, stage 2's init, CDSP's classifier read through the same loader)
    torch.save({"w": torch.zeros(1), "x": _MakeDir(marker)}, tmp_path / "model.pt")
    with pytest.raises(UnsafeFile):
        files.torch_load(tmp_path / "model.pt")
    assert not marker.exists()


def test_checkpoints_hold_plain_data_only(tmp_path):
    m = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(m.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    state = {"model": m.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "epoch": 0,
             "rows": [{"epoch": 1, "loss": 0.5}]}
    save_checkpoint(state, tmp_path)
    assert load_checkpoint(tmp_path)["rows"] == state["rows"]
    with pytest.raises(TypeError, match=r"checkpoint\['rows'\]\[0\]\['loss'\] is a float32"):
        save_checkpoint({**state, "rows": [{"loss": np.float32(0.5)}]}, tmp_path)


# --- the results cache ----------------------------------------------------------------------------------------

SMALL = TrainConfig(width=4, epochs=2, batch_size=8, lr=1e-2)


@pytest.mark.parametrize("name", ["result.json", "model.pt", "config.json"])
def test_truncated_cache_files_make_the_run_unfinished_never_a_crash(name, tiny_dataset, tmp_path, monkeypatch):
    cfg_ds, root = tiny_dataset
    monkeypatch.setattr("scribbleseg.experiment.ensure_embedded", lambda c: root)
    first = run_experiment(cfg_ds, ScribbleVariant(), SMALL, PartialCE(), log=lambda *_: None, root=tmp_path)
    ref_weights = _params(first.load_model())
    rng = np.random.default_rng([RNG_SEED, len(name)])
    for off in _offsets(first.folder / name, rng, 2):
        _truncate(first.folder / name, off)
        logs = []
        again = run_experiment(cfg_ds, ScribbleVariant(), SMALL, PartialCE(), log=logs.append, root=tmp_path)
        said = [m for m in logs if f"{name} is unreadable" in m or (name == "model.pt" and "model.pt is" in m)]
        assert len(said) == 1, logs                                                 # said once
        if name == "config.json":  # not needed by the run: rewritten, the result stays cached
            assert again.cached and "writing it again" in said[0]
        else:
            assert not again.cached and "treating the run as unfinished" in said[0]
        assert again.metrics == first.metrics and _losses(again.history) == _losses(first.history)
        assert torch.equal(_params(again.load_model()), ref_weights)
        assert sorted(p.name for p in first.folder.iterdir()) == ["config.json", "metrics.csv", "model.pt",
                                                                  "result.json"]
        assert json.loads((first.folder / "config.json").read_text()) == json.loads(json.dumps(first.spec))


def test_write_results_is_atomic(tmp_path, monkeypatch):
    from scribbleseg.lab import results

    monkeypatch.setenv("SCRIBBLESEG_ROOT", str(tmp_path))
    out = tmp_path / "results" / "x.json"
    results.write_results(out, "notebooks/x.ipynb", "cpu", {"a": 1}, [])
    before = out.read_bytes()
    real = files.atomic_open

    def broken(path):  # a kill half-way through the write
        cm = real(path)
        f = cm.__enter__()
        f.write(before[:10])
        cm.__exit__(KeyboardInterrupt, KeyboardInterrupt(), None)
        raise KeyboardInterrupt

    monkeypatch.setattr(files, "atomic_open", broken)
    with pytest.raises(KeyboardInterrupt):
        results.write_results(out, "notebooks/x.ipynb", "cpu", {"a": 2}, [])
    assert out.read_bytes() == before and sorted(p.name for p in out.parent.iterdir()) == ["x.json"]


# --- CDSP stage 1's stores --------------------------------------------------------------------------------------

def test_truncated_stage1_stores_are_made_again(tiny_dataset, tmp_path, monkeypatch):
    from scribbleseg.cdsp.classifier import ClassifierConfig
    from scribbleseg.cdsp.stage1 import PseudoLabelRecipe, classifier, pseudo_label_set

    cfg_ds, root = tiny_dataset
    monkeypatch.setattr("scribbleseg.experiment.ensure_embedded", lambda c: root)
    recipe = PseudoLabelRecipe(ClassifierConfig(width=4, epochs=1, batch_size=8), threshold=0.3)
    first, score = pseudo_label_set(cfg_ds, recipe, root=tmp_path, log=lambda *_: None)
    ref_cls, ref_hist = classifier(cfg_ds, recipe.classifier, root=tmp_path, log=lambda *_: None)
    pl = next(p for p in tmp_path.iterdir() if p.name.startswith("pl-"))
    cls = next(p for p in tmp_path.iterdir() if p.name.startswith("cls-"))
    rng = np.random.default_rng(RNG_SEED)
    for path in (pl / "labels.npy", pl / "result.json"):
        for off in _offsets(path, rng, 2):
            _truncate(path, off)
            logs = []
            again, score2 = pseudo_label_set(cfg_ds, recipe, root=tmp_path, log=logs.append)
            assert len([m for m in logs if "unreadable" in m and "making them again" in m]) == 1, logs
            assert np.array_equal(again.labels, first.labels) and score2 == score and again.key == first.key
    for path in (cls / "classifier.pt", cls / "history.json"):
        for off in _offsets(path, rng, 2):
            _truncate(path, off)
            logs = []
            model, hist = classifier(cfg_ds, recipe.classifier, root=tmp_path, log=logs.append)
            assert len([m for m in logs if "unreadable" in m and "training it again" in m]) == 1, logs
            assert torch.equal(_params(model), _params(ref_cls)) and _losses(hist) == _losses(ref_hist)
