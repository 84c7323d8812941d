"""Decode-time schema checks name the path of every unknown field and wrongly typed
value the way Kubernetes' decoder prints it."""

from __future__ import annotations

from control_plane.api import schema


def test_paths_of_unknown_fields_and_type_errors() -> None:
    pod = {
        "apiVersion": "v1", "kind": "Pod", "bogus": 1,
        "metadata": {"name": "p", "labels": {"a": 1}, "annotations": {"b": "ok"}, "labelz": {}},
        "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": "80", "extra": True}]},
                                {"name": 7, "resources": {"requests": {"cpu": True}}}],
                 "nodeSelector": {"x": ["list"]}, "overhead": {"cpu": "1"}},
    }
    decoded = schema.decode("V1Pod", pod)
    assert decoded.unknown == ["bogus", "metadata.labelz", "spec.containers[0].ports[0].extra"]
    assert decoded.type_errors == [
        "json: cannot unmarshal number into Go struct field metadata.labels of type string",
        "json: cannot unmarshal string into Go struct field spec.containers[0].ports[0].containerPort of type int64",
        "json: cannot unmarshal number into Go struct field spec.containers[1].name of type string",
        "json: cannot unmarshal bool into Go struct field spec.containers[1].resources.requests of type Quantity",
        "json: cannot unmarshal array into Go struct field spec.nodeSelector of type string",
    ]
    assert decoded.obj["spec"]["containers"][0] == {"name": "c", "image": "i", "ports": [{"containerPort": None}]}
    assert decoded.obj["metadata"] == {"name": "p", "labels": {"a": None}, "annotations": {"b": "ok"}}


def test_a_map_of_objects_names_its_keys_and_a_wrong_top_level_type_is_reported_at_the_root() -> None:
    decoded = schema.decode("V1ConfigMap", {"metadata": {"managedFields": [{"fieldsV1": {"f:x": {}}}]}})
    assert decoded.unknown == [] and decoded.type_errors == []
    assert schema.decode("V1Pod", ["not", "an", "object"]).type_errors == [
        "json: cannot unmarshal array into Go struct field . of type V1Pod"]
    assert schema.decode("V1Pod", {"spec": {"containers": {"a": 1}}}).type_errors == [
        "json: cannot unmarshal object into Go struct field spec.containers of type []V1Container"]
