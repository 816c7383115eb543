#!/usr/bin/env bash
# Provides a Python venv with the PyPI packages helm-python-sdk (Helm v4's Go
# SDK bundled in the wheel: chart lint/render without a helm binary) and
# coinbase-advanced-py (Coinbase's official Advanced Trade SDK: the exchange
# simulator's conformance suite drives the simulator with it) and prints the
# venv's python path.
#
#   "$(tests/cluster/python-env.sh)" -c 'import helm_python, coinbase.rest'
#
# The import names are `helm_python` and `coinbase`. Cached in $TB_CACHE/venv;
# (re)installed only when a package is missing or has another version.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"

HELM_SDK_VERSION=0.2.2
COINBASE_SDK_VERSION=1.8.4
VENV=$TB_CACHE/venv
PY=$VENV/bin/python

# Debian's python3 (python3-venv), not whatever python3 is first on PATH.
BASE_PYTHON=/usr/bin/python3

have_sdk() {
  [[ -x $PY ]] && "$PY" - "$HELM_SDK_VERSION" >/dev/null 2>&1 <<'PYEOF'
import sys
from importlib.metadata import version
import helm_python  # noqa: F401
sys.exit(version("helm-python-sdk") != sys.argv[1])
PYEOF
}

have_coinbase_sdk() {
  [[ -x $PY ]] && "$PY" - "$COINBASE_SDK_VERSION" >/dev/null 2>&1 <<'PYEOF'
import sys
from importlib.metadata import version
import coinbase.rest  # noqa: F401
sys.exit(version("coinbase-advanced-py") != sys.argv[1])
PYEOF
}

if ! have_sdk; then
  [[ -x $BASE_PYTHON ]] || "$HERE/install-deps.sh" >&2
  if [[ ! -x $PY ]]; then
    log "creating venv $VENV"
    "$BASE_PYTHON" -m venv "$VENV" >&2 || {
      "$HERE/install-deps.sh" >&2 # python3-venv missing on a fresh machine
      rm -rf "$VENV"
      "$BASE_PYTHON" -m venv "$VENV" >&2
    }
  fi
  log "installing helm-python-sdk==$HELM_SDK_VERSION"
  "$PY" -m pip install -q --disable-pip-version-check "helm-python-sdk==$HELM_SDK_VERSION" >&2
  have_sdk || die "helm_python does not import from $VENV"
fi
if ! have_coinbase_sdk; then
  log "installing coinbase-advanced-py==$COINBASE_SDK_VERSION"
  "$PY" -m pip install -q --disable-pip-version-check "coinbase-advanced-py==$COINBASE_SDK_VERSION" >&2
  have_coinbase_sdk || die "coinbase (coinbase-advanced-py) does not import from $VENV"
fi
echo "$PY"
