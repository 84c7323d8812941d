"""Regenerate control_plane/api/schema/fields.json from the official Python client's models.

The Kubernetes API's field names and types, for the kinds Skiff serves, taken from a
well-kept source (the `kubernetes` package's generated models) rather than typed by
hand. The API server uses it to drop or reject unknown fields (fieldValidation) and to
reject wrongly typed values with a 400, as Kubernetes' decoder does.

Run: .venv/bin/python scripts/gen_schema.py
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import kubernetes.client as k8s

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from skiff.api.resources import REGISTRY  # noqa: E402

# Python client model names for each kind, where not simply V1<Kind>.
MODEL_NAMES = {"Event": "CoreV1Event", "EndpointSlice": "V1EndpointSlice"}
# (model, python attribute) pairs whose values are resource.Quantity: Kubernetes accepts
# numbers there too (`cpu: 1`).
QUANTITY_FIELDS = {
    ("V1ResourceRequirements", "limits"), ("V1ResourceRequirements", "requests"),
    ("V1NodeStatus", "capacity"), ("V1NodeStatus", "allocatable"),
    ("V1ResourceQuotaSpec", "hard"), ("V1ResourceQuotaStatus", "hard"), ("V1ResourceQuotaStatus", "used"),
    ("V1LimitRangeItem", "default"), ("V1LimitRangeItem", "default_request"), ("V1LimitRangeItem", "max"),
    ("V1LimitRangeItem", "min"), ("V1LimitRangeItem", "max_limit_request_ratio"),
    ("V1EmptyDirVolumeSource", "size_limit"), ("V1PodSpec", "overhead"),
}
PRIMITIVES = {"str": "str", "int": "int", "bool": "bool", "float": "float", "datetime": "datetime",
              "date": "datetime", "object": "any", "bytearray": "str", "bytes": "str"}


def convert(type_name: str, models: dict, owner: str, attr: str) -> str:
    if (owner, attr) in QUANTITY_FIELDS:
        inner = re.fullmatch(r"Dict\[str, (.+)\]", type_name)
        return "map[quantity]" if inner else "quantity"
    if m := re.fullmatch(r"List\[(.+)\]", type_name):
        return "list[" + convert(m.group(1), models, owner, attr) + "]"
    if m := re.fullmatch(r"Dict\[str, (.+)\]", type_name):
        return "map[" + convert(m.group(1), models, owner, attr) + "]"
    if type_name in PRIMITIVES:
        return PRIMITIVES[type_name]
    walk(type_name, models)
    return type_name


def walk(model_name: str, models: dict) -> None:
    if model_name in models:
        return
    cls = getattr(k8s, model_name)
    fields: dict[str, str] = {}
    models[model_name] = fields
    for attr, type_name in cls.openapi_types.items():
        fields[cls.attribute_map[attr]] = convert(type_name, models, model_name, attr)


def main() -> None:
    models: dict[str, dict[str, str]] = {}
    kinds: dict[str, str] = {}
    for rt in REGISTRY.types:
        name = MODEL_NAMES.get(rt.kind, "V1" + rt.kind)
        walk(name, models)
        kinds[f"{rt.api_version}/{rt.kind}"] = name
    # Bodies posted to subresources and options.
    for extra in ("V1Binding", "V1Scale", "V1DeleteOptions", "V1Eviction"):
        walk(extra, models)
        kinds[extra] = extra
    out = ROOT / "control_plane/api/schema/fields.json"
    out.write_text(json.dumps({"kinds": kinds, "models": models}, indent=0, sort_keys=True) + "\n")
    print(f"wrote {out}: {len(models)} models, {len(kinds)} kinds")


if __name__ == "__main__":
    main()
