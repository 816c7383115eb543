#!/usr/bin/env bash
# Builds the container images the cluster tests and the demo run (perps-bot, the operator and
# the exchange simulator) from the workspace binaries, and loads them into the test cluster.
#
#   tests/images/build-images.sh            # debug binaries (what `make test` uses)
#   CARGO_PROFILE=release tests/images/build-images.sh
#
# Images (all imported as docker.io/library/NAME:TAG, used with imagePullPolicy: Never):
#   perps-bot:dev, perps-bot:v2      the bot (v2 is the same binary: a "new version" for rollouts)
#   perps-bot:broken                 the bot with a baked-in unreachable exchange URL (a bad release)
#   tradingbot-operator:dev          the operator
#   exchange-sim:dev                 the Coinbase simulator
# The list is written to target/images/images.txt.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
PROFILE=${CARGO_PROFILE:-dev}
case $PROFILE in
  dev) BIN_DIR=target/debug ;;
  *) BIN_DIR=target/$PROFILE ;;
esac
OUT=target/images
mkdir -p "$OUT"

echo "build-images: cargo build --profile $PROFILE (perps-bot, tradingbot-operator, exchange-sim)" >&2
cargo build --profile "$PROFILE" -p perps-bot -p tradingbot-operator -p exchange-sim --bins

build() { # TAG BINARY ENTRYPOINT_JSON
  local tag=$1 binary=$2 entrypoint=$3 name
  name=$(basename "$binary")
  python3 tests/cluster/build-image.py --tag "$tag" \
    --binary "$BIN_DIR/$name:/usr/local/bin/$name" \
    --entrypoint "$entrypoint" -o "$OUT/${tag//[:\/]/_}.tar" >/dev/null
  echo "$OUT/${tag//[:\/]/_}.tar"
}

tars=(
  "$(build perps-bot:dev perps-bot '["/usr/local/bin/perps-bot"]')"
  "$(build perps-bot:v2 perps-bot '["/usr/local/bin/perps-bot"]')"
  "$(build perps-bot:broken perps-bot '["/usr/local/bin/perps-bot","--api-base-url","http://127.0.0.1:9/api/v3/brokerage","--ws-url","ws://127.0.0.1:9/ws"]')"
  "$(build tradingbot-operator:dev tradingbot-operator '["/usr/local/bin/tradingbot-operator"]')"
  "$(build exchange-sim:dev exchange-sim '["/usr/local/bin/exchange-sim"]')"
)
tests/cluster/load-image.sh "${tars[@]}" | tee "$OUT/images.txt"
