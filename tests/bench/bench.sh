#!/usr/bin/env bash
# `make bench`: reaction time, fleet scale, bot throughput and the dev-fast smoke run, each
# against its baseline, on the local Kubernetes cluster with release builds. Prints one table
# and writes docs/BENCHMARKS.md. Never fails on timing; fails only when a measurement cannot
# be taken, and then only at the end: that part is an INVALID row, the other parts are still
# measured and written. Arguments select parts: pipeline, reaction, fleet, live (docs/BENCHMARKS.md is written
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
# Release images under tags of the bench's own: a test run reloading the :dev images meanwhile
# cannot swap what the bench measures.
CARGO_PROFILE=release IMAGES_TAG_SUFFIX=-bench IMAGES_OUT=target/bench-images tests/images/build-images.sh
export BENCH_IMAGE_TAG=dev-bench
cargo build --release -p bench -p perps-bot
export KUBECONFIG=$TB_KUBECONFIG
target/release/bench "$@"
