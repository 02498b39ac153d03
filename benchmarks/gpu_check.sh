#!/usr/bin/env bash
# The one prepared check for a machine with a GPU (under 8 minutes on one recent GPU; issue 13):
#   bash benchmarks/gpu_check.sh            -> benchmarks/results/gpu_check.json
# 1. smoke training of every method on CUDA with AMP (finite losses), 2. the paper profile's step time, images/s and
# peak memory per method on synthetic VOC-sized data, 3. AMP off / fp16 / bf16, channels-last and cudnn.benchmark on
# pCE's network, 4. the data-loading wait with 0 and 8 workers, 5. a 1-GPU torchrun launch.
# Set-up: `make env` (the README's); PY and OUT override the interpreter and the JSON's path.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-benchmarks/results/gpu_check.json}
[ -x "$PY" ] || make env
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible: this check is for a GPU machine (try: benchmarks/gpu_check.py --quick --device cpu)')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 470 "$PY" benchmarks/gpu_check.py --batch "${BATCH:-8}" --out "$OUT"
echo "gpu check written to $OUT"
