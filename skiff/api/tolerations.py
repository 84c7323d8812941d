"""Does a pod's toleration tolerate a node's taint? As core/v1 ``Toleration.ToleratesTaint``
decides it; the scheduler's TaintToleration filter and the node lifecycle and DaemonSet
controllers all ask.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    """An empty effect matches every effect, an empty key with Exists matches every key;
    the empty operator means Equal."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    if key and key != taint.get("key"):
        return False
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        return True
    if operator == "Equal":
        return (toleration.get("value") or "") == (taint.get("value") or "")
    return False
