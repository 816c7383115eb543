#!/usr/bin/env bash
# `make demo` is being built (issue: Helm chart, make demo, end-to-end suite). Until it lands:
echo "make demo: not available yet. What exists today: 'make cluster-up' (local cluster), 'make images'," >&2
echo "and 'cargo run -p perps-bot -- --profile dev --dev-fast' (one offline trading cycle)." >&2
exit 1
