#!/usr/bin/env bash
# Provides Prometheus 2.53 (Debian trixie's package: bookworm's 2.42 is built
# without kubernetes_sd_configs) and prints the path of its binary.
#
# The .deb is fetched with a private apt configuration naming trixie
# (-oDir::Etc::SourceList / -oDir::State::Lists), `apt-get download
# prometheus/trixie`, and unpacked with `dpkg -x` into $TB_CACHE/prometheus.
# Nothing on the system is installed or upgraded. Cached: later runs only
# print the path. The binary needs only libc.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"

DEST=$TB_CACHE/prometheus
BIN=$DEST/usr/bin/prometheus

if [[ -x $BIN ]]; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$TB_CACHE"
work=$(mktemp -d "$TB_CACHE/prometheus-download.XXXXXX")
trap 'rm -rf "$work"' EXIT

mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
  grep -v '^\s*#' | grep -oE 'https?://[^ ]+/debian/?( |$)' | head -n1 | tr -d ' ' || true)
mirror=${mirror:-http://deb.debian.org/debian}

mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/sources.list.d"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${mirror%/} trixie main" >"$work/sources.list"
opts=(
  -o "Dir::Etc::SourceList=$work/sources.list"
  -o "Dir::Etc::SourceParts=$work/sources.list.d"
  -o "Dir::State::Lists=$work/lists"
  -o "Dir::Cache=$work/cache"
  -o APT::Sandbox::User=root
)
log "downloading prometheus from trixie ($mirror)"
apt-get "${opts[@]}" -q update >"$work/update.log" 2>&1 || {
  cat "$work/update.log" >&2
  die "apt-get update (private trixie list) failed"
}
(cd "$work" && apt-get "${opts[@]}" -q download prometheus/trixie) >&2
deb=$(ls "$work"/prometheus_*.deb)
rm -rf "$DEST.tmp"
dpkg -x "$deb" "$DEST.tmp"
[[ -x $DEST.tmp/usr/bin/prometheus ]] || die "no usr/bin/prometheus in $deb"
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
log "prometheus unpacked into $DEST ($(basename "$deb"))"
echo "$BIN"
