"""Fault injection: SIGKILL a results-cache training run at random moments, resume it, compare with a run
that was never interrupted (CPU: metrics, per-epoch losses and weights must be identical, bit for bit).

The test runs this file as a script (one Python process, so torch is imported once)::

    python tests/test_fault_injection.py OUT.json --kills 10 --seed 0 [--work DIR]

which builds the tiny embedded set, forks one uninterrupted reference run, then for each kill forks a run of the
same experiment into a fresh cache folder, SIGKILLs it, and forks a second run that must finish it. The moments
are drawn from ``--seed``: half at a uniform random time within the reference run's duration, half inside a
random write of a file that a later run reads (``config.json``, ``metrics.csv``, ``ckpt.pt`` with its rotation,
``model.pt``, ``result.json``) at a random byte offset, so that a truncated temporary is on disk when the kill
lands. Every run traces the start and end of its writes, so each kill is classified by where it landed.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FINISHED = ["config.json", "metrics.csv", "model.pt", "result.json"]
DATA = CFG = None  # the experiment, set by campaign() before any run is forked


# --- the script ----------------------------------------------------------------------------------------------

def _trace_writes(trace_fd: int, target: tuple[str, int, int] | None):
    """Record every atomic write (``begin``/``end`` lines with the file's name, occurrence and size) and, for
    ``target`` = (name, occurrence, cut), stop that write after ``cut`` bytes (flushed to disk), say ``stall``
    and wait to be killed."""
    from scribbleseg import files, train

    counts: dict[str, int] = {}
    real_open, real_save = files.atomic_open, train.save_checkpoint

    def event(*words) -> None:
        os.write(trace_fd, (" ".join(map(str, (f"{time.monotonic():.6f}", *words))) + "\n").encode())

    class Writer:
        def __init__(self, f, name, k, cut):
            self._f, self.name, self.k, self.cut, self.n = f, name, k, cut, 0

        def write(self, b):
            b = bytes(b)
            if self.cut is not None and self.n + len(b) >= self.cut:
                self._f.write(b[:self.cut - self.n])
                self._f.flush()
                os.fsync(self._f.fileno())
                event("stall", self.name, self.k, self.cut)
                time.sleep(60)
            self.n += len(b)
            return self._f.write(b)

        def __getattr__(self, k):
            return getattr(self._f, k)

    @contextlib.contextmanager
    def traced_open(path):
        name = Path(path).name
        counts[name] = k = counts.get(name, 0) + 1
        event("begin", name, k)
        cut = target[2] if target is not None and target[:2] == (name, k) else None
        with real_open(path) as f:
            w = Writer(f, name, k, cut)
            yield w
        event("end", name, k, w.n)

    def traced_save(state, run_dir):  # the checkpoint: hard link of the previous one, then the atomic write
        event("begin", "checkpoint", counts.get("ckpt.pt", 0) + 1)
        real_save(state, run_dir)
        event("end", "checkpoint", counts["ckpt.pt"])

    files.atomic_open, train.save_checkpoint = traced_open, traced_save


def _fork_run(cache: Path, out: Path | None, trace: Path | None, target=None) -> int:
    """Fork a process running the experiment into ``cache`` (its result to ``out``); returns its pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        import torch

        from scribbleseg.baseline import PartialCE
        from scribbleseg.data.folder import ScribbleVariant
        from scribbleseg.experiment import run_experiment

        torch.set_num_threads(1)
        if trace is not None:
            _trace_writes(os.open(trace, os.O_WRONLY | os.O_APPEND | os.O_CREAT), target)
        logs: list[str] = []
        r = run_experiment(DATA, ScribbleVariant(), CFG, PartialCE(), log=logs.append, root=cache)
        state = r.load_model().state_dict()
        digest = hashlib.sha256(b"".join(t.numpy().tobytes() for t in state.values())).hexdigest()
        if out is not None:
            out.write_text(json.dumps({
                "metrics": r.metrics, "history": [{k: v for k, v in h.items() if k != "seconds"} for h in r.history],
                "weights": digest, "cached": r.cached, "logs": logs,
                "files": sorted(p.name for p in r.folder.iterdir())}))
        code = 0
    except BaseException as e:  # noqa: BLE001 - a forked child reports and exits, never returns
        sys.stderr.write(f"run failed: {type(e).__name__}: {e}\n")
    finally:
        os._exit(code)


def _wait(pid: int, timeout: float = 120) -> int:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    raise TimeoutError(f"run {pid} took over {timeout} s")


def _events(trace: Path) -> list[tuple[float, str, str, list[str]]]:
    if not trace.exists():
        return []
    out = []
    for line in trace.read_text().splitlines():
        t, kind, name, *rest = line.split()
        out.append((float(t), kind, name, rest))
    return out


def _landed(events) -> str:
    """Where the kill landed: inside the write of a file, or between writes (training, evaluation, start-up)."""
    open_, done = [], set()
    for _, kind, name, rest in events:
        if kind == "begin":
            open_.append(name)
        elif kind == "end":
            open_.remove(name)
            done.add(name)
    if open_:
        return f"writing {'ckpt.pt' if 'checkpoint' in open_ else open_[-1]}"
    if "result.json" in done:
        return "after result.json (clean-up, exit)"
    return "between writes (start-up, training, evaluation)"


def campaign(out: Path, kills: int, seed: int, work: Path) -> dict:
    import numpy as np

    global DATA, CFG
    from scribbleseg import experiment
    from scribbleseg.data.embedded import EmbeddedConfig, SceneConfig, ensure_embedded
    from scribbleseg.data.folder import ScribbleVariant
    from scribbleseg.train import TrainConfig

    t_start = time.monotonic()
    DATA = EmbeddedConfig(n_train=24, n_val=8, scene=SceneConfig(size=64, object_size=(16, 32)))
    CFG = TrainConfig(width=4, epochs=3, batch_size=8, lr=1e-2)
    root = ensure_embedded(DATA, work / "data")
    experiment.ensure_embedded = lambda c: root
    experiment.load_data(DATA, "train", ScribbleVariant()), experiment.load_data(DATA, "val")  # inherited by forks

    t0 = time.monotonic()
    ref_pid = _fork_run(work / "ref", work / "ref.json", work / "ref.trace")
    assert _wait(ref_pid) == 0, "the uninterrupted run failed"
    ref_seconds = time.monotonic() - t0
    ref = json.loads((work / "ref.json").read_text())
    writes = [(name, int(rest[0]), int(rest[1])) for _, kind, name, rest in _events(work / "ref.trace")
              if kind == "end" and name != "checkpoint"]

    rng = np.random.default_rng(seed)
    n_write = kills // 2
    ckpts = [w for w in writes if w[0] == "ckpt.pt"]
    targets = [ckpts[rng.integers(len(ckpts))], next(w for w in writes if w[0] == "result.json")]
    rest = [w for w in writes if w not in targets]
    targets += [rest[i] for i in rng.choice(len(rest), max(0, n_write - 2), replace=False)]
    modes = ["write"] * n_write + ["time"] * (kills - n_write)
    modes = [modes[i] for i in rng.permutation(kills)]
    trials, it = [], iter(targets[:n_write])
    for i, mode in enumerate(modes):
        cache, trace = work / f"k{i}", work / f"k{i}.trace"
        if mode == "write":
            name, k, size = next(it)
            target = (name, k, int(rng.integers(1, size)) if size > 1 else 0)
            pid = _fork_run(cache, None, trace, target)
            end = time.monotonic() + 60
            while not any(e[1] == "stall" for e in _events(trace)) and time.monotonic() < end:
                time.sleep(0.002)
            moment = f"{name} #{k} at byte {target[2]} of {size}"
        else:
            delay = float(rng.uniform(0.0, ref_seconds))
            pid = _fork_run(cache, None, trace)
            time.sleep(delay)
            moment = f"{delay:.3f} s of {ref_seconds:.3f} s"
        os.kill(pid, signal.SIGKILL)
        status = _wait(pid)
        landed = _landed(_events(trace))
        left = sorted(p.name for p in cache.glob("*/*"))  # the run's folder as the kill left it
        res_pid = _fork_run(cache, work / f"k{i}.json", None)
        assert _wait(res_pid) == 0, f"kill {i}: the resumed run failed"
        res = json.loads((work / f"k{i}.json").read_text())
        same = {"metrics": res["metrics"] == ref["metrics"], "history": res["history"] == ref["history"],
                "weights": res["weights"] == ref["weights"], "files": res["files"] == FINISHED}
        resumed = next((m for m in res["logs"] if m.startswith("resuming")), None)
        trials.append({"kill": i, "mode": mode, "moment": moment, "killed_by_sigkill": status == -signal.SIGKILL,
                       "landed": landed, "left_on_disk": left, "resume": "cache hit" if res["cached"] else
                       (resumed or "trained from the start"), "identical": all(same.values()), "checks": same,
                       "warnings": [m for m in res["logs"] if "unreadable" in m or "warning" in m]})
    counts: dict[str, int] = {}
    for t in trials:
        counts[t["landed"]] = counts.get(t["landed"], 0) + 1
    report = {"kills": kills, "seed": seed, "identical": sum(t["identical"] for t in trials),
              "landed": counts, "reference_seconds": round(ref_seconds, 3),
              "total_seconds": round(time.monotonic() - t_start, 1), "trials": trials}
    out.write_text(json.dumps(report, indent=1))
    return report


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        report = campaign(args.out, args.kills, args.seed, work)
    print(json.dumps({k: v for k, v in report.items() if k != "trials"}))


# --- the test --------------------------------------------------------------------------------------------------

def test_sigkill_at_ten_random_moments_then_resume_equals_uninterrupted(tmp_path):
    out = tmp_path / "report.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, __file__, str(out), "--kills", "10", "--seed", "0", "--work",
                        str(tmp_path / "work")], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    report = json.loads(out.read_text())
    print(json.dumps({k: v for k, v in report.items() if k != "trials"}, indent=1))
    bad = [t for t in report["trials"] if not t["identical"]]
    assert not bad, json.dumps(bad, indent=1)
    assert report["identical"] == report["kills"] == 10
    assert all(t["killed_by_sigkill"] for t in report["trials"])
    assert report["landed"].get("writing ckpt.pt", 0) >= 1 and report["landed"].get("writing result.json", 0) >= 1
    for t in report["trials"]:
        assert not t["warnings"], t  # atomic writes: the resumed run never finds an unreadable file
        if t["mode"] == "write":     # the half-written data were in a temporary, never under the file's name
            assert any(n.startswith(".") and n.endswith(".tmp") for n in t["left_on_disk"]), t


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
    main()
