# TradingBot Operator. The two commands a new machine needs: `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo

include tests/cluster/Makefile.inc

.PHONY: help test demo demo-down crds fmt lint images bench plugin

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/^[^:]*://' | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

test: ## Everything CI runs: lints, CRD check, unit tests and the real-cluster suites
	tests/ci.sh

demo: ## Bring up the cluster, operator, exchange simulator and sample bots, and show them
	tests/demo/demo.sh

demo-down: ## Remove everything `make demo` started
	tests/demo/demo-down.sh

crds: ## Regenerate the CRD YAMLs (crds/ and the chart's copies) and docs/CRD_REFERENCE.md from the Rust types
	$(CARGO) run -q -p tradingbot-crds --bin crdgen -- crds/tradingbot.crd.yaml --account crds/tradingaccount.crd.yaml
	cp crds/tradingbot.crd.yaml charts/tradingbot-operator/files/tradingbot.crd.yaml
	cp crds/tradingaccount.crd.yaml charts/tradingbot-operator/files/tradingaccount.crd.yaml
	$(CARGO) run -q -p tradingbot-crds --bin crdgen -- --markdown docs/CRD_REFERENCE.md

# Where `make plugin` installs kubectl-tradingbot (kubectl finds plugins on PATH) and how it builds it.
PLUGIN_DIR ?= $(HOME)/.local/bin
PLUGIN_PROFILE ?= release
PLUGIN_OUT = target/$(if $(filter dev,$(PLUGIN_PROFILE)),debug,$(PLUGIN_PROFILE))/kubectl-tradingbot

plugin: ## Build and install the kubectl plugin `kubectl tradingbot` (into PLUGIN_DIR, default ~/.local/bin)
	$(CARGO) build -q --profile $(PLUGIN_PROFILE) -p kubectl-tradingbot
	install -D -m 0755 $(PLUGIN_OUT) $(PLUGIN_DIR)/kubectl-tradingbot
	@echo "installed $(PLUGIN_DIR)/kubectl-tradingbot: run kubectl tradingbot --help ($(PLUGIN_DIR) must be on PATH)"

fmt: ## Format the code
	$(CARGO) fmt --all

lint: ## rustfmt check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

images: ## Build the container images and load them into the local cluster
	tests/images/build-images.sh

bench: ## Benchmarks against their baselines (prints a table, writes docs/BENCHMARKS.md)
	tests/bench/bench.sh
