"""Label and field selectors: the grammar, matching and messages of apimachinery's
``labels/selector.go`` and ``fields/selector.go``, and the selectable fields per kind."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skiff.api.selectors import (
    FieldRequirement,
    FieldSelector,
    LabelSelector,
    Operator,
    Requirement,
    SelectorError,
    escape_field_value,
    object_fields,
    parse_field_selector,
    parse_label_selector,
    selectable_fields,
    validate_field_selector,
)

PROPERTY = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)

VALUE_RULES = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
               "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
               "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
NAME_RULES = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with "
              "an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
              "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")


# --------------------------------------------------------------------------- label selector parsing

@pytest.mark.parametrize(("text", "rendered"), [
    ("", ""),
    ("   ", ""),
    ("x=a,y=b,z=c", "x=a,y=b,z=c"),
    ("x!=y", "x!=y"),
    ("x==y", "x==y"),
    ("x=", "x="),
    ("x= ", "x="),
    ("x=,z= ", "x=,z="),
    ("x= ,z= ", "x=,z="),
    ("!x", "!x"),
    ("x", "x"),
    ("x>1", "x>1"),
    ("x>1,z<5", "x>1,z<5"),
    ("z=1,a=2", "a=2,z=1"),  # sorted by key
    ("x in (b,a), y notin (c), !z, w", "w,x in (a,b),y notin (c),!z"),
    ("x in (a,,b)", "x in (,a,b)"),
    ("x in (a,a)", "x in (a)"),
    ("x notin ()", "x notin ()"),
    ("x in (in),notin", "notin,x in (in)"),
    ("app.kubernetes.io/name=web,tier in (front , back)", "app.kubernetes.io/name=web,tier in (back,front)"),
    ("\tx = a ,\n y\t", "x=a,y"),
])
def test_label_selector_parses_and_renders(text: str, rendered: str) -> None:
    assert str(parse_label_selector(text)) == rendered


def test_label_selector_requirements() -> None:
    sel = parse_label_selector("tier notin (b,a),app=web,!legacy,env")
    assert sel.requirements == (
        Requirement("app", Operator.EQUALS, ("web",)),
        Requirement("env", Operator.EXISTS),
        Requirement("legacy", Operator.DOES_NOT_EXIST),
        Requirement("tier", Operator.NOT_IN, ("a", "b")),
    )


@pytest.mark.parametrize(("text", "message"), [
    ("x=a||y=b", f'unable to parse requirement: values[0][x]: Invalid value: "a||y": {VALUE_RULES}'),
    ("x==a==b", "found '==', expected: ',' or 'end of string'"),
    ("!x=a", "found '=', expected: ',' or 'end of string'"),
    ("x<a", "unable to parse requirement: values[0]: Invalid value: \"a\": "
            "for 'Gt', 'Lt' operators, the value must be an integer"),
    ("x>1.1", "unable to parse requirement: values[0]: Invalid value: \"1.1\": "
              "for 'Gt', 'Lt' operators, the value must be an integer"),
    ("x in (a", "unable to parse requirement: found '', expected: ',' or ')'"),
    ("x in a)", "unable to parse requirement: found 'a' expected: '('"),
    ("x in (a b)", "unable to parse requirement: found 'b', expected: ',' or ')'"),
    ("x y", "unable to parse requirement: found 'y', expected: in, notin, =, ==, !=, gt, lt"),
    ("x=(a)", "unable to parse requirement: found '(', expected: identifier"),
    ("x,", "found '', expected: identifier after ','"),
    (",x", "found ',', expected: !, identifier, or 'end of string'"),
    ("!", "unable to parse requirement: found '', expected: identifier"),
    ("a@b", f'unable to parse requirement: <nil>: Invalid value: "a@b": {NAME_RULES}'),
    ("/a", 'unable to parse requirement: <nil>: Invalid value: "/a": prefix part must be non-empty'),
    ("x=" + "a" * 64, f'unable to parse requirement: values[0][x]: Invalid value: "{"a" * 64}": '
                      "must be no more than 63 characters"),
])
def test_label_selector_errors_read_like_kubernetes(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as info:
        parse_label_selector(text)
    assert str(info.value) == message


@pytest.mark.parametrize("key", [
    "a" * 63,
    "example.com/" + "a" * 63,
    "a.b-c_d",
    "k8s.io/x",
])
def test_valid_label_keys(key: str) -> None:
    assert parse_label_selector(key).requirements[0].key == key


@pytest.mark.parametrize("key", [
    "a" * 64,
    "Example.com/a",
    "a/b/c",
    "a/",
    "-a",
    "a_",
    "." + "a",
    ("a" * 254) + "/b",
])
def test_invalid_label_keys(key: str) -> None:
    with pytest.raises(SelectorError, match="unable to parse requirement: <nil>: Invalid value"):
        parse_label_selector(key)


def test_selector_error_is_a_value_error() -> None:
    assert issubclass(SelectorError, ValueError)


# --------------------------------------------------------------------------- label matching

LABELS = {"app": "web", "tier": "front", "replicas": "3", "version": "v1"}


@pytest.mark.parametrize(("text", "matches"), [
    ("", True),
    ("app=web", True),
    ("app==web", True),
    ("app=db", False),
    ("app!=db", True),
    ("missing!=x", True),
    ("app in (db,web)", True),
    ("app notin (db,web)", False),
    ("missing notin (x)", True),
    ("missing in (x)", False),
    ("app", True),
    ("missing", False),
    ("!missing", True),
    ("!app", False),
    ("replicas>2", True),
    ("replicas<3", False),
    ("version>0", False),  # not an integer: a comparison never matches
    ("missing<5", False),
    ("app=web,tier=back", False),
    ("app=web,tier in (front)", True),
    ("missing=", False),
])
def test_label_selector_matching(text: str, matches: bool) -> None:
    assert parse_label_selector(text).matches(LABELS) is matches


def test_empty_value_matches_only_a_present_empty_label() -> None:
    sel = parse_label_selector("x=")
    assert sel.matches({"x": ""})
    assert not sel.matches({})


def test_from_dict_converts_match_labels_and_expressions() -> None:
    sel = LabelSelector.from_dict({
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["front", "edge"]},
            {"key": "env", "operator": "NotIn", "values": ["dev"]},
            {"key": "team", "operator": "Exists"},
            {"key": "legacy", "operator": "DoesNotExist"},
        ],
    })
    assert str(sel) == "app=web,env notin (dev),!legacy,team,tier in (edge,front)"
    assert sel.matches({"app": "web", "tier": "edge", "team": "x"})
    assert not sel.matches({"app": "web", "tier": "edge", "team": "x", "legacy": "1"})
    assert not sel.matches({"app": "web", "tier": "edge", "team": "x", "env": "dev"})
    assert sel == parse_label_selector(str(sel))


def test_from_dict_null_selects_nothing_and_empty_selects_everything() -> None:
    assert not LabelSelector.from_dict(None).matches({"a": "b"})
    assert not LabelSelector.from_dict(None).matches({})
    assert not LabelSelector.from_dict(None).empty
    empties: list[dict[str, Any]] = [{}, {"matchLabels": {}, "matchExpressions": []}]
    for empty in empties:
        assert LabelSelector.from_dict(empty).matches({"a": "b"})
        assert LabelSelector.from_dict(empty).empty


@pytest.mark.parametrize(("selector", "message"), [
    ({"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["b"]}]},
     '"Equals" is not a valid label selector operator'),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]},
     "values: Invalid value: []string{}: for 'in', 'notin' operators, values set can't be empty"),
    ({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["b"]}]},
     'values: Invalid value: []string{"b"}: values set must be empty for exists and does not exist'),
    ({"matchLabels": {"a b": "c"}}, f'key: Invalid value: "a b": {NAME_RULES}'),
    ({"matchLabels": {"a": "c d"}}, f'values[0][a]: Invalid value: "c d": {VALUE_RULES}'),
])
def test_from_dict_validates_like_label_selector_as_selector(selector: dict[str, Any], message: str) -> None:
    with pytest.raises(SelectorError) as info:
        LabelSelector.from_dict(selector)
    assert str(info.value) == message


def test_from_map_is_a_set_of_equalities() -> None:
    sel = LabelSelector.from_map({"tier": "front", "app": "web"})
    assert str(sel) == "app=web,tier=front"
    assert sel.matches({"app": "web", "tier": "front", "x": "y"})
    assert not sel.matches({"app": "web"})
    assert LabelSelector.from_map(None).matches({}) and LabelSelector.from_map({}).empty


def test_requires_exact_match() -> None:
    sel = parse_label_selector("app=web,tier in (front),env in (a,b),x!=y")
    assert sel.requires_exact_match("app") == "web"
    assert sel.requires_exact_match("tier") == "front"
    assert sel.requires_exact_match("env") is None
    assert sel.requires_exact_match("x") is None
    assert sel.requires_exact_match("missing") is None


def test_add_keeps_requirements_sorted() -> None:
    sel = parse_label_selector("b=1").add(Requirement.new("a", "=", ["2"]))
    assert str(sel) == "a=2,b=1"
    assert LabelSelector.nothing().add(Requirement.new("a", "exists")).matches({"a": "1"}) is False


# --------------------------------------------------------------------------- label selector properties

LABEL_NAMES = st.from_regex(r"\A[a-z0-9]([a-z0-9._-]{0,8}[a-z0-9])?\Z")
KEYS = st.one_of(LABEL_NAMES, st.builds(lambda p, n: f"{p}.io/{n}", st.from_regex(r"\A[a-z]{1,5}\Z"), LABEL_NAMES))
VALUES = st.one_of(st.just(""), st.from_regex(r"\A[A-Za-z0-9]([A-Za-z0-9._-]{0,8}[A-Za-z0-9])?\Z"))
INTS = st.integers(0, 2**63 - 1).map(str)  # "-1" is not a valid label value, so not a Gt operand


@st.composite
def requirements(draw: st.DrawFn) -> Requirement:
    key = draw(KEYS)
    op = draw(st.sampled_from(list(Operator)))
    if op in (Operator.IN, Operator.NOT_IN):
        values: list[str] = draw(st.lists(VALUES, min_size=1, max_size=4))
    elif op in (Operator.EXISTS, Operator.DOES_NOT_EXIST):
        values = []
    elif op in (Operator.GREATER_THAN, Operator.LESS_THAN):
        values = [draw(INTS)]
    else:
        values = [draw(VALUES)]
    return Requirement.new(key, op, values)


@PROPERTY
@given(st.lists(requirements(), max_size=5))
def test_label_selector_string_round_trips(reqs: list[Requirement]) -> None:
    sel = LabelSelector.of(reqs)
    reparsed = parse_label_selector(str(sel))
    assert str(reparsed) == str(sel)
    assert parse_label_selector(str(reparsed)) == reparsed


@PROPERTY
@given(st.lists(requirements(), max_size=4), st.dictionaries(KEYS, st.one_of(VALUES, INTS), max_size=5))
def test_reparsed_selector_matches_the_same_labels(reqs: list[Requirement], labels: dict[str, str]) -> None:
    sel = LabelSelector.of(reqs)
    assert parse_label_selector(str(sel)).matches(labels) == sel.matches(labels)


@PROPERTY
@given(st.dictionaries(KEYS, VALUES, max_size=5))
def test_a_map_selector_matches_its_own_labels(labels: dict[str, str]) -> None:
    assert LabelSelector.from_map(labels).matches(labels)
    assert parse_label_selector(str(LabelSelector.from_map(labels))).matches(labels)


@PROPERTY
@given(st.text(alphabet="ab=!(), in", max_size=12))
def test_label_parser_never_fails_unexpectedly(text: str) -> None:
    try:
        sel = parse_label_selector(text)
    except SelectorError:
        return
    assert parse_label_selector(str(sel)) == sel


# --------------------------------------------------------------------------- field selectors

def test_field_selector_parses_terms() -> None:
    sel = parse_field_selector("status.phase!=Running,spec.nodeName=n1,metadata.name==web")
    # Terms are sorted as text before parsing, as Kubernetes does.
    assert sel.requirements == (
        FieldRequirement("metadata.name", Operator.EQUALS, "web"),
        FieldRequirement("spec.nodeName", Operator.EQUALS, "n1"),
        FieldRequirement("status.phase", Operator.NOT_EQUALS, "Running"),
    )
    assert str(sel) == "metadata.name=web,spec.nodeName=n1,status.phase!=Running"
    assert sel.requires_exact_match("spec.nodeName") == "n1"
    assert sel.requires_exact_match("status.phase") is None
    assert sel.requires_exact_match("other") is None


@pytest.mark.parametrize(("text", "value"), [
    ("a=b\\,c", "b,c"),
    ("a=b\\=c", "b=c"),
    ("a=b\\\\c", "b\\c"),
    ("a=", ""),
    ("a==", ""),
    ("a=!x", "!x"),
])
def test_field_selector_values_unescape(text: str, value: str) -> None:
    assert parse_field_selector(text).requirements[0].value == value


@pytest.mark.parametrize(("text", "message"), [
    ("a", "invalid selector: 'a'; can't understand 'a'"),
    ("a=b,c", "invalid selector: 'a=b,c'; can't understand 'c'"),
    ("a=b=c", "invalid field selector: unescaped character in value: ="),
    ("a=b\\x", "invalid field selector: invalid escape sequence: \\x"),
    ("a=b\\", "invalid field selector: invalid escape sequence: \\"),
])
def test_field_selector_errors(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as info:
        parse_field_selector(text)
    assert str(info.value) == message


def test_field_selector_does_not_trim_whitespace() -> None:
    sel = parse_field_selector("status.phase = Running")
    assert sel.requirements == (FieldRequirement("status.phase ", Operator.EQUALS, " Running"),)


def test_field_selector_matching() -> None:
    fields = {"metadata.name": "web", "status.phase": "Running", "spec.nodeName": ""}
    assert parse_field_selector("").matches(fields)
    assert parse_field_selector("").empty
    assert parse_field_selector("metadata.name=web,status.phase!=Pending").matches(fields)
    assert not parse_field_selector("metadata.name=web,status.phase=Pending").matches(fields)
    assert parse_field_selector("spec.nodeName=").matches(fields)  # unscheduled pods
    assert parse_field_selector("spec.missing=").matches(fields)
    assert not parse_field_selector("spec.missing!=").matches(fields)


@PROPERTY
@given(st.lists(st.tuples(st.from_regex(r"\A[a-zA-Z.]{1,10}\Z"), st.booleans(), st.text(max_size=8)), max_size=4))
def test_field_selector_string_round_trips(terms: list[tuple[str, bool, str]]) -> None:
    sel = FieldSelector(tuple(FieldRequirement(f, Operator.EQUALS if eq else Operator.NOT_EQUALS, v)
                              for f, eq, v in terms))
    reparsed = parse_field_selector(str(sel))
    assert sorted(reparsed.requirements, key=str) == sorted(sel.requirements, key=str)


@PROPERTY
@given(st.text(max_size=10))
def test_escaped_field_values_survive_parsing(value: str) -> None:
    assert parse_field_selector(f"f={escape_field_value(value)}").requirements[0].value == value


# --------------------------------------------------------------------------- selectable fields

def test_validate_field_selector_rejects_fields_a_kind_does_not_index() -> None:
    with pytest.raises(SelectorError) as info:
        validate_field_selector("Pod", parse_field_selector("metadata.name=a,spec.foo=b"))
    assert str(info.value) == "field label not supported: spec.foo"
    with pytest.raises(SelectorError, match="field label not supported: metadata.namespace"):
        validate_field_selector("Node", parse_field_selector("metadata.namespace=x"))
    with pytest.raises(SelectorError, match="field label not supported: status.phase"):
        validate_field_selector("ConfigMap", parse_field_selector("status.phase=x"))


def test_validate_field_selector_converts_the_legacy_pod_host_field() -> None:
    sel = validate_field_selector("Pod", parse_field_selector("spec.host=n1"))
    assert sel.requires_exact_match("spec.nodeName") == "n1"


@pytest.mark.parametrize(("kind", "field"), [
    ("Pod", "spec.nodeName"), ("Pod", "status.podIP"), ("Pod", "spec.hostNetwork"),
    ("Event", "involvedObject.uid"), ("Event", "reason"), ("Event", "source"), ("Event", "type"),
    ("Node", "spec.unschedulable"), ("Namespace", "status.phase"), ("Secret", "type"),
    ("ReplicaSet", "status.replicas"), ("Job", "status.successful"), ("Service", "spec.clusterIP"),
    ("Deployment", "metadata.namespace"), ("ConfigMap", "metadata.name"),
])
def test_selectable_fields(kind: str, field: str) -> None:
    assert field in selectable_fields(kind)
    validate_field_selector(kind, parse_field_selector(f"{field}=x"))


def test_every_field_an_object_exposes_is_selectable() -> None:
    for kind in ("Pod", "Event", "Node", "Namespace", "Secret", "Service", "ReplicaSet", "Job", "ConfigMap"):
        assert set(object_fields(kind, {})) <= set(selectable_fields(kind)), kind


def test_pod_fields() -> None:
    pod = {
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"nodeName": "n1", "restartPolicy": "Always", "schedulerName": "default-scheduler",
                 "serviceAccountName": "default", "hostNetwork": True},
        "status": {"phase": "Running", "podIP": "10.1.0.5", "podIPs": [{"ip": "10.1.0.5"}, {"ip": "fd00::5"}],
                   "nominatedNodeName": "n2"},
    }
    assert object_fields("Pod", pod) == {
        "metadata.name": "web", "metadata.namespace": "default",
        "spec.nodeName": "n1", "spec.restartPolicy": "Always", "spec.schedulerName": "default-scheduler",
        "spec.serviceAccountName": "default", "spec.hostNetwork": "true",
        "status.phase": "Running", "status.podIP": "10.1.0.5", "status.nominatedNodeName": "n2",
    }
    pending = object_fields("Pod", {"metadata": {"name": "p", "namespace": "ns"}})
    assert pending["spec.nodeName"] == "" and pending["spec.hostNetwork"] == "false"
    assert parse_field_selector("spec.nodeName=").matches(pending)


def test_event_fields_fall_back_to_the_reporting_component_for_source() -> None:
    event = {
        "metadata": {"name": "e", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web", "uid": "u1", "apiVersion": "v1",
                           "resourceVersion": "7", "fieldPath": "spec.containers{web}"},
        "reason": "Pulled", "type": "Normal", "reportingComponent": "kubelet",
    }
    fields = object_fields("Event", event)
    assert fields["source"] == "kubelet"
    assert fields["involvedObject.fieldPath"] == "spec.containers{web}"
    assert fields["involvedObject.uid"] == "u1"
    assert object_fields("Event", {**event, "source": {"component": "scheduler"}})["source"] == "scheduler"
    assert parse_field_selector("involvedObject.kind=Pod,involvedObject.name=web,type=Normal").matches(fields)


def test_other_kinds_fields() -> None:
    assert object_fields("Node", {"metadata": {"name": "n1"}, "spec": {"unschedulable": True}}) == {
        "metadata.name": "n1", "spec.unschedulable": "true"}
    assert object_fields("Namespace", {"metadata": {"name": "ns"}, "status": {"phase": "Terminating"}}) == {
        "metadata.name": "ns", "status.phase": "Terminating"}
    assert object_fields("Secret", {"metadata": {"name": "s", "namespace": "d"}, "type": "Opaque"})["type"] == "Opaque"
    assert object_fields("ReplicaSet", {"metadata": {}, "status": {"replicas": 3}})["status.replicas"] == "3"
    assert object_fields("ReplicaSet", {"metadata": {}})["status.replicas"] == "0"
    assert object_fields("Job", {"metadata": {}, "status": {"succeeded": 2}})["status.successful"] == "2"
    assert object_fields("Service", {"metadata": {}, "spec": {"clusterIP": "10.96.0.1", "type": "ClusterIP"}}) == {
        "metadata.name": "", "metadata.namespace": "", "spec.clusterIP": "10.96.0.1", "spec.type": "ClusterIP"}
    assert object_fields("ConfigMap", {"metadata": {"name": "c", "namespace": "d"}}) == {
        "metadata.name": "c", "metadata.namespace": "d"}
