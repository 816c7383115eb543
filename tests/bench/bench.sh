#!/usr/bin/env bash
# `make bench`: reaction time, fleet scale, bot throughput and the dev-fast smoke run, each
# against its baseline, on the local Kubernetes cluster with release builds. Prints one table
# and writes docs/BENCHMARKS.md. Never fails on timing; fails only when a measurement cannot
# be taken. Arguments select parts: pipeline, reaction, fleet (docs/BENCHMARKS.md is written
# only by a full run).
#
# If this script starts the cluster, it stops it again at the end (KEEP_CLUSTER=1 keeps it).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
source tests/cluster/lib.sh

cluster_running() {
  [[ -f $TB_KUBECONFIG ]] && "$TB_KUBECTL" --kubeconfig "$TB_KUBECONFIG" get --raw /readyz >/dev/null 2>&1
}
started_cluster=0
cluster_running || started_cluster=1
cleanup() {
  if [[ $started_cluster == 1 && -z ${KEEP_CLUSTER:-} ]]; then
    echo "bench: stopping the cluster this run started" >&2
    tests/cluster/cluster-down.sh || true
  fi
}
trap cleanup EXIT

tests/cluster/cluster-up.sh
CARGO_PROFILE=release tests/images/build-images.sh
cargo build --release -p bench -p perps-bot
export KUBECONFIG=$TB_KUBECONFIG
target/release/bench "$@"
