# Every target first makes sure libtorch (PyPI torch==2.11.0) is installed; see scripts/libtorch.sh.
# `make run` trains the default config; `make test` is what CI runs.

CONFIG ?= configs/darkroom_relic.ron
CARGO ?= cargo
LIBTORCH_DIR = $(shell scripts/libtorch.sh)
# libtorch's OpenMP workers spin while idle; on 2 shared cores that costs several-fold.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: all libtorch build run test bench fmt lint clean

all: build

libtorch:
	@scripts/libtorch.sh >/dev/null

build: libtorch
	LIBTORCH=$(LIBTORCH_DIR) $(CARGO) build --release --bin icrl

run: build
	target/release/icrl train $(CONFIG)

test: libtorch
	LIBTORCH=$(LIBTORCH_DIR) $(CARGO) build --release --bin icrl
	LIBTORCH=$(LIBTORCH_DIR) $(CARGO) test --workspace --release

bench: build
	target/release/icrl info
	target/release/icrl bench env --env darkroom
	LIBTORCH=$(LIBTORCH_DIR) $(CARGO) bench --workspace

fmt:
	$(CARGO) fmt --all

lint: libtorch
	LIBTORCH=$(LIBTORCH_DIR) $(CARGO) fmt --all -- --check
	LIBTORCH=$(LIBTORCH_DIR) $(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
