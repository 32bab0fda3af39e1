# gatepass — `make run` starts the stack, `make test` runs every test.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: run test build release fmt lint clean

run:
	./scripts/run.sh

test: lint
	$(CARGO) build --workspace --all-targets
	$(CARGO) test --workspace --all-targets

build:
	$(CARGO) build --workspace

release:
	$(CARGO) build --workspace --release

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
