#!/usr/bin/env bash
# Everything CI runs (`make test`): formatting, lints, the committed CRD check, then the whole
# test suite against a real local Kubernetes cluster (built and cached by tests/cluster/).
#
# If this script starts the cluster, it stops it again at the end (KEEP_CLUSTER=1 keeps it).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source tests/cluster/lib.sh

step() { printf '\n==> %s\n' "$*" >&2; }

stop_cluster_at_exit_if_not_running

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

step "local Kubernetes cluster"
tests/cluster/cluster-up.sh

step "container images"
tests/images/build-images.sh

step "tests (unit, real cluster, end to end)"
export KUBECONFIG=$TB_KUBECONFIG
cargo test --workspace --no-fail-fast

if [[ -x tests/chart/test.sh ]]; then
  step "Helm chart"
  tests/chart/test.sh
fi
if [[ -x tests/argocd/test.sh ]]; then
  step "Argo CD health check"
  tests/argocd/test.sh
fi
step "all green"
