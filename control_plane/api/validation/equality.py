"""Semantic equality of JSON values, as apiequality.Semantic.DeepEqual sees Go structs.

Decoding into Go structs makes an absent field, ``null``, ``""``, ``0``, ``false``, ``[]``
and ``{}`` indistinguishable, so an update that spells a default differently is not a
change. Both walks are iterative: request bodies may nest deeply.
"""

from __future__ import annotations

from typing import Any

from control_plane.api.validation.field import child, index, key, render_value


def _empty(v: Any) -> bool:
    if v is None or v is False or v == "":
        return True
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return v == 0
    return isinstance(v, (dict, list)) and not v


def _scalar_differs(x: Any, y: Any) -> bool:
    return isinstance(x, bool) != isinstance(y, bool) or x != y


def semantic_equal(a: Any, b: Any) -> bool:
    return not differences(a, b, "", limit=1)


def differences(a: Any, b: Any, path: str, limit: int = 10) -> list[str]:
    """Up to ``limit`` lines ``path: old -> new`` for the fields that differ."""
    out: list[str] = []
    stack: list[tuple[Any, Any, str]] = [(a, b, path)]
    while stack and len(out) < limit:
        x, y, p = stack.pop()
        if _empty(x) and _empty(y):
            continue
        if isinstance(x, dict) and (isinstance(y, dict) or _empty(y)) or isinstance(y, dict) and _empty(x):
            xd = x if isinstance(x, dict) else {}
            yd = y if isinstance(y, dict) else {}
            for k in sorted(set(xd) | set(yd), key=str, reverse=True):
                field_path = child(p, k) if isinstance(k, str) and k.isidentifier() else key(p, str(k))
                stack.append((xd.get(k), yd.get(k), field_path))
        elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
            stack.extend((xi, yi, index(p, i)) for i, (xi, yi) in reversed(list(enumerate(zip(x, y, strict=True)))))
        elif isinstance(x, (dict, list)) or isinstance(y, (dict, list)) or _scalar_differs(x, y):
            out.append(f"{p or '<root>'}: {render_value(x)} -> {render_value(y)}")
    return out
