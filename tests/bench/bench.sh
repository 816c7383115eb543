#!/usr/bin/env bash
# `make bench`: reaction time, fleet scale, bot throughput and the dev-fast smoke run, each
# against its baseline, on the local Kubernetes cluster with release builds. Prints one table
# and writes docs/BENCHMARKS.md. Never fails on timing; fails only when a measurement cannot
# be taken. Arguments select parts: pipeline, reaction, fleet (docs/BENCHMARKS.md is written
# only by a full run).
#
# If this run starts the cluster, it stops it again at the end, unless another run or a demo
# still uses it (KEEP_CLUSTER=1 keeps it).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
source tests/cluster/lib.sh

claim_cluster_for_this_run

tests/cluster/cluster-up.sh
CARGO_PROFILE=release tests/images/build-images.sh
cargo build --release -p bench -p perps-bot
export KUBECONFIG=$TB_KUBECONFIG
target/release/bench "$@"
