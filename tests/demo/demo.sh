#!/usr/bin/env bash
# `make demo`: the whole product on this machine. Brings up the local Kubernetes cluster,
# builds and loads the images, runs the Coinbase exchange simulator as a pod, installs the
# operator from the Helm chart, applies two TradingBots (a paper-trading dev bot and a
# canary -> prod bot on the simulator), shows them, and prints what to try next.
#
# Environment:
#   DEMO_WATCH_SECONDS   how long the live table runs (default 60; 0: until both bots run)
#   DEMO_NS              the demo's namespace (default tradingbot-demo)
#   DEMO_OPERATOR_NS     the operator's namespace (default tradingbot-system)
# Tests run the demo in namespaces of their own, so they never touch a demo someone started.
# The demo claims the cluster until `make demo-down`: no test run stops it meanwhile.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
source tests/cluster/lib.sh

DEMO_NS=${DEMO_NS:-tradingbot-demo}
OP_NS=${DEMO_OPERATOR_NS:-tradingbot-system}
RELEASE=tradingbot-operator
WATCH_SECONDS=${DEMO_WATCH_SECONDS:-60}
DEMO_DIR=$TB_CLUSTER_DIR/demo/$DEMO_NS
# If this demo starts the cluster, `make demo-down` may stop it again (lib.sh).
export TB_RUN_ID=demo-$DEMO_NS
step() { printf '\n\033[1m==> [%s/7] %s\033[0m\n' "$1" "$2"; }

step 1 "Local Kubernetes cluster (the first run builds Kubernetes from Debian's sources, ~5 min)"
tests/cluster/cluster-up.sh
cluster_claim "$TB_RUN_ID"
export KUBECONFIG=$TB_KUBECONFIG
export PATH=$TB_CLUSTER_DIR/bin:$PATH

step 2 "Container images (perps-bot, tradingbot-operator, exchange-sim) and the kubectl plugin"
tests/images/build-images.sh >/dev/null
cat target/images/images.txt
# kubectl tradingbot, next to the cluster's kubectl (on the PATH the demo prints below).
make -s plugin PLUGIN_DIR="$TB_CLUSTER_DIR/bin" PLUGIN_PROFILE=dev

step 3 "Coinbase exchange simulator (as a pod) and an API key for the bots"
mkdir -p "$DEMO_DIR"
if [[ ! -f $DEMO_DIR/key.pem ]]; then
  openssl ecparam -name prime256v1 -genkey -noout -out "$DEMO_DIR/key.pem" 2>/dev/null
  openssl ec -in "$DEMO_DIR/key.pem" -pubout -out "$DEMO_DIR/key.pub" 2>/dev/null
fi
python3 - "$DEMO_DIR" <<'PY'
import json, sys
d = sys.argv[1]
name = "organizations/demo/apiKeys/demo-bot"
private = open(f"{d}/key.pem").read()
public = open(f"{d}/key.pub").read()
json.dump({"name": name, "privateKey": private}, open(f"{d}/cdp_api_key.json", "w"))
json.dump([{"name": name, "public_key_pem": public,
            "permissions": {"can_view": True, "can_trade": True, "can_transfer": False},
            "balances": {"USD": "100000"}}], open(f"{d}/keys.json", "w"))
PY
kubectl create namespace "$DEMO_NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n "$DEMO_NS" create secret generic exchange-sim-keys --from-file=keys.json="$DEMO_DIR/keys.json" \
  --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n "$DEMO_NS" create secret generic coinbase-demo --from-file=cdp_api_key.json="$DEMO_DIR/cdp_api_key.json" \
  --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n "$DEMO_NS" apply -f docs/examples/exchange-sim.yaml >/dev/null
kubectl -n "$DEMO_NS" rollout status deployment/exchange-sim --timeout=180s
SIM="$(kubectl -n "$DEMO_NS" get service exchange-sim -o jsonpath='{.spec.clusterIP}'):8080"
echo "simulator: http://$SIM (REST /api/v3/brokerage, WebSocket /ws, faults /admin/faults)"

step 4 "Operator from the Helm chart (rendered with Helm's SDK, applied)"
PYTHON=$(tests/cluster/python-env.sh)
kubectl create namespace "$OP_NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
VALUES=$(printf '{"watchNamespaces":["%s"],"exchange":{"defaultApiBaseUrl":"http://%s/api/v3/brokerage","defaultWsUrl":"ws://%s/ws"}}' "$DEMO_NS" "$SIM" "$SIM")
render() { "$PYTHON" tests/chart/render.py --name "$RELEASE" --namespace "$OP_NS" --values-json "$VALUES" "$@"; }
# The CRD apart from the rest: demo-down removes the operator but keeps a CRD still in use.
render --only-kind CustomResourceDefinition >"$DEMO_DIR/crd.yaml"
render --skip-kind CustomResourceDefinition >"$DEMO_DIR/operator.yaml"
kubectl apply -f "$DEMO_DIR/crd.yaml" >/dev/null
# Polled, not `kubectl wait --for=condition=Established`: that fails at once on a CRD whose
# status.conditions the API server has not filled in yet.
for _ in $(seq 240); do
  established=$(kubectl get crd/tradingbots.trading.gpttrader.io \
    -o 'jsonpath={.status.conditions[?(@.type=="Established")].status}' 2>/dev/null || true)
  [ "$established" = True ] && break
  sleep 0.25
done
[ "$established" = True ] || { echo "the TradingBot CRD was not Established within 60 s" >&2; exit 1; }
kubectl apply -f "$DEMO_DIR/operator.yaml" >/dev/null
kubectl -n "$OP_NS" rollout status "deployment/$RELEASE" --timeout=180s

step 5 "Sample TradingBots: dev-bot (paper exchange) and btc-canary (canary -> prod on the simulator)"
kubectl -n "$DEMO_NS" apply -f docs/examples/dev.yaml
kubectl -n "$DEMO_NS" apply -f tests/demo/bots.yaml

step 6 "The fleet (kubectl get tb -o wide), every 5 s for ${WATCH_SECONDS} s"
deadline=$((SECONDS + WATCH_SECONDS))
while :; do
  printf '\n%s\n' "$(date -u +%H:%M:%S)"
  kubectl -n "$DEMO_NS" get tb -o wide
  running=$(kubectl -n "$DEMO_NS" get tb -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' | grep -c Running || true)
  if ((SECONDS >= deadline)); then break; fi
  if ((running == 2 && WATCH_SECONDS == 0)); then break; fi
  sleep 5
done

step 7 "Try next"
printf '  export KUBECONFIG=%s PATH=%s/bin:$PATH SIM=%s DEMO_NS=%s\n' "$TB_KUBECONFIG" "$TB_CLUSTER_DIR" "$SIM" "$DEMO_NS"
# The README shows the same commands (tests/e2e/tests/docs_commands.rs checks they match).
cat <<'TRY'

  # kubectl tradingbot: the fleet, an emergency brake (no GitOps sync undoes it), one bot in
  # full, and who did what:
  kubectl tradingbot get -n $DEMO_NS
  kubectl tradingbot halt dev-bot -n $DEMO_NS --reason "trying the brake"
  kubectl tradingbot status dev-bot -n $DEMO_NS
  kubectl tradingbot resume dev-bot -n $DEMO_NS --reason "done trying"
  kubectl tradingbot history dev-bot -n $DEMO_NS

  # The same with kubectl (a spec field: reaches the running bot within a second, but Git owns it):
  kubectl -n $DEMO_NS patch tb dev-bot --type merge -p '{"spec":{"reduceOnly":true}}'
  kubectl -n $DEMO_NS get tb -o wide

  # Inject a price shock into the exchange simulator (watch the guards react):
  curl -s -X POST http://$SIM/admin/faults -H 'content-type: application/json' -d '{"price_shock":{"product_id":"BTC-USD","percent":-10}}'

  # Roll out a new version: a canary first (watch it live, Ctrl-C ends the watch), then promote
  # it once it passes (the GitOps way instead: commit spec.rollout.approvedVersion):
  kubectl -n $DEMO_NS patch tb btc-canary --type merge -p '{"spec":{"image":"perps-bot:v2"}}'
  kubectl tradingbot get btc-canary -n $DEMO_NS -w
  kubectl -n $DEMO_NS get tb btc-canary -o jsonpath='{.status.rollout.phase}{"\n"}'
  kubectl tradingbot promote btc-canary -n $DEMO_NS --reason "canary looks good"

  # Remove everything:
  make demo-down
TRY
