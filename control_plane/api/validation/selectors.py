"""metav1.LabelSelector: validation (ValidateLabelSelector) and matching."""

from __future__ import annotations

from dataclasses import dataclass, field

from control_plane.api.validation.field import (
    ErrorList,
    Obj,
    child,
    dict_items,
    get_str,
    get_str_list,
    get_str_map,
    index,
)
from control_plane.api.validation.names import is_label_value, validate_label_name, validate_labels


@dataclass
class Selector:
    """A parsed selector; ``valid`` is False when LabelSelectorAsSelector would fail."""

    match_labels: dict[str, str] = field(default_factory=dict)
    expressions: list[tuple[str, str, list[str]]] = field(default_factory=list)
    valid: bool = True

    @property
    def empty(self) -> bool:
        return not self.match_labels and not self.expressions

    def matches(self, labels: dict[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        for k, op, values in self.expressions:
            present = k in labels
            ok = {
                "In": present and labels.get(k) in values,
                "NotIn": not present or labels.get(k) not in values,
                "Exists": present,
                "DoesNotExist": not present,
            }.get(op, False)
            if not ok:
                return False
        return True


def validate_label_selector(errs: ErrorList, sel: Obj, path: str) -> Selector:
    """Validate a selector and return it parsed, for matching against template labels."""
    parsed = Selector()
    parsed.match_labels = get_str_map(errs, sel, "matchLabels", path)
    before = len(errs)
    validate_labels(errs, parsed.match_labels, child(path, "matchLabels"))
    for _, expr, expr_path in dict_items(errs, sel, "matchExpressions", path):
        key = get_str(errs, expr, "key", expr_path)
        op = get_str(errs, expr, "operator", expr_path)
        values = get_str_list(errs, expr, "values", expr_path)
        if op in ("In", "NotIn"):
            if not values:
                errs.required(child(expr_path, "values"), "must be specified when `operator` is 'In' or 'NotIn'")
        elif op in ("Exists", "DoesNotExist"):
            if values:
                errs.forbidden(child(expr_path, "values"),
                               "may not be specified when `operator` is 'Exists' or 'DoesNotExist'")
        else:
            errs.invalid(child(expr_path, "operator"), op, "not a valid selector operator")
        validate_label_name(errs, key, child(expr_path, "key"))
        for i, v in enumerate(values):
            errs.invalid_each(index(child(expr_path, "values"), i), v, is_label_value(v))
        parsed.expressions.append((key, op, values))
    parsed.valid = len(errs) == before
    return parsed
