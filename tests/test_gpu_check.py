"""The prepared GPU check (benchmarks/gpu_check.py) runs end to end: here on CPU with --quick (small network
and crop), so that when a GPU is at hand the script is known to work. Its numbers are not checked (speed is
measured, never asserted); its structure and the finiteness of every method's smoke run are."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_quick_on_cpu_writes_every_part(tmp_path):
    out = tmp_path / "gpu_check.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--quick", "--device", "cpu",
                        "--batch", "2", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["runtime"]["device"] == "cpu" and report["quick"]
    assert len(report["smoke"]) == 7 and all(v["finite"] for v in report["smoke"].values())
    assert all("s_per_step" in v for v in report["paper_steps"].values())
    assert set(report["variants"]) == {"amp off", "fp16", "bf16", "fp16 + channels-last", "fp16 + cudnn.benchmark"}
    assert set(report["data_loading"]) >= {"workers 0"} and report["torchrun"]["ok"]
