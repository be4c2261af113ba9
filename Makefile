# Every target first makes sure libtorch (PyPI torch==2.11.0) is installed; see scripts/libtorch.sh.
# cargo finds it through the ./.libtorch link that the script maintains (.cargo/config.toml sets
# LIBTORCH to it), so `make` and plain `cargo` builds share one build of torch-sys.
# `make run` trains the default config; `make test` is what CI runs.

CONFIG ?= configs/darkroom_relic.ron
CARGO ?= cargo
# libtorch's OpenMP workers spin while idle; on 2 shared cores that costs several-fold.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: all libtorch build run test bench fmt lint clean tensorboard

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

bench: build
	target/release/icrl info
	target/release/icrl bench env --env darkroom
	$(CARGO) bench --workspace

fmt:
	$(CARGO) fmt --all

lint: libtorch
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
