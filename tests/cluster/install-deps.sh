#!/usr/bin/env bash
# Installs the Debian packages the local test cluster needs.
#
# Only installs what is missing; when everything is present it does not even
# run apt-get update, so a second run takes well under a second.
#
# Package services are never started: etcd-server and containerd ship
# init/systemd units, but our cluster runs its own etcd/containerd with
# private ports, sockets and directories (see cluster-up.sh). A policy-rc.d
# that forbids starting services is put in place for the install if the
# machine does not have one already.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
must_be_root

PACKAGES=(
  # control plane / node
  etcd-server containerd runc containernetworking-plugins
  # kube-proxy (iptables mode) and kubelet helpers
  iptables conntrack socat ethtool ebtables iproute2 kmod util-linux mount procps
  # Kubernetes build (build-kubernetes.sh)
  golang-go golang-github-modern-go-reflect2-dev rsync jq make gcc libc6-dev
  tar gzip xz-utils
  # certificates, downloads, test tooling
  openssl ca-certificates curl python3 python3-venv debian-archive-keyring
)

# installed PACKAGE: true if dpkg has PACKAGE fully installed.
installed() {
  [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]
}

missing=()
for p in "${PACKAGES[@]}"; do
  installed "$p" || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  log "all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

log "installing: ${missing[*]}"

# Forbid service starts during the install (only if no policy exists yet).
policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\n# temporary, tradingbot-operator tests/cluster/install-deps.sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi

export DEBIAN_FRONTEND=noninteractive
# Package lists on a fresh machine may be stale; a failing third-party
# source must not stop us (the Debian ones are what we need).
apt-get update -q || log "apt-get update reported errors; trying the install anyway"
apt-get install -y -q --no-install-recommends "${missing[@]}"

# If a systemd is running (not the case on the CI machines) make sure the
# package's own containerd/etcd do not run: they would not collide with ours
# (different sockets, ports and directories) but would waste resources.
if [[ -d /run/systemd/system ]]; then
  if [[ " ${missing[*]} " == *" containerd "* ]]; then
    systemctl disable --now containerd.service >/dev/null 2>&1 || true
  fi
  if [[ " ${missing[*]} " == *" etcd-server "* ]]; then
    systemctl disable --now etcd.service >/dev/null 2>&1 || true
  fi
fi

log "packages installed"
