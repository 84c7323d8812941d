"""Mutating admission for pods on create.

`default_tolerations` is Kubernetes' DefaultTolerationSeconds plugin: every pod that does
not already tolerate them gets NoExecute tolerations for ``node.kubernetes.io/not-ready``
and ``node.kubernetes.io/unreachable`` lasting 300 s (kube-apiserver's
``--default-not-ready-toleration-seconds`` and ``--default-unreachable-toleration-seconds``),
so the node lifecycle controller evicts a dead node's pods after five minutes rather
than at once.
"""

from __future__ import annotations

from typing import Any

TAINT_NODE_NOT_READY = "node.kubernetes.io/not-ready"
TAINT_NODE_UNREACHABLE = "node.kubernetes.io/unreachable"
DEFAULT_TOLERATION_SECONDS = 300


def _tolerates_no_execute(toleration: dict[str, Any], key: str) -> bool:
    """Whether ``toleration`` already covers ``key``:NoExecute (an empty key or effect is a
    wildcard), as the plugin checks it: operator and value are not looked at."""
    return (toleration.get("key") or "") in ("", key) and (toleration.get("effect") or "") in ("", "NoExecute")


def default_tolerations(pod: dict[str, Any], not_ready_seconds: int = DEFAULT_TOLERATION_SECONDS,
                        unreachable_seconds: int = DEFAULT_TOLERATION_SECONDS) -> None:
    """Add the default not-ready/unreachable NoExecute tolerations to ``pod`` in place
    (call on pod create only, as the plugin admits only creates)."""
    spec = pod.setdefault("spec", {})
    if not isinstance(spec, dict):
        return  # malformed: validation reports it
    existing = spec.get("tolerations")
    if existing is not None and not isinstance(existing, list):
        return
    current = [t for t in existing or [] if isinstance(t, dict)]
    added = [{"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}
             for key, seconds in ((TAINT_NODE_NOT_READY, not_ready_seconds),
                                  (TAINT_NODE_UNREACHABLE, unreachable_seconds))
             if not any(_tolerates_no_execute(t, key) for t in current)]
    if added:
        spec["tolerations"] = [*(existing or []), *added]
