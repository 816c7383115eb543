#!/usr/bin/env python3
"""Render the Helm chart with real Helm (PyPI helm-python-sdk) and print the manifests.

Usage: render.py [--chart DIR] [--name RELEASE] [--namespace NS] [--values-json JSON]

Run it with the venv python from tests/cluster/python-env.sh. Tests and the demo apply the
output with kubectl, so every cluster test exercises the chart's templates.
"""
import argparse
import json
import os
import sys

import helm_python

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chart", default=os.path.join(ROOT, "charts", "tradingbot-operator"))
    parser.add_argument("--name", default="tradingbot-operator")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--values-json", default="{}", help="values overriding values.yaml, as JSON")
    args = parser.parse_args()
    values = json.loads(args.values_json)
    chart = helm_python.Chart.load(args.chart)
    try:
        rendered = chart.render(values, name=args.name, namespace=args.namespace, is_install=True)
    finally:
        chart.close()
    documents = []
    for path in sorted(rendered):
        text = rendered[path].strip()
        if path.endswith("NOTES.txt") or not text:
            continue
        documents.append(f"# Source: {path}\n{text}")
    sys.stdout.write("\n---\n".join(documents) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
