#!/usr/bin/env bash
# Tests of the Helm chart (charts/tradingbot-operator): strict lint, renders with defaults and
# with every optional feature, RBAC modes, the CRD copy, the PrometheusRule and dashboard against
# the metric contract (crds/src/bot_metrics.rs, operator/src/metrics.rs), the values schema,
# the alert expressions in a real Prometheus and a server-side dry run against the local cluster.
#
#   tests/chart/test.sh [-k PATTERN ...]     # extra arguments go to unittest
#
# Provides everything it needs itself: the Python venv with Helm's SDK (python-env.sh),
# Prometheus (prometheus.sh) and the local cluster (cluster-up.sh; stopped again at exit only if
# this run started it and nobody else uses it). A part that cannot run fails; with CI=true a
# skipped test fails too. Creates and deletes its own namespaces only.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
source tests/cluster/lib.sh

claim_cluster_for_this_run
PY=$(tests/cluster/python-env.sh)
TB_PROMETHEUS=$(tests/cluster/prometheus.sh | tail -n 1)
tests/cluster/cluster-up.sh >&2
export TB_CACHE TB_KUBECTL TB_KUBECONFIG TB_PROMETHEUS
"$PY" tests/chart/test_chart.py -v "$@"
