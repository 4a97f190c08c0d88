#!/usr/bin/env bash
# The GPU checks the docs still wait for, as one script for a short lease (docs/benchmarks.md):
#   1. the CUDA tests (compiled gradients against eager, the CUDA RNG state);
#   2. `mot bench` on the paper's 443M model at sequence 4,096, compiled, 2 and 3 modalities:
#      MoT's compiled step with correct gradients (the first numbers were withdrawn);
#   3. the same eager with 2 modalities (re-timing the routing's gather of aa4436b);
#   4. benchmarks/step_time.py on CUDA.
# Each step is skipped when less time is left than it needs; everything goes to $OUT (default
# gpu-checks/): log.txt and one JSON per bench. LIMIT (seconds, default 540) is the whole budget.
#   LIMIT=540 OUT=gpu-checks bash scripts/gpu_checks.sh
# mot's dependencies must be importable (`pip install -e .`); src/ is put first on PYTHONPATH.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-checks}; LIMIT=${LIMIT:-540}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
START=$(date +%s)
left() { echo $(( LIMIT - ($(date +%s) - START) )); }
step() {  # step NAME SECONDS-NEEDED COMMAND...
  local name=$1 need=$2; shift 2
  if [ "$(left)" -lt "$need" ]; then echo "== skip $name (left $(left)s < ${need}s)" | tee -a "$OUT/log.txt"; return; fi
  echo "== $name (left $(left)s) $(date +%T)" | tee -a "$OUT/log.txt"
  local t0; t0=$(date +%s)
  timeout $(( $(left) - 5 )) "$@" > "$OUT/step.log" 2>&1; local rc=$?
  cat "$OUT/step.log" >> "$OUT/log.txt"
  echo "   rc=$rc in $(( $(date +%s) - t0 ))s" | tee -a "$OUT/log.txt"
  grep -E "^\| (dense|mot|moe4x) |passed|failed" "$OUT/step.log"
}
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch, sys; print(sys.version.split()[0], torch.__version__)"
  git rev-parse --short HEAD 2>/dev/null; } > "$OUT/log.txt" 2>&1
cat "$OUT/log.txt"
BENCH="python3 -m mot bench --config chameleon-443m-mot --seq 4096 --batch 4 --device cuda --bf16"
step cuda_tests 60 python3 -m pytest -q -p no:cacheprovider tests/model/test_compile.py tests/train/test_rng.py
step bench2_compiled 150 $BENCH --compile --modalities 2 --out "$OUT/bench2_compiled.json"
step bench3_compiled 150 $BENCH --compile --modalities 3 --out "$OUT/bench3_compiled.json"
step bench2_eager 60 $BENCH --modalities 2 --out "$OUT/bench2_eager.json"
step step_time 40 python3 benchmarks/step_time.py --device cuda --bf16 --width 1024 --layers 4 --seq 4096 \
  --batch 4 --json "$OUT/step_time.json"
rm -f "$OUT/step.log"
echo "== done, $(left)s left" | tee -a "$OUT/log.txt"
