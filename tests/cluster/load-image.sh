#!/usr/bin/env bash
# Imports docker-archive image tars (e.g. from build-image.py) into the test
# cluster's containerd, namespace k8s.io (the one the kubelet uses), and
# prints the imported image names. Pods use them with imagePullPolicy: Never
# (or IfNotPresent).
#
# Names without a registry are normalised like Docker does:
# "tradingbot-bot:dev" is stored as "docker.io/library/tradingbot-bot:dev",
# "acme/bot:dev" as "docker.io/acme/bot:dev"; a pod spec may use either form.
#
# Usage: load-image.sh IMAGE.tar...
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
must_be_root

(($# > 0)) || die "usage: $0 IMAGE.tar..."
[[ -S $TB_CONTAINERD_SOCK ]] || die "containerd of the test cluster is not running (run cluster-up.sh)"

for tar in "$@"; do
  [[ -f $tar ]] || die "no such file: $tar"
  log "importing $tar"
  # ctr prints "unpacking NAME (sha256:...)...done" per image.
  out=$(tb_ctr images import "$tar")
  sed -n 's/^unpacking \([^ ]*\) .*/\1/p' <<<"$out"
done
