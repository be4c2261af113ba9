# Every target first makes sure libtorch (PyPI torch==2.11.0) is installed; see scripts/libtorch.sh.
# cargo finds it through the ./.libtorch link that the script maintains (.cargo/config.toml sets
# LIBTORCH to it), so `make` and plain `cargo` builds share one build of torch-sys.
# `make run` trains the default config; `make test` is what CI runs.

CONFIG ?= configs/darkroom_relic.ron
CARGO ?= cargo
# libtorch's OpenMP workers spin while idle; on 2 shared cores that costs several-fold.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: all libtorch build run test test-slurm bench bench-compare bench-compare-dpt fmt lint clean tensorboard gpu-bundle gpu-check

all: build

libtorch:
	@scripts/libtorch.sh >/dev/null

build: libtorch
	$(CARGO) build --release --bin icrl

run: build
	target/release/icrl train $(CONFIG)

# `make tensorboard [LOGDIR=sweeps/NAME] [PORT=6006]`: TensorBoard from the cached environment.
LOGDIR ?= runs
PORT ?= 6006
tensorboard: libtorch
	scripts/tensorboard.sh $(LOGDIR) $(PORT)

test: libtorch
	$(CARGO) build --release --bin icrl
	$(CARGO) test --workspace --release

# The Slurm launcher on a real one-node cluster (installs Debian's slurm packages; needs root).
test-slurm: build
	scripts/test_slurm.sh

bench: build
	target/release/icrl info
	target/release/icrl bench env --env darkroom
	$(CARGO) bench --workspace

# `icrl bench model` against its PyTorch eager reference (bench/reference/relic_model.py, run by
# the project's cached Python), alternating for ROUNDS rounds at each thread count of THREADS;
# prints every round, the medians and the median ratio. WORK=decode (64 envs) or train (batch 16).
ROUNDS ?= 5
THREADS ?= 1,2
WORK ?= decode
CONTEXT ?= 512
BENCH_PYTHON ?= $(or $(ICRL_CACHE),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/icrl)/torch-2.11.0/bin/python

bench-compare: build
	$(BENCH_PYTHON) bench/reference/compare.py --python $(BENCH_PYTHON) --work $(WORK) \
		--rounds $(ROUNDS) --threads $(THREADS) --context $(CONTEXT) $(if $(BATCH),--batch $(BATCH))

# `make bench-compare-dpt`: DPT training tokens/s, `icrl bench train` on configs/darkroom_dpt.ron
# against the official DPT code's model and step (bench/reference/compare_dpt.py); the official
# repository and transformers 4.5.1 go into .bench-deps/ (scripts/dpt_reference.sh; DPT_REPO=PATH
# for an existing clone).
BENCH_DEPS ?= .bench-deps
bench-compare-dpt: build
	scripts/dpt_reference.sh $(BENCH_PYTHON) $(BENCH_DEPS)
	$(BENCH_PYTHON) bench/reference/compare_dpt.py --python $(BENCH_PYTHON) \
		--repo $(or $(DPT_REPO),$(BENCH_DEPS)/dpt) --pythonpath $(BENCH_DEPS)/python \
		--rounds $(ROUNDS) --threads $(THREADS)

# `make gpu-bundle`: the release binary and the CUDA test executables built with the `cuda`
# feature into target/gpu-bundle/ (stripped; carried to a GPU machine, where nothing is
# compiled). `make gpu-check [GPU_OUT=DIR] [DEVICE=cuda:0]` runs scripts/gpu_check.sh with
# them (docs/gpu.md).
GPU_OUT ?= gpu_check
DEVICE ?= cuda:0
gpu-bundle: libtorch
	scripts/gpu_bundle.sh

gpu-check:
	scripts/gpu_check.sh $(GPU_OUT) --device $(DEVICE) --bin target/gpu-bundle

fmt:
	$(CARGO) fmt --all

lint: libtorch
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
