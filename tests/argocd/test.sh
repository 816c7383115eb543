#!/usr/bin/env bash
# Tests the Argo CD health check for TradingBot (docs/argocd/tradingbot-health.lua) with a real
# Lua interpreter: Debian's lua5.4, installed here when missing (a failed install fails the
# suite: nothing is skipped).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"

install_lua() {
  local sudo=""
  [[ $(id -u) == 0 ]] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  # Use the package lists there are; refresh them when the install fails with them (stale or
  # absent lists on a fresh machine).
  $sudo apt-get install -y -q lua5.4 || { $sudo apt-get update -q && $sudo apt-get install -y -q lua5.4; }
}

command -v lua5.4 >/dev/null 2>&1 || install_lua
command -v lua5.4 >/dev/null 2>&1 || { echo "tests/argocd/test.sh: lua5.4 is not available after installing it" >&2; exit 1; }
lua5.4 tests/argocd/test_health.lua docs/argocd/tradingbot-health.lua
