#!/usr/bin/env bash
# Everything CI runs (`make test`): formatting and lints, the committed CRD check, then the whole
# test suite against a real local Kubernetes cluster (built and cached by tests/cluster/), then
# the suites outside cargo (SUITES below). A suite script that is missing or not executable
# fails the run, and with CI=true so does any skipped or ignored test.
#
# If this run starts the cluster, it stops it again at the end, unless another run or a demo
# still uses it (KEEP_CLUSTER=1 keeps it).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source tests/cluster/lib.sh

# Suites run after the cargo tests: description and script.
SUITES=(
  "Helm chart (lint, renders, PrometheusRule in a real Prometheus, server-side dry run)|tests/chart/test.sh"
  "Argo CD health check|tests/argocd/test.sh"
)

step() { printf '\n==> %s\n' "$*" >&2; }

# check_suites: every suite script exists and is executable (before anything slow runs).
check_suites() {
  local entry script
  for entry in "${SUITES[@]}"; do
    script=${entry#*|}
    [[ -f $script ]] || die "suite script $script is missing"
    [[ -x $script ]] || die "suite script $script is not executable"
  done
}

check_suites
claim_cluster_for_this_run

step "format and lints"
make lint

step "the CRD YAMLs, the chart's copies and docs/CRD_REFERENCE.md are what make crds generates"
GENERATED=(crds/tradingbot.crd.yaml charts/tradingbot-operator/files/tradingbot.crd.yaml
  crds/tradingaccount.crd.yaml charts/tradingbot-operator/files/tradingaccount.crd.yaml docs/CRD_REFERENCE.md)
before=$(sha256sum "${GENERATED[@]}")
make crds
[[ $(sha256sum "${GENERATED[@]}") == "$before" ]] || die "make crds changed ${GENERATED[*]}: commit its output"

step "local Kubernetes cluster"
make cluster-up

step "container images"
make images

step "tests (unit, real cluster, end to end)"
export KUBECONFIG=$TB_KUBECONFIG
mkdir -p target/test-logs
cargo test --workspace --no-fail-fast 2>&1 | tee target/test-logs/cargo-test.log
if [[ ${CI:-} == true && -n $(ignored_tests target/test-logs/cargo-test.log) ]]; then
  ignored_tests target/test-logs/cargo-test.log >&2
  die "CI=true: tests were ignored (a skip is a failure in CI)"
fi

for entry in "${SUITES[@]}"; do
  step "${entry%%|*}"
  "${entry#*|}"
done
step "all green"
