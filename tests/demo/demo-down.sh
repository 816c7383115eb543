#!/usr/bin/env bash
# `make demo-down`: removes what `make demo` created: the demo's TradingBots first (each halted
# by the operator before it goes), the operator, the two namespaces, and the TradingBot CRD if
# nothing else uses it; then stops the local cluster if the demo started it and no other run
# uses it (KEEP_CLUSTER=1 keeps it). DEMO_NS / DEMO_OPERATOR_NS as for `make demo`.
#
# The CRD stays while any TradingBot is left or a test namespace is active: deleting a CRD
# deletes every TradingBot of every namespace. It says so and leaves it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
source tests/cluster/lib.sh
DEMO_NS=${DEMO_NS:-tradingbot-demo}
OP_NS=${DEMO_OPERATOR_NS:-tradingbot-system}
DEMO_DIR=$TB_CLUSTER_DIR/demo/$DEMO_NS
DEMO_ID=demo-$DEMO_NS
CRD=crd/tradingbots.trading.gpttrader.io
k() { "$TB_KUBECTL" --kubeconfig "$TB_KUBECONFIG" "$@"; }

# crd_users: why the CRD must stay (TradingBots left, active test namespaces), one a line;
# fails when the cluster cannot say.
crd_users() {
  local bots tests
  bots=$(k get tradingbots -A -o jsonpath='{range .items[*]}TradingBot {.metadata.namespace}/{.metadata.name}{"\n"}{end}') || return 1
  tests=$(k get namespaces -l tradingbot-test=true \
    -o jsonpath='{range .items[?(@.status.phase=="Active")]}test namespace {.metadata.name}{"\n"}{end}') || return 1
  printf '%s\n%s\n' "$bots" "$tests" | grep . || true
}

remove_crd_if_unused() {
  local users lock
  k get "$CRD" >/dev/null 2>&1 || return 0
  # No test namespace is created between the check and the delete (TB_CRD_LOCK in lib.sh).
  exec {lock}>"$TB_CRD_LOCK"
  if ! flock -x -w 60 "$lock"; then
    echo "demo-down: keeping the TradingBot CRD: tests held $TB_CRD_LOCK for 60 s"
  elif ! users=$(crd_users); then
    echo "demo-down: keeping the TradingBot CRD: cannot list what uses it"
  elif [[ -n $users ]]; then
    echo "demo-down: keeping the TradingBot CRD: still in use by"
    sed 's/^/  /' <<<"$users"
  else
    echo "demo-down: deleting the TradingBot CRD (no TradingBot left)"
    k delete "$CRD" --ignore-not-found --wait=false
  fi
  exec {lock}>&-
}

if cluster_running; then
  echo "demo-down: deleting the demo's TradingBots in $DEMO_NS (halted first by the operator)"
  if ! k -n "$DEMO_NS" delete tradingbots --all --timeout=120s --ignore-not-found; then
    # No operator to finish them (scaled to zero, crashed): what the runbook does by hand, so
    # the namespace can go; the bot pods stop with it and cancel their own open orders.
    echo "demo-down: the operator did not finish deleting the demo's TradingBots: removing their finalizer" >&2
    for bot in $(k -n "$DEMO_NS" get tradingbots -o name 2>/dev/null); do
      k -n "$DEMO_NS" patch "$bot" --type json -p '[{"op":"remove","path":"/metadata/finalizers"}]' || true
    done
  fi
  if [[ -f $DEMO_DIR/operator.yaml ]]; then
    echo "demo-down: removing the operator"
    k delete -f "$DEMO_DIR/operator.yaml" --ignore-not-found --wait=false || true
  fi
  k delete namespace "$DEMO_NS" "$OP_NS" --ignore-not-found --wait=false
  remove_crd_if_unused
  rm -rf "$DEMO_DIR"
fi
cluster_release "$DEMO_ID"
stop_cluster_if_ours "$DEMO_ID"
echo "demo-down: done"
