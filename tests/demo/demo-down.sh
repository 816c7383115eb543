#!/usr/bin/env bash
# `make demo-down`: removes what `make demo` created (bots first, so each is halted before it
# goes), the operator, the CRD, and stops the local cluster (KEEP_CLUSTER=1 keeps it running).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
source tests/cluster/lib.sh
DEMO_NS=tradingbot-demo
OP_NS=tradingbot-system
if cluster_running; then
  export KUBECONFIG=$TB_KUBECONFIG
  k() { "$TB_KUBECTL" "$@"; }
  echo "demo-down: deleting the demo's TradingBots (halted first by the operator)"
  k -n "$DEMO_NS" delete tradingbots --all --timeout=120s --ignore-not-found || true
  k delete namespace "$DEMO_NS" --ignore-not-found --wait=false
  if [[ -f $TB_CLUSTER_DIR/demo/operator.yaml ]]; then
    echo "demo-down: removing the operator"
    k delete -f "$TB_CLUSTER_DIR/demo/operator.yaml" --ignore-not-found --wait=false || true
  fi
  k delete namespace "$OP_NS" --ignore-not-found --wait=false
  # The CRD goes only if no other TradingBot uses it (deleting a CRD deletes every instance).
  others=$(k get tradingbots -A --no-headers 2>/dev/null | grep -vc "^$DEMO_NS " || true)
  if [[ $others == 0 ]]; then
    k delete crd tradingbots.trading.gpttrader.io --ignore-not-found --wait=false
  else
    echo "demo-down: keeping the TradingBot CRD: $others TradingBot(s) outside the demo still use it"
  fi
  rm -rf "$TB_CLUSTER_DIR/demo"
fi
if [[ -z ${KEEP_CLUSTER:-} ]]; then
  tests/cluster/cluster-down.sh
fi
echo "demo-down: done"
