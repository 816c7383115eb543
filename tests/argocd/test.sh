#!/usr/bin/env bash
# Tests the Argo CD health check for TradingBot (docs/argocd/tradingbot-health.lua) with a real
# Lua interpreter: Debian's lua5.4, installed when missing.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"

if ! command -v lua5.4 >/dev/null 2>&1; then
  SUDO=""
  [[ $(id -u) == 0 ]] || SUDO="sudo"
  # Refresh the package lists only when there are none (a fresh container); otherwise use them.
  if ! compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null; then
    $SUDO apt-get update
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y lua5.4
fi

lua5.4 tests/argocd/test_health.lua docs/argocd/tradingbot-health.lua
