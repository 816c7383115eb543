#!/usr/bin/env python3
"""Render the Helm chart with real Helm (PyPI helm-python-sdk) and print the manifests.

Usage: render.py [--chart DIR] [--name RELEASE] [--namespace NS] [--values-json JSON]
                 [--only-kind KIND ...] [--skip-kind KIND ...]

Run it with the venv python from tests/cluster/python-env.sh. Tests and the demo apply the
output with kubectl, so every cluster test exercises the chart's templates.
"""
import argparse
import json
import os
import sys

import helm_python

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Helm's install order: what others depend on first (a Deployment before its ServiceAccount
# makes the ReplicaSet controller back off for minutes).
INSTALL_ORDER = [
    "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "PodSecurityPolicy", "PodDisruptionBudget",
    "ServiceAccount", "Secret", "SecretList", "ConfigMap", "StorageClass", "PersistentVolume",
    "PersistentVolumeClaim", "CustomResourceDefinition", "ClusterRole", "ClusterRoleList", "ClusterRoleBinding",
    "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList", "Service", "DaemonSet", "Pod",
    "ReplicationController", "ReplicaSet", "Deployment", "HorizontalPodAutoscaler", "StatefulSet", "Job",
    "CronJob", "IngressClass", "Ingress", "APIService",
]


def kind_of(document: str) -> str:
    for line in document.splitlines():
        if line.startswith("kind:"):
            return line.split(":", 1)[1].strip()
    return ""


def install_rank(document: str) -> int:
    kind = kind_of(document)
    return INSTALL_ORDER.index(kind) if kind in INSTALL_ORDER else len(INSTALL_ORDER)


def wanted(kind: str, only: list, skip: list) -> bool:
    return (not only or kind in only) and kind not in skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chart", default=os.path.join(ROOT, "charts", "tradingbot-operator"))
    parser.add_argument("--name", default="tradingbot-operator")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--values-json", default="{}", help="values overriding values.yaml, as JSON")
    parser.add_argument("--only-kind", action="append", default=[], help="print only objects of this kind")
    parser.add_argument("--skip-kind", action="append", default=[], help="leave out objects of this kind")
    args = parser.parse_args()
    values = json.loads(args.values_json)
    chart = helm_python.Chart.load(args.chart)
    try:
        rendered = chart.render(values, name=args.name, namespace=args.namespace, is_install=True)
    finally:
        chart.close()
    documents = []
    for path in sorted(rendered):
        if path.endswith("NOTES.txt"):
            continue
        for document in rendered[path].split("\n---"):
            text = document.strip()
            if text and any(line.startswith("kind:") for line in text.splitlines()):
                if wanted(kind_of(text), args.only_kind, args.skip_kind):
                    documents.append((install_rank(text), path, f"# Source: {path}\n{text}"))
    documents.sort(key=lambda d: (d[0], d[1]))
    sys.stdout.write("\n---\n".join(d[2] for d in documents) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
