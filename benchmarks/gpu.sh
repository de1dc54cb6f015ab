#!/usr/bin/env bash
# One prepared GPU run, for a machine with a CUDA device (run from anywhere):
#
#   bash benchmarks/gpu.sh                 # everything (about 10 minutes on an H100/H200-class GPU)
#   QUICK=1 bash benchmarks/gpu.sh         # d ≤ 1e7 only
#   DRY_RUN=1 bash benchmarks/gpu.sh       # rehearsal on the CPU backends, tiny sizes (no GPU needed)
#
# 1. Correctness: CuPy, JAX (GPU) and PyTorch (CUDA) against NumPy float64 on the CPU
#    (benchmarks/gpu_check.py): direct, fused and product-form Ginger, and QNG.
# 2. Timings: the benchmark table (bench.py) per backend, float32, d ∈ {1e6, 1e7, 1e8},
#    τ ∈ {4, 16, 64}, timed with CUDA events (CuPy, PyTorch) or block_until_ready (JAX).
#    Target: update + query ≤ 4 passes over U at d = 1e8, τ ∈ {4, 16}.
# 3. Tables and figures: benchmarks/report.py.
#
# Every step has its own timeout (CHECK_TIMEOUT, BACKEND_TIMEOUT seconds; CASE_TIMEOUT bounds the
# rounds of one case), an unavailable backend is reported and skipped, and results are written
# case by case, so a run cut short still leaves its tables in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python}
OUT=${OUT:-benchmarks/results/gpu}
CHECK_TIMEOUT=${CHECK_TIMEOUT:-240}
BACKEND_TIMEOUT=${BACKEND_TIMEOUT:-420}
CASE_TIMEOUT=${CASE_TIMEOUT:-60}
DIMS=${DIMS:-1e6,1e7,1e8}
RANKS=${RANKS:-4,16,64}
ROUNDS=${ROUNDS:-5}
OPS=${OPS:-ginger.update,ginger.query,ginger.update+query,ginger.fused,ginger.fused.donated,product.fused.donated,ginger.fused.near.donated,product.fused.near.donated,qng.update+query,rotate.gemm,rotate.flop-floor}
CHECK_BACKENDS=${CHECK_BACKENDS:-cupy,jax-gpu,torch-cuda}
# backend:device pairs for bench.py
BENCH=${BENCH:-"cupy: jax:gpu torch:cuda"}
if [[ -n "${QUICK:-}" ]]; then
    DIMS=1e6,1e7
fi
if [[ -n "${DRY_RUN:-}" ]]; then
    DIMS=1e4
    RANKS=4
    ROUNDS=1
    CHECK_BACKENDS=numpy,jax-cpu,torch-cpu
    BENCH="numpy: jax: torch:"
    CHECK_ARGS="--dim 2000 --steps 12 --dtypes float32"
fi
mkdir -p "$OUT"
status=0

echo "== machine"
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "nvidia-smi: not available") | tee "$OUT/machine.txt"
"$PY" -c "import sys, numpy; print('python', sys.version.split()[0], 'numpy', numpy.__version__)" | tee -a "$OUT/machine.txt"
for mod in cupy jax torch; do
    "$PY" -c "import $mod; print('$mod', $mod.__version__)" 2>/dev/null | tee -a "$OUT/machine.txt" || echo "$mod: not installed" | tee -a "$OUT/machine.txt"
done

echo "== correctness against CPU float64 (timeout ${CHECK_TIMEOUT}s)"
# shellcheck disable=SC2086
timeout "$CHECK_TIMEOUT" "$PY" benchmarks/gpu_check.py --backends "$CHECK_BACKENDS" ${CHECK_ARGS:-} | tee "$OUT/check.txt"
rc=${PIPESTATUS[0]}
if [[ $rc -eq 124 ]]; then
    echo "correctness check: TIMEOUT after ${CHECK_TIMEOUT}s" | tee -a "$OUT/check.txt"
    status=1
elif [[ $rc -ne 0 ]]; then
    echo "correctness check: FAILED (exit $rc)" | tee -a "$OUT/check.txt"
    status=1
fi

csvs=()
for pair in $BENCH; do
    backend=${pair%%:*}
    device=${pair#*:}
    dev_args=()
    if [[ -n "$device" ]]; then
        dev_args=(--device "$device")
    fi
    echo "== timings: $backend ${device:-default device} (timeout ${BACKEND_TIMEOUT}s)"
    timeout "$BACKEND_TIMEOUT" "$PY" benchmarks/bench.py --backends "$backend" "${dev_args[@]}" \
        --dtypes float32 --dims "$DIMS" --ranks "$RANKS" --rounds "$ROUNDS" --ops "$OPS" \
        --threads 16 --timeout "$CASE_TIMEOUT" --min-sample 0.002 --label gpu --out "$OUT/$backend"
    rc=$?
    if [[ $rc -eq 124 ]]; then
        echo "$backend: TIMEOUT after ${BACKEND_TIMEOUT}s (the cases finished so far are kept)"
    elif [[ $rc -ne 0 ]]; then
        echo "$backend: exit $rc"
    fi
    if [[ -f "$OUT/$backend/results.csv" ]]; then
        csvs+=("$OUT/$backend/results.csv")
    fi
done

if [[ ${#csvs[@]} -gt 0 ]]; then
    echo "== tables"
    "$PY" benchmarks/report.py "${csvs[@]}" --before none --after gpu --out "$OUT" && cat "$OUT/tables.md"
else
    echo "no timings were recorded"
fi
exit $status
