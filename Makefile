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

.PHONY: setup build release test fmt lint fuzz demo demo-local bench bench-distributed k8s-check clean

$(SETUP_STAMP): scripts/setup-libtorch.sh
	./scripts/setup-libtorch.sh

setup:
	./scripts/setup-libtorch.sh

build: setup
	$(CARGO) build --workspace --all-targets

release: setup
	$(CARGO) build --release --workspace --bins

## Format check, then every test of the workspace (unit, integration, the
## PyTorch parity tests).
test: setup
	$(CARGO) fmt --all -- --check
	# The real-process tests start rwp-server and rwp-worker: build every binary
	# first (cargo test builds a package's binaries only for its own tests).
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --no-fail-fast
	$(MAKE) --no-print-directory k8s-check

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

## Time per update of the local trainer against the PyTorch reference script.
bench: release
	./scripts/bench-local.sh

## m-arwp on two workers against sgd on one, real processes on loopback.
bench-distributed: release
	RUST_LOG=error target/release/bench-distributed

clean:
	$(CARGO) clean
