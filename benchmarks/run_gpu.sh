#!/usr/bin/env bash
# The GPU benchmarks in one go, on a machine with only torch, torchvision, numpy, pandas,
# pyyaml (no Jupyter, papermill or dvc; kd need not be installed): throughput (eager and
# torch.compile) and packing. About 5-8 minutes on one H100 (estimate, not yet measured).
# Results go to results/benchmarks/; when $OUT is set (the device tool's output folder) they
# are copied there too, with the console log.
#
#   bash benchmarks/run_gpu.sh                 # everything
#   SKIP_COMPILE=1 bash benchmarks/run_gpu.sh  # without the torch.compile variant
#
# The full-profile pipeline time is separate (benchmarks/pipeline_time.py, see README).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
RES=results/benchmarks
mkdir -p "$RES"
LOG="$RES/run_gpu.log"
: > "$LOG"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee -a "$LOG" || true

slug=$("$PY" -c "import sys; sys.path.insert(0, 'benchmarks'); import bench_common as bc, torch; print(bc.device_slug(torch.device('cuda')))")

"$PY" benchmarks/throughput.py --device cuda 2>&1 | tee -a "$LOG"
if [ -z "${SKIP_COMPILE:-}" ]; then
    "$PY" benchmarks/throughput.py --device cuda --compile --sync-methods "" \
        --out "$RES/throughput_${slug}_compile.json" 2>&1 | tee -a "$LOG"
fi
"$PY" benchmarks/packing.py --device cuda 2>&1 | tee -a "$LOG"

if [ -n "${OUT:-}" ]; then
    cp "$RES/throughput_${slug}.json" "$RES/packing_steps_${slug}.json" "$LOG" "$OUT"/
    [ -f "$RES/throughput_${slug}_compile.json" ] && cp "$RES/throughput_${slug}_compile.json" "$OUT"/
fi
echo "done: $RES"
