#!/usr/bin/env bash
# Builds the container images the cluster tests and the demo run (perps-bot, the operator and
# the exchange simulator) from the workspace binaries, and loads them into the test cluster.
#
#   tests/images/build-images.sh               # cargo build (debug), then package and load
#   tests/images/build-images.sh --no-cargo    # package the binaries already built (tests)
#   CARGO_PROFILE=release tests/images/build-images.sh
#
# Images (all imported as docker.io/library/NAME:TAG, used with imagePullPolicy: Never):
#   perps-bot:dev, perps-bot:v2      the bot (v2 is the same binary: a "new version" for rollouts)
#   perps-bot:broken                 the bot with a baked-in unreachable exchange URL (a bad release)
#   tradingbot-operator:dev          the operator
#   exchange-sim:dev                 the Coinbase simulator
#
# Content-addressed: each image's key is a hash of its binary, the shared libraries and CA
# bundle the image copies from the host, build-image.py, the tag and the entrypoint. A tar is
# rebuilt only when its key changed (target/images/NAME.key), and loaded into the cluster only
# when the cluster does not hold that key yet ($TB_CLUSTER_DIR/images/, gone with the cluster)
# or containerd lost the image. Concurrent runs take turns (a lock in target/images/).
# The loaded names are listed in target/images/images.txt.
#
# For tests of this script: IMAGES_BIN_DIR (binaries to package), IMAGES_OUT (where tars go) and
# IMAGES_TAG_SUFFIX (appended to every tag, so test images never replace the real ones).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
source tests/cluster/lib.sh

RUN_CARGO=1
for arg in "$@"; do
  case $arg in
    --no-cargo) RUN_CARGO=0 ;;
    *) die "usage: $0 [--no-cargo]" ;;
  esac
done
PROFILE=${CARGO_PROFILE:-dev}
case $PROFILE in
  dev) BIN_DIR=target/debug ;;
  *) BIN_DIR=target/$PROFILE ;;
esac
BIN_DIR=${IMAGES_BIN_DIR:-$BIN_DIR}
OUT=${IMAGES_OUT:-target/images}
SUFFIX=${IMAGES_TAG_SUFFIX:-}
LOADED=$TB_CLUSTER_DIR/images
mkdir -p "$OUT"

if ((RUN_CARGO)); then
  echo "build-images: cargo build --profile $PROFILE (perps-bot, tradingbot-operator, exchange-sim)" >&2
  cargo build --profile "$PROFILE" -p perps-bot -p tradingbot-operator -p exchange-sim --bins
fi

exec 9>"$OUT/.lock"
flock -w 900 9 || die "another build-images.sh holds $OUT/.lock"

# image_key BINARY ENTRYPOINT TAG: the content hash the image is built from.
image_key() {
  local binary=$1 entrypoint=$2 tag=$3 libs
  [[ -x $binary ]] || die "$binary is missing: build it first (make images)"
  libs=$(ldd "$binary" 2>/dev/null | grep -oE '/[^ ]+' | sort -u || true)
  {
    printf 'tag %s\nentrypoint %s\n' "$tag" "$entrypoint"
    # shellcheck disable=SC2086 # one path per word
    sha256sum "$binary" tests/cluster/build-image.py /etc/ssl/certs/ca-certificates.crt $libs
  } | sha256sum | cut -d' ' -f1
}

# package TAG BINARY ENTRYPOINT: prints the tar path; rebuilds it when its key changed.
package() {
  local tag=$1 binary=$BIN_DIR/$2 entrypoint=$3 name key tar
  name=${tag//[:\/]/_}
  tar=$OUT/$name.tar
  key=$(image_key "$binary" "$entrypoint" "$tag")
  if [[ -s $tar && $(cat "$OUT/$name.key" 2>/dev/null) == "$key" ]]; then
    echo "build-images: $tag up to date" >&2
  else
    echo "build-images: building $tag ($binary changed or new)" >&2
    python3 tests/cluster/build-image.py --tag "$tag" \
      --binary "$binary:/usr/local/bin/$(basename "$binary")" \
      --entrypoint "$entrypoint" -o "$tar.tmp" >/dev/null
    mv "$tar.tmp" "$tar"
    echo "$key" >"$OUT/$name.key"
  fi
  echo "$tag $tar $key"
}

# load TAG TAR KEY: imports the tar unless the cluster already has this key.
load() {
  local tag=$1 tar=$2 key=$3 name ref
  name=${tag//[:\/]/_}
  ref=docker.io/library/$tag
  # The list first: `ctr ... | grep -q` fails under pipefail when grep stops reading early.
  local present
  present=$(tb_ctr images ls -q 2>/dev/null || true)
  if [[ $(cat "$LOADED/$name.key" 2>/dev/null) == "$key" ]] && grep -qxF "$ref" <<<"$present"; then
    echo "build-images: $ref already loaded" >&2
  else
    tests/cluster/load-image.sh "$tar" >/dev/null
    mkdir -p "$LOADED"
    echo "$key" >"$LOADED/$name.key"
    echo "build-images: loaded $ref" >&2
  fi
  echo "$ref"
}

# TAG BINARY ENTRYPOINT, one image a line.
SPECS='perps-bot:dev perps-bot ["/usr/local/bin/perps-bot"]
perps-bot:v2 perps-bot ["/usr/local/bin/perps-bot"]
perps-bot:broken perps-bot ["/usr/local/bin/perps-bot","--api-base-url","http://127.0.0.1:9/api/v3/brokerage","--ws-url","ws://127.0.0.1:9/ws"]
tradingbot-operator:dev tradingbot-operator ["/usr/local/bin/tradingbot-operator"]
exchange-sim:dev exchange-sim ["/usr/local/bin/exchange-sim"]'

images=()
while read -r tag binary entrypoint; do
  image=$(package "$tag$SUFFIX" "$binary" "$entrypoint") || exit 1
  images+=("$image")
done <<<"$SPECS"
[[ -S $TB_CONTAINERD_SOCK ]] || die "the test cluster is not running (tests/cluster/cluster-up.sh)"
: >"$OUT/images.txt.tmp"
for image in "${images[@]}"; do
  read -r tag tar key <<<"$image"
  load "$tag" "$tar" "$key" | tee -a "$OUT/images.txt.tmp"
done
mv "$OUT/images.txt.tmp" "$OUT/images.txt"
