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

# test_targets PACKAGES NAMES: `--test NAME` for every integration-test target of the
# workspace packages matching the regex PACKAGES, or named by the regex NAMES;
# test_targets_except: for every other one.
test_targets() { list_test_targets "$1" "$2" match; }
test_targets_except() { list_test_targets "$1" "$2" other; }
list_test_targets() {
  cargo metadata --format-version 1 --no-deps | python3 -c '
import json, re, sys
packages, names, which = re.compile(sys.argv[1]), re.compile(sys.argv[2]), sys.argv[3]
seen = set()
for package in json.load(sys.stdin)["packages"]:
    for target in package["targets"]:
        if "test" not in target["kind"]:
            continue
        chosen = bool(packages.fullmatch(package["name"]) or names.fullmatch(target["name"]))
        if chosen == (which == "match") and target["name"] not in seen:
            seen.add(target["name"])
            print("--test")
            print(target["name"])
' "$1" "$2" "$3"
}

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

step "tests (unit, real cluster, end to end): built once, then run in two lanes"
export KUBECONFIG=$TB_KUBECONFIG
mkdir -p target/test-logs
cargo test --workspace --no-run
# Most of the suite waits on real processes (pods starting, bots cycling, the exchange
# simulator), so two lanes of test binaries side by side nearly halve the wall time on two
# cores. Both lanes select the whole workspace and split by target, so features resolve as in
# the build above and nothing is compiled again. Lane A (end to end, plugin, bot, rollouts) is
# logged to a file and printed when it ends; lane B (units, the operator and the rest) streams.
# Every test namespace is its own; the lanes share only cluster-wide objects. The TradingBot
# CRD: each test creates its namespace before installing it, under a lock that `make demo-down`
# in lane A holds while it decides to remove the CRD, so that decision sees every running test
# (TB_CRD_LOCK in tests/cluster/lib.sh). The ServiceMonitor CRD: only the ServiceMonitor test
# and the chart suite after the lanes use it.
mapfile -t LANE_A < <(test_targets 'e2e-tests|kubectl-tradingbot|perps-bot' 'rollouts')
mapfile -t LANE_B < <(test_targets_except 'e2e-tests|kubectl-tradingbot|perps-bot' 'rollouts')
LANE_A=(--workspace "${LANE_A[@]}")
LANE_B=(--workspace --lib --bins "${LANE_B[@]}")
cargo test --no-fail-fast "${LANE_A[@]}" >target/test-logs/lane-a.log 2>&1 &
lane_a=$!
# Lane A stops with this run (by pid), before the cluster it uses may be released.
on_exit=$(trap -p EXIT | sed -E "s/^trap -- '(.*)' EXIT$/\1/")
trap 'pkill -TERM -P "$lane_a" 2>/dev/null; kill "$lane_a" 2>/dev/null; '"$on_exit" EXIT
status_b=0
cargo test --no-fail-fast "${LANE_B[@]}" 2>&1 | tee target/test-logs/lane-b.log || status_b=$?
status_a=0
wait "$lane_a" || status_a=$?
trap "$on_exit" EXIT
step "lane A (end to end, plugin, bot): its log"
cat target/test-logs/lane-a.log
cat target/test-logs/lane-a.log target/test-logs/lane-b.log >target/test-logs/cargo-test.log
failed=()
((status_a == 0)) || failed+=("cargo test lane A (exit $status_a)")
((status_b == 0)) || failed+=("cargo test lane B (exit $status_b)")
if [[ ${CI:-} == true && -n $(ignored_tests target/test-logs/cargo-test.log) ]]; then
  ignored_tests target/test-logs/cargo-test.log >&2
  failed+=("CI=true: tests were ignored (a skip is a failure in CI)")
fi

# The suites outside cargo run even when a cargo lane failed, so one run shows every failure.
for entry in "${SUITES[@]}"; do
  step "${entry%%|*}"
  "${entry#*|}" || failed+=("${entry%%|*} (exit $?)")
done
if ((${#failed[@]} > 0)); then
  step "failed:"
  printf '  %s\n' "${failed[@]}" >&2
  exit 1
fi
step "all green"
