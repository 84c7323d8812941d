"""Node selector terms, as component-helpers' nodeaffinity matches them.

Terms are ORed; inside a term, matchExpressions (on labels) and matchFields (only
``metadata.name``) are ANDed. An empty term matches nothing; a term that does not parse
(unknown operator, Gt/Lt without one integer) matches nothing, as the scheduler ignores
parse errors. Operators: In, NotIn, Exists, DoesNotExist, Gt, Lt.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

NODE_NAME_FIELD = "metadata.name"
LABEL_OPERATORS = frozenset({"In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"})
FIELD_OPERATORS = frozenset({"In", "NotIn"})


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: str
    values: frozenset[str]
    number: int = 0  # the bound of Gt / Lt

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        if op == "In":
            return self.key in labels and labels[self.key] in self.values
        if op == "NotIn":
            return self.key not in labels or labels[self.key] not in self.values
        if op == "Exists":
            return self.key in labels
        if op == "DoesNotExist":
            return self.key not in labels
        value = labels.get(self.key)
        if value is None:
            return False
        try:
            n = int(value)
        except ValueError:
            return False
        return n > self.number if op == "Gt" else n < self.number


def _int(values: list[str]) -> int | None:
    if len(values) != 1:
        return None
    try:
        return int(values[0])
    except ValueError:
        return None


def _requirement(raw: Mapping[str, Any], fields: bool) -> Requirement | None:
    key = str(raw.get("key") or "")
    op = str(raw.get("operator") or "")
    values = [str(v) for v in raw.get("values") or []]
    if fields:
        if key != NODE_NAME_FIELD or op not in FIELD_OPERATORS or len(values) != 1:
            return None
        return Requirement(key, op, frozenset(values))
    if op not in LABEL_OPERATORS:
        return None
    if op in ("Gt", "Lt"):
        number = _int(values)
        return None if number is None else Requirement(key, op, frozenset(), number)
    if op in ("In", "NotIn") and not values:
        return None
    if op in ("Exists", "DoesNotExist") and values:
        return None
    return Requirement(key, op, frozenset(values))


@dataclass(frozen=True, slots=True)
class Term:
    labels: tuple[Requirement, ...]
    fields: tuple[Requirement, ...]
    valid: bool

    def matches(self, node_name: str, labels: Mapping[str, str]) -> bool:
        if not self.valid or not (self.labels or self.fields):
            return False
        for r in self.labels:
            if not r.matches(labels):
                return False
        for r in self.fields:
            if not r.matches({NODE_NAME_FIELD: node_name}):
                return False
        return True

    def names_in(self) -> frozenset[str] | None:
        """The node names this term is limited to by ``metadata.name In``, or None."""
        names: frozenset[str] | None = None
        for r in self.fields:
            if r.operator == "In":
                names = r.values if names is None else names & r.values
        return names


def compile_term(raw: Mapping[str, Any]) -> Term:
    labels = [_requirement(r, False) for r in raw.get("matchExpressions") or []]
    fields = [_requirement(r, True) for r in raw.get("matchFields") or []]
    valid = all(r is not None for r in labels) and all(r is not None for r in fields)
    return Term(tuple(r for r in labels if r is not None), tuple(r for r in fields if r is not None), valid)


@dataclass(frozen=True, slots=True)
class NodeSelectorTerms:
    """A required NodeSelector: matches when any term matches."""

    terms: tuple[Term, ...]

    def matches(self, node_name: str, labels: Mapping[str, str]) -> bool:
        return any(t.matches(node_name, labels) for t in self.terms)

    def prefilter_names(self) -> frozenset[str] | None:
        """NodeAffinity's PreFilter: when every term names its nodes (``metadata.name In``),
        only those can match; an empty set means the terms conflict. None: any node may."""
        out: set[str] = set()
        if not self.terms:
            return None
        for t in self.terms:
            names = t.names_in()
            if names is None:
                return None
            out |= names
        return frozenset(out)


def compile_required(raw: Mapping[str, Any] | None) -> NodeSelectorTerms:
    return NodeSelectorTerms(tuple(compile_term(t) for t in (raw or {}).get("nodeSelectorTerms") or []))


@dataclass(frozen=True, slots=True)
class PreferredTerms:
    """preferredDuringScheduling terms: a node scores the sum of the weights it matches."""

    terms: tuple[tuple[int, Term], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.terms)

    def score(self, node_name: str, labels: Mapping[str, str]) -> int:
        return sum(w for w, t in self.terms if t.matches(node_name, labels))


def compile_preferred(raw: list[Mapping[str, Any]] | None) -> PreferredTerms:
    terms = []
    for item in raw or []:
        weight = int(item.get("weight") or 0)
        if weight:
            terms.append((weight, compile_term(item.get("preference") or {})))
    return PreferredTerms(tuple(terms))
