"""Label and field selectors, parsed, matched and rendered as Kubernetes does.

The grammar, the validation and the error messages follow apimachinery's
``pkg/labels/selector.go`` and ``pkg/fields/selector.go``; the selectable fields per kind
follow the field-label conversion functions and ``ToSelectableFields`` of each registry.
The API server turns a ``SelectorError`` into a 400.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from skiff.api.resources import RESOURCES

__all__ = [
    "FieldRequirement",
    "FieldSelector",
    "LabelSelector",
    "Operator",
    "Requirement",
    "SelectorError",
    "escape_field_value",
    "label_value_errors",
    "object_fields",
    "parse_field_selector",
    "parse_label_selector",
    "qualified_name_errors",
    "selectable_fields",
    "validate_field_selector",
]


class SelectorError(ValueError):
    """A selector that does not parse or validate; the message is Kubernetes' wording."""


class Operator(StrEnum):
    """``selection.Operator`` values."""

    DOES_NOT_EXIST = "!"
    EQUALS = "="
    DOUBLE_EQUALS = "=="
    IN = "in"
    NOT_EQUALS = "!="
    NOT_IN = "notin"
    EXISTS = "exists"
    GREATER_THAN = "gt"
    LESS_THAN = "lt"


# The order Kubernetes lists them in "expected: ..." parse errors.
_BINARY_OPERATORS = ("in", "notin", "=", "==", "!=", "gt", "lt")


# --------------------------------------------------------------------------- validation
# k8s.io/apimachinery/pkg/util/validation: IsQualifiedName, IsDNS1123Subdomain, IsValidLabelValue.

_QUALIFIED_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QUALIFIED_NAME_RE = re.compile(f"^{_QUALIFIED_NAME_FMT}$")
_QUALIFIED_NAME_MSG = ("must consist of alphanumeric characters, '-', '_' or '.', "
                       "and must start and end with an alphanumeric character")
_DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_FMT = _DNS1123_LABEL_FMT + "(\\." + _DNS1123_LABEL_FMT + ")*"
_DNS1123_SUBDOMAIN_RE = re.compile(f"^{_DNS1123_SUBDOMAIN_FMT}$")
_DNS1123_SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                          "'-' or '.', and must start and end with an alphanumeric character")
_LABEL_VALUE_FMT = f"({_QUALIFIED_NAME_FMT})?"
_LABEL_VALUE_RE = re.compile(f"^{_LABEL_VALUE_FMT}$")
_LABEL_VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
                    "and must start and end with an alphanumeric character")


def _regex_error(msg: str, fmt: str, *examples: str) -> str:
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    # Kubernetes' own punctuation, double space included, so messages compare equal.
    shown = " or ".join(f"'{e}', " for e in examples)
    return f"{msg} (e.g. {shown}regex used for validation is '{fmt}')"


def _max_len_error(n: int) -> str:
    return f"must be no more than {n} characters"


def qualified_name_errors(value: str) -> list[str]:
    """Why ``value`` is not a valid label key (empty list when it is)."""
    errs: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs.extend("prefix part " + m for m in _dns1123_subdomain_errors(prefix))
    else:
        return [
            "a qualified name "
            + _regex_error(_QUALIFIED_NAME_MSG, _QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part " + _max_len_error(63))
    if not _QUALIFIED_NAME_RE.match(name):
        errs.append("name part " + _regex_error(_QUALIFIED_NAME_MSG, _QUALIFIED_NAME_FMT, "MyName", "my.name",
                                                "123-abc"))
    return errs


def _dns1123_subdomain_errors(value: str) -> list[str]:
    errs: list[str] = []
    if len(value) > 253:
        errs.append(_max_len_error(253))
    if not _DNS1123_SUBDOMAIN_RE.match(value):
        errs.append(_regex_error(_DNS1123_SUBDOMAIN_MSG, _DNS1123_SUBDOMAIN_FMT, "example.com"))
    return errs


def label_value_errors(value: str) -> list[str]:
    """Why ``value`` is not a valid label value (empty list when it is)."""
    errs: list[str] = []
    if len(value) > 63:
        errs.append(_max_len_error(63))
    if not _LABEL_VALUE_RE.match(value):
        errs.append(_regex_error(_LABEL_VALUE_MSG, _LABEL_VALUE_FMT, "MyValue", "my_value", "12345"))
    return errs


def _go_quote(s: str) -> str:
    """Go's %q for the strings selectors deal in (printable ASCII plus the odd escape)."""
    out = ['"']
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def _invalid(path: str, value: str | Sequence[str], detail: str) -> str:
    """A ``field.Invalid(...).Error()`` string; a nil path prints as ``<nil>``."""
    shown = _go_quote(value) if isinstance(value, str) else "[]string{" + ", ".join(map(_go_quote, value)) + "}"
    return f"{path}: Invalid value: {shown}: {detail}"


def _aggregate(errs: list[str]) -> str:
    # utilerrors.NewAggregate: one message alone, several in brackets, duplicates once.
    unique = list(dict.fromkeys(errs))
    return unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]"


# --------------------------------------------------------------------------- label selectors

@dataclass(frozen=True)
class Requirement:
    """One clause of a label selector: ``key``, an operator and its values (a sorted set
    when built with ``new`` or parsed)."""

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    @classmethod
    def new(cls, key: str, operator: Operator | str, values: Iterable[str] = ()) -> Requirement:
        """Validated constructor (``labels.NewRequirement``); raises SelectorError."""
        op = Operator(operator)
        vals = tuple(values)
        errs: list[str] = []
        key_path, values_path = "key", "values"
        if key_errs := qualified_name_errors(key):
            errs.append(_invalid(key_path, key, "; ".join(key_errs)))
        if op in (Operator.IN, Operator.NOT_IN):
            if not vals:
                errs.append(_invalid(values_path, vals, "for 'in', 'notin' operators, values set can't be empty"))
        elif op in (Operator.EQUALS, Operator.DOUBLE_EQUALS, Operator.NOT_EQUALS):
            if len(vals) != 1:
                errs.append(_invalid(values_path, vals, "exact-match compatibility requires one single value"))
        elif op in (Operator.EXISTS, Operator.DOES_NOT_EXIST):
            if vals:
                errs.append(_invalid(values_path, vals, "values set must be empty for exists and does not exist"))
        else:  # gt, lt
            if len(vals) != 1:
                errs.append(_invalid(values_path, vals, "for 'Gt', 'Lt' operators, exactly one value is required"))
            for i, v in enumerate(vals):
                if _parse_int64(v) is None:
                    errs.append(_invalid(f"{values_path}[{i}]", v,
                                         "for 'Gt', 'Lt' operators, the value must be an integer"))
        for i, v in enumerate(vals):
            if val_errs := label_value_errors(v):
                errs.append(_invalid(f"{values_path}[{i}][{key}]", v, "; ".join(val_errs)))
        if errs:
            raise SelectorError(_aggregate(errs))
        # Values are a set: keep them sorted and unique so equal selectors compare equal.
        return cls(key, op, tuple(sorted(set(vals))))

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        if op in (Operator.IN, Operator.EQUALS, Operator.DOUBLE_EQUALS):
            return self.key in labels and labels[self.key] in self.values
        if op in (Operator.NOT_IN, Operator.NOT_EQUALS):
            return self.key not in labels or labels[self.key] not in self.values
        if op is Operator.EXISTS:
            return self.key in labels
        if op is Operator.DOES_NOT_EXIST:
            return self.key not in labels
        # gt / lt: both sides must be integers, otherwise the requirement does not match.
        if self.key not in labels or len(self.values) != 1:
            return False
        have, want = _parse_int64(labels[self.key]), _parse_int64(self.values[0])
        if have is None or want is None:
            return False
        return have > want if op is Operator.GREATER_THAN else have < want

    def __str__(self) -> str:
        op = self.operator
        if op is Operator.EXISTS:
            return self.key
        if op is Operator.DOES_NOT_EXIST:
            return "!" + self.key
        values = self.values[0] if len(self.values) == 1 else ",".join(sorted(self.values))
        if op in (Operator.IN, Operator.NOT_IN):
            return f"{self.key} {op.value} ({values})"
        symbol = {Operator.GREATER_THAN: ">", Operator.LESS_THAN: "<"}.get(op, op.value)
        return f"{self.key}{symbol}{values}"


_INT64_RE = re.compile(r"^[+-]?[0-9]+$")


def _parse_int64(s: str) -> int | None:
    """``strconv.ParseInt(s, 10, 64)``: None when it fails."""
    if not _INT64_RE.match(s):
        return None
    n = int(s)
    return n if -(2**63) <= n < 2**63 else None


@dataclass(frozen=True)
class LabelSelector:
    """An AND of requirements, kept sorted by key as Kubernetes does.

    ``matches_nothing`` marks ``labels.Nothing()``: what a *missing* selector (``null``)
    converts to, as opposed to an empty one, which matches everything.
    """

    requirements: tuple[Requirement, ...] = ()
    matches_nothing: bool = False

    @classmethod
    def everything(cls) -> LabelSelector:
        return cls()

    @classmethod
    def nothing(cls) -> LabelSelector:
        return cls(matches_nothing=True)

    @classmethod
    def of(cls, requirements: Iterable[Requirement]) -> LabelSelector:
        return cls(tuple(sorted(requirements, key=lambda r: r.key)))

    @classmethod
    def from_map(cls, selector: Mapping[str, str] | None) -> LabelSelector:
        """A plain ``key: value`` map (Service ``spec.selector``): every pair must match.
        Like ``labels.SelectorFromSet`` it is not validated, and null or ``{}`` selects everything."""
        if not selector:
            return cls.everything()
        return cls.of(Requirement(k, Operator.EQUALS, (v,)) for k, v in selector.items())

    @classmethod
    def from_dict(cls, selector: Mapping[str, Any] | None) -> LabelSelector:
        """A ``metav1.LabelSelector`` (``matchLabels`` + ``matchExpressions``), converted as
        ``LabelSelectorAsSelector`` does: null selects nothing, ``{}`` selects everything."""
        if selector is None:
            return cls.nothing()
        match_labels = selector.get("matchLabels") or {}
        expressions = selector.get("matchExpressions") or []
        if not match_labels and not expressions:
            return cls.everything()
        reqs = [Requirement.new(k, Operator.EQUALS, (v,)) for k, v in match_labels.items()]
        for expr in expressions:
            operator = expr.get("operator")
            op = _EXPRESSION_OPERATORS.get(operator) if isinstance(operator, str) else None
            if op is None:
                raise SelectorError(f"{_go_quote(str(operator or ''))} is not a valid label selector operator")
            reqs.append(Requirement.new(expr.get("key", ""), op, expr.get("values") or ()))
        return cls.of(reqs)

    @property
    def empty(self) -> bool:
        """True when the selector does not restrict anything."""
        return not self.matches_nothing and not self.requirements

    def add(self, *requirements: Requirement) -> LabelSelector:
        if self.matches_nothing:
            return self
        return LabelSelector.of((*self.requirements, *requirements))

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        if self.matches_nothing:
            return False
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def requires_exact_match(self, key: str) -> str | None:
        """The single value ``key`` must have for a match, if the selector pins one."""
        for r in self.requirements:
            if r.key == key:
                if r.operator in (Operator.EQUALS, Operator.DOUBLE_EQUALS, Operator.IN) and len(r.values) == 1:
                    return r.values[0]
                return None
        return None

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


_EXPRESSION_OPERATORS = {
    "In": Operator.IN,
    "NotIn": Operator.NOT_IN,
    "Exists": Operator.EXISTS,
    "DoesNotExist": Operator.DOES_NOT_EXIST,
}


# Lexer tokens (labels.Token); the string form is what "found '...'" messages print.
_EOS, _CLOSE, _COMMA, _NOT, _DEQ, _EQ, _GT, _IDENT, _IN, _LT, _NEQ, _NOTIN, _OPEN = range(13)
_STRING_TO_TOKEN = {
    ")": _CLOSE, ",": _COMMA, "!": _NOT, "==": _DEQ, "=": _EQ, ">": _GT, "in": _IN, "<": _LT,
    "!=": _NEQ, "notin": _NOTIN, "(": _OPEN,
}
_SPECIAL = frozenset("=!(),><")
_WHITESPACE = frozenset(" \t\r\n")


def _lex(s: str) -> list[tuple[int, str]]:
    items: list[tuple[int, str]] = []
    pos, n = 0, len(s)
    while True:
        while pos < n and s[pos] in _WHITESPACE:
            pos += 1
        if pos >= n:
            items.append((_EOS, ""))
            return items
        if s[pos] in _SPECIAL:
            # Longest run of special characters that still forms a token: "!=" not "!" "=".
            end, last = pos, None
            while end < n and s[end] in _SPECIAL:
                tok = _STRING_TO_TOKEN.get(s[pos:end + 1])
                if tok is None:
                    if last is not None:
                        break
                else:
                    last = (tok, s[pos:end + 1])
                end += 1
            assert last is not None  # every special character is a token on its own
            items.append(last)
            pos += len(last[1])
            continue
        start = pos
        while pos < n and s[pos] not in _SPECIAL and s[pos] not in _WHITESPACE:
            pos += 1
        word = s[start:pos]
        items.append((_STRING_TO_TOKEN.get(word, _IDENT), word))


class _LabelParser:
    """A port of ``labels.Parser``: recursive descent over pre-scanned tokens."""

    def __init__(self, selector: str) -> None:
        self.items = _lex(selector)
        self.pos = 0

    def _token(self, index: int, values: bool) -> tuple[int, str]:
        tok, lit = self.items[index]
        # In a values context the keywords are plain identifiers: "x in (in)" is fine.
        if values and tok in (_IN, _NOTIN):
            tok = _IDENT
        return tok, lit

    def lookahead(self, values: bool = True) -> tuple[int, str]:
        return self._token(self.pos, values)

    def consume(self, values: bool = True) -> tuple[int, str]:
        self.pos += 1
        return self._token(self.pos - 1, values)

    def parse(self) -> list[Requirement]:
        reqs: list[Requirement] = []
        while True:
            tok, lit = self.lookahead()
            if tok in (_IDENT, _NOT):
                try:
                    reqs.append(self.requirement())
                except SelectorError as e:
                    raise SelectorError(f"unable to parse requirement: {e}") from None
                tok, lit = self.consume()
                if tok == _EOS:
                    return reqs
                if tok == _COMMA:
                    tok2, lit2 = self.lookahead()
                    if tok2 not in (_IDENT, _NOT):
                        raise SelectorError(f"found '{lit2}', expected: identifier after ','")
                else:
                    raise SelectorError(f"found '{lit}', expected: ',' or 'end of string'")
            elif tok == _EOS:
                return reqs
            else:
                raise SelectorError(f"found '{lit}', expected: !, identifier, or 'end of string'")

    def requirement(self) -> Requirement:
        op: Operator | None = None
        tok, lit = self.consume()
        if tok == _NOT:
            op = Operator.DOES_NOT_EXIST
            tok, lit = self.consume()
        if tok != _IDENT:
            raise SelectorError(f"found '{lit}', expected: identifier")
        if key_errs := qualified_name_errors(lit):
            raise SelectorError(_invalid("<nil>", lit, "; ".join(key_errs)))
        key = lit
        if op is None and self.lookahead()[0] in (_EOS, _COMMA):
            op = Operator.EXISTS
        if op is not None:
            return Requirement.new(key, op)
        op = self.operator()
        values = self.set_values() if op in (Operator.IN, Operator.NOT_IN) else self.exact_value()
        return Requirement.new(key, op, sorted(values))

    def operator(self) -> Operator:
        tok, lit = self.consume(values=False)
        ops = {_IN: Operator.IN, _EQ: Operator.EQUALS, _DEQ: Operator.DOUBLE_EQUALS, _GT: Operator.GREATER_THAN,
               _LT: Operator.LESS_THAN, _NOTIN: Operator.NOT_IN, _NEQ: Operator.NOT_EQUALS}
        if tok not in ops:
            raise SelectorError(f"found '{lit}', expected: {', '.join(_BINARY_OPERATORS)}")
        return ops[tok]

    def set_values(self) -> set[str]:
        tok, lit = self.consume()
        if tok != _OPEN:
            raise SelectorError(f"found '{lit}' expected: '('")
        tok, lit = self.lookahead()
        if tok in (_IDENT, _COMMA):
            values = self.identifiers()
            if self.consume()[0] != _CLOSE:
                raise SelectorError(f"found '{lit}', expected: ')'")
            return values
        if tok == _CLOSE:  # "()" is the set holding the empty string
            self.consume()
            return {""}
        raise SelectorError(f"found '{lit}', expected: ',', ')' or identifier")

    def identifiers(self) -> set[str]:
        values: set[str] = set()
        while True:
            tok, lit = self.consume()
            if tok == _IDENT:
                values.add(lit)
                tok2, lit2 = self.lookahead()
                if tok2 == _COMMA:
                    continue
                if tok2 == _CLOSE:
                    return values
                raise SelectorError(f"found '{lit2}', expected: ',' or ')'")
            if tok == _COMMA:
                # Empty items between commas are empty-string values: "(a,,b)", "(,a)", "(a,)".
                if not values:
                    values.add("")
                tok2, _ = self.lookahead()
                if tok2 == _CLOSE:
                    values.add("")
                    return values
                if tok2 == _COMMA:
                    values.add("")
                continue
            raise SelectorError(f"found '{lit}', expected: ',', or identifier")

    def exact_value(self) -> set[str]:
        tok, _ = self.lookahead()
        if tok in (_EOS, _COMMA):
            return {""}
        tok, lit = self.consume()
        if tok == _IDENT:
            return {lit}
        raise SelectorError(f"found '{lit}', expected: identifier")


def parse_label_selector(selector: str) -> LabelSelector:
    """Parse Kubernetes' label selector syntax (``labels.Parse``).

    ``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``, ``a>1``,
    ``a<1``, comma separated; keys and values are validated. The empty string selects
    everything.
    """
    return LabelSelector.of(_LabelParser(selector).parse())


# --------------------------------------------------------------------------- field selectors

@dataclass(frozen=True)
class FieldRequirement:
    """``field = value`` (``==`` is the same) or ``field != value``."""

    field: str
    operator: Operator  # EQUALS or NOT_EQUALS
    value: str

    def matches(self, fields: Mapping[str, str]) -> bool:
        # A field an object does not have compares as the empty string.
        equal = fields.get(self.field, "") == self.value
        return equal if self.operator is Operator.EQUALS else not equal

    def __str__(self) -> str:
        symbol = "=" if self.operator is Operator.EQUALS else "!="
        return f"{self.field}{symbol}{escape_field_value(self.value)}"


@dataclass(frozen=True)
class FieldSelector:
    """An AND of field requirements, in the order the parser produced them."""

    requirements: tuple[FieldRequirement, ...] = ()

    @classmethod
    def everything(cls) -> FieldSelector:
        return cls()

    @classmethod
    def from_map(cls, fields: Mapping[str, str]) -> FieldSelector:
        return cls(tuple(FieldRequirement(k, Operator.EQUALS, v) for k, v in sorted(fields.items())))

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, fields: Mapping[str, str]) -> bool:
        return all(r.matches(fields) for r in self.requirements)

    def requires_exact_match(self, field: str) -> str | None:
        """The value ``field`` must equal, e.g. ``spec.nodeName`` for a per-node pod index."""
        for r in self.requirements:
            if r.field == field and r.operator is Operator.EQUALS:
                return r.value
        return None

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def escape_field_value(value: str) -> str:
    """``fields.EscapeValue``: backslash-escape ``\\``, ``,`` and ``=`` in a value."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


def _unescape_field_value(value: str) -> str:
    if not any(c in value for c in "\\,="):
        return value
    out: list[str] = []
    in_slash = False
    for c in value:
        if in_slash:
            if c not in "\\,=":
                raise SelectorError(f"invalid field selector: invalid escape sequence: \\{c}")
            out.append(c)
            in_slash = False
        elif c == "\\":
            in_slash = True
        elif c in ",=":
            # Kubernetes prints the rune's code point here (%v of a rune); the character reads better.
            raise SelectorError(f"invalid field selector: unescaped character in value: {c}")
        else:
            out.append(c)
    if in_slash:
        raise SelectorError("invalid field selector: invalid escape sequence: \\")
    return "".join(out)


def _split_terms(selector: str) -> list[str]:
    # Commas escaped with a backslash are data, not separators (the backslash stays for unescaping).
    if not selector:
        return []
    terms: list[str] = []
    start, in_slash = 0, False
    for i, c in enumerate(selector):
        if in_slash:
            in_slash = False
        elif c == "\\":
            in_slash = True
        elif c == ",":
            terms.append(selector[start:i])
            start = i + 1
    terms.append(selector[start:])
    return terms


def _split_term(term: str) -> tuple[str, str, str] | None:
    # The first operator occurrence splits; at one position "!=" and "==" win over "=".
    for i in range(len(term)):
        for op in ("!=", "==", "="):
            if term.startswith(op, i):
                return term[:i], op, term[i + len(op):]
    return None


def parse_field_selector(selector: str) -> FieldSelector:
    """Parse ``fields.ParseSelector`` syntax: ``a=b``, ``a==b``, ``a!=b``, comma separated,
    with ``\\,`` ``\\=`` ``\\\\`` escapes in values. No whitespace trimming, as in Kubernetes."""
    reqs: list[FieldRequirement] = []
    for part in sorted(_split_terms(selector)):
        if not part:
            continue
        split = _split_term(part)
        if split is None:
            raise SelectorError(f"invalid selector: '{selector}'; can't understand '{part}'")
        lhs, op, rhs = split
        operator = Operator.NOT_EQUALS if op == "!=" else Operator.EQUALS
        reqs.append(FieldRequirement(lhs, operator, _unescape_field_value(rhs)))
    return FieldSelector(tuple(reqs))


# --------------------------------------------------------------------------- selectable fields

_META_FIELDS = ("metadata.name", "metadata.namespace")

# The field labels each kind accepts (the field-label conversion funcs); anything else is
# "field label not supported". Kinds not listed accept metadata.name and metadata.namespace.
_SUPPORTED_FIELDS: dict[str, tuple[str, ...]] = {
    "Pod": (*_META_FIELDS, "spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
            "spec.hostNetwork", "status.phase", "status.podIP", "status.podIPs", "status.nominatedNodeName"),
    "Node": ("metadata.name", "spec.unschedulable"),
    "Namespace": ("metadata.name", "status.phase"),
    "Event": (*_META_FIELDS, "involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
              "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
              "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"),
    "Secret": (*_META_FIELDS, "type"),
    "Service": (*_META_FIELDS, "spec.clusterIP", "spec.type"),
    "ReplicaSet": (*_META_FIELDS, "status.replicas"),
    "Job": (*_META_FIELDS, "status.successful"),
}

# Old v1 clients send spec.host; Kubernetes converts it.
_FIELD_ALIASES: dict[str, dict[str, str]] = {"Pod": {"spec.host": "spec.nodeName"}}

_CLUSTER_SCOPED = frozenset(rt.kind for rt in RESOURCES if not rt.namespaced)


def selectable_fields(kind: str) -> tuple[str, ...]:
    """The field labels a field selector on ``kind`` may use."""
    return _SUPPORTED_FIELDS.get(kind, _META_FIELDS)


def validate_field_selector(kind: str, selector: FieldSelector) -> FieldSelector:
    """Check every field is selectable for ``kind``; return the selector with legacy
    aliases converted (``spec.host`` → ``spec.nodeName`` for pods).

    Raises SelectorError("field label not supported: <field>") like the API server.
    """
    supported = selectable_fields(kind)
    aliases = _FIELD_ALIASES.get(kind, {})
    out: list[FieldRequirement] = []
    for r in selector.requirements:
        name = aliases.get(r.field, r.field)
        if name not in supported:
            raise SelectorError(f"field label not supported: {r.field}")
        out.append(r if name == r.field else FieldRequirement(name, r.operator, r.value))
    return FieldSelector(tuple(out))


def _get(obj: Mapping[str, Any], *path: str) -> Any:
    cur: Any = obj
    for p in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(p)
    return cur


def _s(value: Any) -> str:
    return "" if value is None else str(value)


def _go_bool(value: Any) -> str:
    return "true" if value is True else "false"


def _go_int(value: Any) -> str:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else "0"


def object_fields(kind: str, obj: Mapping[str, Any]) -> dict[str, str]:
    """The selectable fields of ``obj`` as Kubernetes' ``ToSelectableFields`` renders them."""
    meta = obj.get("metadata") or {}
    fields = {"metadata.name": _s(meta.get("name"))}
    if kind not in _CLUSTER_SCOPED:
        fields["metadata.namespace"] = _s(meta.get("namespace"))
    if kind == "Pod":
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        pod_ips = status.get("podIPs") or []
        first_ip = pod_ips[0].get("ip") if pod_ips and isinstance(pod_ips[0], Mapping) else status.get("podIP")
        fields.update({
            "spec.nodeName": _s(spec.get("nodeName")),
            "spec.restartPolicy": _s(spec.get("restartPolicy")),
            "spec.schedulerName": _s(spec.get("schedulerName")),
            "spec.serviceAccountName": _s(spec.get("serviceAccountName")),
            "spec.hostNetwork": _go_bool(spec.get("hostNetwork")),
            "status.phase": _s(status.get("phase")),
            "status.podIP": _s(first_ip),
            "status.nominatedNodeName": _s(status.get("nominatedNodeName")),
        })
    elif kind == "Event":
        involved = obj.get("involvedObject") or {}
        fields.update({f"involvedObject.{k}": _s(involved.get(k))
                       for k in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")})
        fields.update({
            "reason": _s(obj.get("reason")),
            "reportingComponent": _s(obj.get("reportingComponent")),
            # Events from new-style reporters carry no source.component; fall back as Kubernetes does.
            "source": _s(_get(obj, "source", "component") or obj.get("reportingComponent")),
            "type": _s(obj.get("type")),
        })
    elif kind == "Node":
        fields["spec.unschedulable"] = _go_bool(_get(obj, "spec", "unschedulable"))
    elif kind == "Namespace":
        fields["status.phase"] = _s(_get(obj, "status", "phase"))
    elif kind == "Secret":
        fields["type"] = _s(obj.get("type"))
    elif kind == "Service":
        fields["spec.clusterIP"] = _s(_get(obj, "spec", "clusterIP"))
        fields["spec.type"] = _s(_get(obj, "spec", "type"))
    elif kind == "ReplicaSet":
        fields["status.replicas"] = _go_int(_get(obj, "status", "replicas"))
    elif kind == "Job":
        fields["status.successful"] = _go_int(_get(obj, "status", "succeeded"))
    return fields
