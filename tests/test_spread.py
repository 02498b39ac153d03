"""Runs spread over dask.distributed workers and the per-key claim (issue 16, item 5).

Checked: one worker (``Spread()``) makes exactly the in-process calls; 2 workers on a LocalCluster over a small
study (two methods x two seeds, and a second stage started from the first) give the same metrics and weights,
bit for bit, as 1 worker; two processes racing on one key train it once (the other waits, then reads the
result); a trainer killed mid-run leaves its claim to the next process, which resumes from the checkpoints.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from scribbleseg.baseline import PartialCE
from scribbleseg.claim import LOCK_NAME, claimed
from scribbleseg.data.embedded import EmbeddedConfig, SceneConfig
from scribbleseg.data.folder import ScribbleVariant
from scribbleseg.experiment import experiment_key, load_embedded, run_experiment
from scribbleseg.lab.spread import Job, Spread, run_jobs
from scribbleseg.lab.study import run_rows
from scribbleseg.potts.method import PottsGD
from scribbleseg.runtime import Runtime
from scribbleseg.train import TrainConfig

DATA = EmbeddedConfig(n_train=16, n_val=8, scene=SceneConfig(size=64, object_size=(16, 32)))
TRAIN = {"width": 4, "epochs": 2, "batch_size": 8, "lr": 1e-2}
LIB = str(Path(__file__).resolve().parents[1] / "lib")


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A fresh cache and data folder, the dataset built before any worker starts (workers only read it)."""
    monkeypatch.setenv("SCRIBBLESEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SCRIBBLESEG_DATA", str(tmp_path / "data"))
    load_embedded(DATA, "train"), load_embedded(DATA, "val")
    return tmp_path


def _weights(r):
    return torch.load(r.folder / "model.pt", weights_only=True)


def test_spread_rejects_bad_sizes_and_forward_references():
    with pytest.raises(ValueError, match="workers"):
        Spread(workers=0)
    with pytest.raises(ValueError, match="threads"):
        Spread(threads=0)
    with pytest.raises(ValueError, match="job 0 starts from job 0"):
        run_jobs([Job(DATA, ScribbleVariant(), TrainConfig(), PartialCE(), init=0)])


def test_one_worker_is_the_in_process_loop(env, monkeypatch):
    calls = []
    real = run_experiment

    def spy(*a, **k):
        calls.append((a[3], a[2].seed))
        return real(*a, **k)
    monkeypatch.setattr("scribbleseg.lab.spread.run_experiment", spy)
    rows = {"pCE": (PartialCE(), ScribbleVariant()), "Potts": (PottsGD(neighbourhood="grid"), ScribbleVariant())}
    runs = run_rows(DATA, rows, [0, 1], TRAIN, log=lambda *_: None)
    assert calls == [(PartialCE(), 0), (PartialCE(), 1), (PottsGD(neighbourhood="grid"), 0),
                     (PottsGD(neighbourhood="grid"), 1)]                     # row by row, seed by seed
    assert [r.spec["train"]["seed"] for r in runs["Potts"]] == [0, 1] and not runs["pCE"][0].cached


@pytest.fixture
def one_thread():
    """torch on one thread here, as on the workers (Spread.threads = 1); restored after the test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _losses(history):
    return [{k: v for k, v in epoch.items() if k != "seconds"} for epoch in history]


def test_two_local_workers_equal_one_worker(env, monkeypatch, one_thread):
    jobs = [Job(DATA, ScribbleVariant(), TrainConfig(seed=s, **TRAIN), m) for m in (PartialCE(), PottsGD())
            for s in (0, 1)]
    jobs.append(Job(DATA, ScribbleVariant(), TrainConfig(seed=0, **{**TRAIN, "epochs": 1}), PartialCE("mask"),
                    init=0))                                                 # a second stage from job 0
    one = run_jobs(jobs, Spread(), log=lambda *_: None)
    monkeypatch.setenv("SCRIBBLESEG_CACHE", str(env / "cache2"))
    logs = []
    two = run_jobs(jobs, Spread(workers=2), log=logs.append)
    assert logs[0] == "5 runs on 2 local workers" and len(logs) == 6
    assert [r.key for r in one] == [r.key for r in two] and not any(r.cached for r in two)
    assert all(str(r.folder).startswith(str(env / "cache2")) for r in two)   # the client's cache root
    for a, b in zip(one, two):
        assert a.metrics == b.metrics and _losses(a.history) == _losses(b.history)
        wa, wb = _weights(a), _weights(b)
        assert all(torch.equal(wa[k], wb[k]) for k in wa)


CHILD = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {lib!r})
    import torch
    from test_spread import DATA, TRAIN
    from scribbleseg.baseline import PartialCE
    from scribbleseg.data.folder import ScribbleVariant
    from scribbleseg.experiment import run_experiment
    from scribbleseg.train import TrainConfig
    torch.set_num_threads(1)
    logs = []
    def log(m):
        logs.append(m); print(m, flush=True)
    r = run_experiment(DATA, ScribbleVariant(), TrainConfig(seed=0, **{{**TRAIN, "epochs": {epochs}}}), PartialCE(),
                       log=log)
    print("RESULT " + json.dumps({{"cached": r.cached, "miou": r.metrics["miou"], "logs": logs}}), flush=True)
""")


def _child(epochs: int, out: Path):
    code = CHILD.format(lib=LIB, epochs=epochs)
    return subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parent, env=dict(os.environ),
                            stdout=out.open("w"), stderr=subprocess.STDOUT, text=True)


def _wait_for(path: Path, text: str, timeout: float = 120.0) -> None:
    t0 = time.time()
    while text not in (path.read_text() if path.exists() else ""):
        if time.time() - t0 > timeout:
            raise AssertionError(f"{text!r} never appeared in {path}:\n{path.read_text()}")
        time.sleep(0.2)


def _result(path: Path) -> dict:
    line = [m for m in path.read_text().splitlines() if m.startswith("RESULT ")]
    assert line, path.read_text()
    return json.loads(line[0][len("RESULT "):])


def _folder(env: Path, epochs: int) -> Path:
    key, _ = experiment_key(DATA, ScribbleVariant(), TrainConfig(seed=0, **{**TRAIN, "epochs": epochs}), PartialCE(),
                            None, Runtime.detect("cpu"))
    return env / "cache" / key


def test_two_processes_racing_on_one_key_train_it_once(env):
    folder = _folder(env, 2)
    outs = [env / "a.log", env / "b.log"]
    with claimed(folder, log=lambda *_: None):  # both start while the key is claimed: both must wait
        procs = [_child(2, out) for out in outs]
        for out in outs:
            _wait_for(out, "another process is training it")
    for p in procs:
        assert p.wait(timeout=300) == 0
    a, b = (_result(out) for out in outs)
    assert sorted([a["cached"], b["cached"]]) == [False, True]               # trained once, read once
    assert a["miou"] == b["miou"]
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "metrics.csv", "model.pt", "result.json"]


def test_a_killed_trainer_leaves_the_key_to_the_next_which_resumes(env):
    folder = _folder(env, 6)
    out = env / "killed.log"
    p = _child(6, out)
    t0 = time.time()
    while not (folder / "ckpt.pt").exists():                                 # at least one epoch done
        assert p.poll() is None and time.time() - t0 < 120, out.read_text()
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert (folder / LOCK_NAME).exists() and not (folder / "result.json").exists()
    logs = []
    r = run_experiment(DATA, ScribbleVariant(), TrainConfig(seed=0, **{**TRAIN, "epochs": 6}), PartialCE(),
                       log=logs.append)
    assert not r.cached and any(m.startswith("resuming") for m in logs), logs
    assert not any("another process" in m for m in logs)                     # the dead holder's claim is gone
    assert not (folder / LOCK_NAME).exists()


BUILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {lib!r})
    from test_spread import DATA
    from scribbleseg.data.embedded import ensure_embedded
    print(ensure_embedded(DATA), flush=True)
""")


def test_two_processes_building_one_dataset_build_it_once(tmp_path, monkeypatch):
    from filelock import FileLock

    from scribbleseg.data.embedded import ensure_embedded

    monkeypatch.setenv("SCRIBBLESEG_DATA", str(tmp_path))
    final = tmp_path / f"embedded-{DATA.key()}"
    with FileLock(final.with_name(final.name + ".lock")):  # both start while the dataset is being "built"
        procs = [subprocess.Popen([sys.executable, "-c", BUILD.format(lib=LIB)], cwd=Path(__file__).parent,
                                  env=dict(os.environ), stdout=subprocess.PIPE, text=True) for _ in range(2)]
        time.sleep(3)
    outs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0] and outs == [str(final)] * 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [final.name]     # no lock file, no half-built copy
    assert ensure_embedded(DATA) == final and (final / "meta.json").exists()
