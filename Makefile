# The conventional entry point. `make demo` and `make test` set everything up
# on a fresh machine (see scripts/setup-libtorch.sh); later runs reuse it.
SHELL := /bin/bash
ROOT := $(abspath .)
export VIRTUAL_ENV := $(ROOT)/.venv
export PATH := $(ROOT)/.venv/bin:$(PATH)
ifndef LIBTORCH
export LIBTORCH_USE_PYTORCH := 1
endif
CARGO ?= cargo
SETUP_STAMP := .cargo/config.toml

.PHONY: setup build release check test test-python wheel fmt lint fuzz demo demo-local bench bench-gpu bench-local bench-sandbox bench-loader gpu-bundle chaos load k8s-check clean

$(SETUP_STAMP): scripts/setup-libtorch.sh
	./scripts/setup-libtorch.sh

setup:
	./scripts/setup-libtorch.sh

build: setup
	$(CARGO) build --workspace --all-targets

release: setup
	$(CARGO) build --release --workspace --bins

## The everyday loop: format check, clippy, and the unit tests of every
## crate (the scheduler's rules among them); no real-process, Python or
## Kubernetes suites. `make test` is the full suite CI runs.
check: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace --lib --bins

## Format check, then every test of the workspace (unit, integration, the
## PyTorch parity tests).
test: setup
	$(CARGO) fmt --all -- --check
	# The real-process tests start rwp-server and rwp-worker: build every binary
	# first (cargo test builds a package's binaries only for its own tests).
	$(CARGO) build --workspace --bins
	# The dashboard's tests drive a headless Chromium (installed once).
	./scripts/setup-browser.sh
	$(CARGO) test --workspace --no-fail-fast
	$(MAKE) --no-print-directory test-python
	$(MAKE) --no-print-directory k8s-check

## The Python client (clients/python): installs it into .venv (its gRPC
## modules are generated from proto/ as it is built) and runs its tests
## against real rwp-server and rwp-worker processes, mypy --strict included.
## The test extra brings the notebook example's runner (nbclient, ipykernel);
## test_wheel.py builds the wheel (make wheel) and installs it in a fresh venv.
test-python: setup
	$(CARGO) build -p rwp-parameter-server -p rwp-gradient-worker --bins
	python -m pip install --quiet --disable-pip-version-check "./clients/python[test]"
	RWP_BIN_DIR=$(or $(CARGO_TARGET_DIR),target)/debug python -m pytest -q clients/python/tests

## The Python client as users install it: dist/rwp_client-<version>-py3-none-any.whl
## with its gRPC modules and their .pyi stubs generated from proto/ inside, so
## installing it needs only grpcio and protobuf, not grpcio-tools. pip builds
## it in an isolated environment with the build requirements of
## clients/python/pyproject.toml (from PyPI); no libtorch, no cargo.
## WHEEL_DIR and PYTHON (default: .venv's, else python3) may be set. An
## earlier build's clients/python/build goes first: what it left would be
## packaged too.
WHEEL_DIR ?= dist
PYTHON ?= $(if $(wildcard $(ROOT)/.venv/bin/python),$(ROOT)/.venv/bin/python,python3)
wheel:
	rm -rf clients/python/build
	$(PYTHON) -m pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir "$(WHEEL_DIR)" ./clients/python
	@ls -1 "$(WHEEL_DIR)"/rwp_client-*-py3-none-any.whl

## Kubernetes manifests and images (docs/deploy.md): render every overlay,
## validate against the Kubernetes 1.32 schemas, check ports, probes, flags,
## environment and config keys against the binaries (and start them with
## them), evaluate the NetworkPolicies, lint the Dockerfiles.
k8s-check: setup
	$(CARGO) build -p rwp-parameter-server -p rwp-gradient-worker --bins
	RWP_BIN_DIR=$(or $(CARGO_TARGET_DIR),target)/debug ./scripts/k8s-check.sh

fmt:
	$(CARGO) fmt --all

lint: setup
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## The fault-injection suite in its long form (docs/distributed.md): longer
## jobs, more kills. `make test` runs the same tests in their short form.
CHAOS_TESTS := chaos_worker_kills chaos_straggler chaos_server_kills chaos_checkpoint_storage
chaos: setup
	$(CARGO) build --workspace --bins
	mkdir -p runs/chaos
	RWP_CHAOS=long $(CARGO) test -p rwp-integration-tests --no-fail-fast \
		$(addprefix --test ,$(CHAOS_TESTS)) -- --nocapture --test-threads 1 2>&1 \
		| tee runs/chaos/chaos.log | grep --line-buffered -E "^(chaos:|test |test result)|panicked"; \
		status=$${PIPESTATUS[0]}; echo "full log: runs/chaos/chaos.log"; exit $$status

## The service under load (tests/bench/load.rs): 32 worker processes, 20
## concurrent jobs of a tiny model for 2 minutes; throughput, lease latency,
## server memory, and every job checked against the single-process trainer.
load: release
	RUST_LOG=error target/release/load-test

## cargo-fuzz targets (fuzz/): job files, protobuf job specs, gradient
## pushes, each for FUZZ_SECONDS; a summary line per target. Not part of
## `test` (crashes found become regression tests there). No libtorch.
FUZZ_SECONDS ?= 60
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) ./scripts/fuzz.sh

## README command one: server, two workers, an m-arwp and an sgd job, summary and plot.
demo: release
	./scripts/demo.sh

## The same comparison with the local trainer (one process, no services).
demo-local: release
	./scripts/demo-local.sh

## The performance suite (tests/bench/suite.rs): parallel efficiency, SAM,
## PyTorch DDP, transport, aggregation, server memory; every figure a ratio
## measured side by side. Writes BENCHMARKS.md and benchmarks/results-cpu.json.
bench: release
	RUST_LOG=error target/release/bench-suite

## Benchmarks 1 to 3 with the workers on the CUDA device: the GPU block of BENCHMARKS.md.
bench-gpu: release
	DEVICE=cuda SECTIONS=1,2,3 RUST_LOG=error target/release/bench-suite

## The binaries scripts/gpu-check.sh runs on a GPU machine that has torch but
## no toolchain: stripped release builds in target/gpu (copy the repository
## and target/gpu there; the script finds libtorch in the machine's torch).
gpu-bundle: release
	mkdir -p $(or $(CARGO_TARGET_DIR),target)/gpu
	for b in bench-suite rwp rwp-server rwp-worker rwp-sandbox rwp-train; do \
		strip -o $(or $(CARGO_TARGET_DIR),target)/gpu/$$b $(or $(CARGO_TARGET_DIR),target)/release/$$b; done

## Time per update of the local trainer against the PyTorch reference script
## (and, last, the model sandbox's cost: bench-sandbox).
bench-local: release
	./scripts/bench-local.sh

## A worker's update of a TorchScript CNN in process and in the model
## sandbox, side by side (crates/rwp-sandbox/benches/sandbox.rs).
bench-sandbox: setup
	$(CARGO) bench -p rwp-sandbox --bench sandbox

## The image loader (crates/rwp-images) against PyTorch's DataLoader on the
## same folder of JPEGs (written once under target/): images/s through the
## ImageNet training transforms at 224x224, as many threads as DataLoader
## workers as CPUs (crates/rwp-images/benches/loader.rs). Writes its section
## of BENCHMARKS.md.
bench-loader: setup
	$(CARGO) bench -p rwp-images --bench loader

clean:
	$(CARGO) clean
