"""Many processes on this CPU: torchrun with gloo trains a smoke run of every method (tests/ddp_script.py).

Checked: the ranks see disjoint halves of every global batch, their gradients agree before every step, only
rank 0 writes (the other rank's writes under the cache raise), a 2-process run ends with the same weights
(bit for bit) and metrics as one process cutting the same global batch in two (``TrainConfig.shards=2``), and a
2-process run with one rank killed mid-epoch resumes to the same result.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).with_name("ddp_script.py")
TORCHRUN = Path(sys.executable).with_name("torchrun")


def _run(args, data: Path, cache: Path, torchrun: bool, check: bool = True):
    env = {**os.environ, "SCRIBBLESEG_DATA": str(data), "SCRIBBLESEG_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    cmd = ([str(TORCHRUN), "--standalone", "--nproc_per_node=2"] if torchrun else [sys.executable]) \
        + [str(SCRIPT), *args]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}")
    return r


def _weights(cache: Path) -> dict:
    return {k.name: torch.load(k / "model.pt", weights_only=True) for k in sorted(cache.iterdir())}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    _run([str(root / "two.json")], root / "data", root / "two", torchrun=True)
    _run([str(root / "one.json"), "--shards", "2"], root / "data", root / "one", torchrun=False)
    return root, json.loads((root / "two.json").read_text()), json.loads((root / "one.json").read_text())


def test_two_ranks_see_disjoint_halves_of_each_global_batch(runs):
    _, two, one = runs
    assert two["world_size"] == 2 and one["world_size"] == 1
    rank0, rank1 = two["seen"]
    assert len(rank0) == len(rank1) == len(one["seen"][0]) // 2 > 0
    for i, (a, b) in enumerate(zip(rank0, rank1)):
        assert not set(a) & set(b)                                           # disjoint
        assert a + b == one["seen"][0][2 * i] + one["seen"][0][2 * i + 1]    # together: the global batch


def test_gradients_agree_across_ranks_after_the_all_reduce(runs):
    assert runs[1]["grad_gap"] == 0.0


def test_two_processes_equal_one_process_with_the_same_global_batch(runs):
    root, two, one = runs
    assert set(two["metrics"]) == {"pCE", "BLPSeg", "URSS stage 1", "URSS stage 2", "CDSP", "Potts GD",
                                   "Potts self-labelling"}
    assert two["metrics"] == pytest.approx(one["metrics"], abs=1e-9)
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-9)
    w2, w1 = _weights(root / "two"), _weights(root / "one")
    assert w2.keys() == w1.keys() and len(w2) == 7                            # the same cache keys
    for key in w2:
        for name, t in w2[key].items():
            assert torch.equal(t, w1[key][name]), (key, name)


def test_only_rank_zero_wrote_and_nothing_is_left_half_written(runs):
    root = runs[0]
    for run in (root / "two").iterdir():
        assert sorted(p.name for p in run.iterdir()) == ["config.json", "metrics.csv", "model.pt", "result.json"]
        assert json.loads((run / "result.json").read_text())["runtime"]["world_size"] == 2


def test_killing_one_rank_mid_epoch_then_resuming_gives_the_same_result(runs, tmp_path):
    root, two, _ = runs
    killed = _run([str(tmp_path / "killed.json"), "--kill", "1:4"], root / "data", tmp_path / "cache",
                  torchrun=True, check=False)
    assert killed.returncode != 0 and not (tmp_path / "killed.json").exists()
    first = next((tmp_path / "cache").iterdir())
    assert (first / "ckpt.pt").exists() and not (first / "result.json").exists()  # epoch 1 kept, epoch 2 lost
    _run([str(tmp_path / "resumed.json")], root / "data", tmp_path / "cache", torchrun=True)
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    assert resumed["metrics"] == two["metrics"] and resumed["loss"] == two["loss"]
    w, w_ref = _weights(tmp_path / "cache"), _weights(root / "two")
    assert all(torch.equal(t, w_ref[k][n]) for k in w for n, t in w[k].items())
