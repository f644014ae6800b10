"""Extract the HTTPRoute v1 openAPIV3Schema from Gateway API's standard CRD, for offline structural checks.

Usage: git show <commit>:config/crd/standard/gateway.networking.k8s.io_httproutes.yaml \
         | python tests/data/gateway-api/extract_schema.py > tests/data/gateway-api/httproute-v1.schema.json

Descriptions are dropped (size); CEL rules (x-kubernetes-validations) are dropped (no CEL here) -- the
structure, types, enums, patterns, bounds and required fields stay.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k not in ("description", "x-kubernetes-validations")}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def main() -> None:
    crd = yaml.safe_load(sys.stdin)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = _strip(version["schema"]["openAPIV3Schema"])
    json.dump(schema, sys.stdout, indent=None, separators=(",", ":"), sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
