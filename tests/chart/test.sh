#!/usr/bin/env bash
# Tests of the Helm chart (charts/tradingbot-operator): strict lint, renders with defaults and
# with every optional feature, RBAC modes, the CRD copy, the PrometheusRule and dashboard against
# the metric contract (crds/src/bot_metrics.rs, operator/src/metrics.rs), the values schema,
# the alert expressions in a real Prometheus (when tests/cluster/prometheus.sh has cached it)
# and a server-side dry run against the local cluster (when it is up).
#
#   tests/chart/test.sh [-k PATTERN ...]     # extra arguments go to unittest
#
# Never starts or stops the cluster; creates and deletes its own namespaces only.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
source tests/cluster/lib.sh

PY=$(tests/cluster/python-env.sh)
export TB_CACHE TB_KUBECTL TB_KUBECONFIG
exec "$PY" tests/chart/test_chart.py -v "$@"
