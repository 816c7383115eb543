#!/usr/bin/env bash
# `make bench` is being built (issue: measured speed, scale and reaction time). Until it lands:
echo "make bench: not available yet; 'perps-bot backtest --candles FILE.csv' measures the bot pipeline." >&2
exit 1
