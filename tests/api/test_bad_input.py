"""Bad input: each request is answered with a Kubernetes ``Status`` that names the
problem, with the HTTP code and reason Kubernetes uses, and nothing is stored.

A hypothesis property test then posts random bodies (random JSON trees, kinds,
apiVersions, metadata and spec shapes, and random bytes) with several content types
to several resource paths and asserts that no request ever causes a 5xx.
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.parse
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

if TYPE_CHECKING:
    from tests.conftest import ApiServer, Response, ServerFactory

MAX_BODY = 3 * 1024 * 1024


def assert_status(resp: Response, code: int, reason: str, *mentions: str) -> dict[str, Any]:
    """The reply is a Failure Status with this code and reason whose message names ``mentions``."""
    assert resp.status == code, f"expected HTTP {code} {reason}, got {resp}"
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    body: dict[str, Any] = resp.json()
    assert body.get("kind") == "Status" and body.get("apiVersion") == "v1", body
    assert body.get("status") == "Failure", body
    assert body.get("code") == code, body
    assert body.get("reason") == reason, body
    for text in mentions:
        assert text.lower() in body.get("message", "").lower(), f"message does not mention {text!r}: {body}"
    return body


def configmap(name: str, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}, **extra}


def deployment(name: str, replicas: Any = 1) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]}}}}


class Snapshot:
    """What a namespace holds, to show that a rejected request stored nothing."""

    PLURALS = (("", "configmaps"), ("", "pods"), ("", "services"), ("apps", "deployments"))

    def __init__(self, server: ApiServer, namespace: str):
        self.server = server
        self.namespace = namespace
        self.before = self.take()

    def take(self) -> dict[str, list[tuple[str, str]]]:
        out = {}
        for group, plural in self.PLURALS:
            base = f"/apis/{group}/v1" if group else "/api/v1"
            resp = self.server.get(f"{base}/namespaces/{self.namespace}/{plural}")
            assert resp.status == 200, str(resp)
            out[plural] = sorted((o["metadata"]["name"], o["metadata"]["resourceVersion"])
                                 for o in resp.json()["items"])
        return out

    def assert_unchanged(self, what: str) -> None:
        assert self.take() == self.before, f"{what} changed what is stored"


@pytest.fixture
def snapshot(api_server: ApiServer, namespace: str) -> Iterator[Snapshot]:
    """Seeds one ConfigMap and one Deployment, and checks at the end that the namespace
    still holds exactly those, unchanged."""
    cms = f"/api/v1/namespaces/{namespace}/configmaps"
    assert api_server.post(cms, configmap("existing")).status == 201
    deploys = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    assert api_server.post(deploys, deployment("existing")).status == 201
    snap = Snapshot(api_server, namespace)
    yield snap
    snap.assert_unchanged("the test")


def cm_path(namespace: str, name: str | None = None) -> str:
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    return base if name is None else f"{base}/{urllib.parse.quote(name, safe='')}"


# ---- malformed bodies ------------------------------------------------------------


def test_malformed_json(api_server: ApiServer, namespace: str, snapshot: Snapshot) -> None:
    for body in (b'{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"', b"{,}", b"nul",
                 b'{"metadata": {"name": "x"}, "data": {"a": NaN}}', b"\xff\xfe{}"):
        resp = api_server.post(cm_path(namespace), body)
        assert_status(resp, 400, "BadRequest", "json")
    snapshot.assert_unchanged("malformed JSON")


def test_malformed_yaml(api_server: ApiServer, namespace: str, snapshot: Snapshot) -> None:
    bodies = ["apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n   bad: indent\n",
              "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x\n",
              "- a\nb: c\n",
              "kind: ConfigMap\nmetadata:\n  name: [unclosed\n"]
    for body in bodies:
        resp = api_server.post(cm_path(namespace), body, content_type="application/yaml")
        assert_status(resp, 400, "BadRequest", "yaml")
    snapshot.assert_unchanged("malformed YAML")


def test_well_formed_yaml_is_accepted(api_server: ApiServer, namespace: str) -> None:
    """The control for the test above: the same content type works with a good body."""
    body = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  k: v\n"
    resp = api_server.post(cm_path(namespace), body, content_type="application/yaml")
    assert resp.status == 201, str(resp)
    assert resp.json()["data"] == {"k": "v"}


def test_yaml_alias_bomb_is_rejected(server_factory: ServerFactory) -> None:
    """Billion laughs: Kubernetes refuses excessive aliasing instead of expanding it.
    A server of its own, so a blow-up cannot take down the shared one."""
    server = server_factory.start()
    levels = ["a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]"]
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        levels.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    body = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bomb\ndata:\n  " + "\n  ".join(levels) + "\n"
    resp = server.post("/api/v1/namespaces/default/configmaps", body, content_type="application/yaml",
                       timeout=20)
    assert 400 <= resp.status < 500, str(resp)
    assert resp.json()["kind"] == "Status"
    assert server.get("/api/v1/namespaces/default/configmaps/bomb").status == 404
    assert server.get("/readyz", auth=False).status == 200


@pytest.mark.parametrize("depth", [100, 900, 990, 3000, 100_000])
def test_deeply_nested_json_is_not_a_server_error(api_server: ApiServer, namespace: str, depth: int) -> None:
    nested = "[" * depth + "]" * depth
    body = ('{"apiVersion":"v1","kind":"Service","metadata":{"name":"deep"},"spec":{"ports":[{"port":80,'
            f'"targetPort":{nested}}}]}}}}')
    resp = api_server.post(f"/api/v1/namespaces/{namespace}/services", body.encode())
    assert 400 <= resp.status < 500, str(resp)[:500]
    assert resp.json()["kind"] == "Status"
    assert api_server.get(f"/api/v1/namespaces/{namespace}/services/deep").status == 404


@pytest.mark.parametrize(("content_type", "body"), [
    ("application/json", b'{"metadata":{"name":"lone"},"data":{"k":"\\ud800"}}'),
    ("application/json", b'{"metadata":{"name":"lone","annotations":{"a":"x\\udfff"}}}'),
    ("application/json", b'{"metadata":{"name":"lone","labels":{"a":"\\ud800"}}}'),
    # YAML does not join an escaped surrogate pair: two lone surrogates.
    ("application/yaml", b'metadata: {name: lone}\ndata: {k: "\\ud914\\udc6d"}\n'),
])
def test_lone_surrogates_are_not_a_server_error(api_server: ApiServer, namespace: str, content_type: str,
                                                body: bytes) -> None:
    """Go's JSON decoder turns a lone surrogate into U+FFFD; rejecting it is fine too,
    but it must not reach an ``str.encode()`` as a 500."""
    resp = api_server.post(cm_path(namespace), body, content_type=content_type)
    assert resp.status < 500, str(resp)
    assert resp.json()["kind"] in ("Status", "ConfigMap"), str(resp)
    if resp.status == 201:
        assert api_server.get(cm_path(namespace, "lone")).status == 200
    else:
        assert resp.status in (400, 422), str(resp)
        assert api_server.get(cm_path(namespace, "lone")).status == 404


@pytest.mark.parametrize(("content_type", "body", "stored"), [
    ("application/merge-patch+json", b'{"data":{"k":"\\ud800"}}', "\ufffd"),
    ("application/strategic-merge-patch+json", b'{"data":{"k":"\\ud800"}}', "\ufffd"),
    ("application/apply-patch+yaml", b'{"data":{"k":"\\ud800"}}', "\ufffd"),
    # a valid pair is one character, whichever parser reads it
    ("application/apply-patch+yaml", b'{"data":{"k":"\\ud800\\udc00"}}', "\U00010000"),
    ("application/json-patch+json", b'[{"op":"replace","path":"/data/k","value":"\\ud800"}]', "\ufffd"),
])
def test_lone_surrogates_in_patches(api_server: ApiServer, namespace: str, snapshot: Snapshot, content_type: str,
                                    body: bytes, stored: str) -> None:
    path = cm_path(namespace, "existing") + "?fieldManager=test"
    resp = api_server.patch(path, body, content_type=content_type)
    assert resp.status < 500, str(resp)
    assert resp.json()["kind"] in ("Status", "ConfigMap"), str(resp)
    if resp.status == 200:
        assert resp.json()["data"]["k"] == stored, str(resp)
        # Put the seeded object back, so the snapshot check still holds.
        ok = api_server.patch(path, {"data": {"k": "v"}})
        assert ok.status == 200, str(ok)
        snapshot.before = snapshot.take()
    else:
        assert resp.status in (400, 422), str(resp)


@pytest.mark.parametrize("key", ["\x1f", "a\nb", "x\r\nSet-Cookie: y=z", "\x7f"])
def test_unknown_field_with_control_characters(api_server: ApiServer, namespace: str, key: str) -> None:
    """The unknown field is named in a Warning header (Warn) or the Status (Strict); a
    control character in its name must not break the reply."""
    body = configmap("ctl")
    body[key] = 1
    resp = raw_request(api_server, "POST", cm_path(namespace) + "?fieldValidation=Strict", "application/json",
                       json.dumps(body).encode())
    assert resp[0] == 400, resp
    assert api_server.get(cm_path(namespace, "ctl")).status == 404
    resp = raw_request(api_server, "POST", cm_path(namespace), "application/json", json.dumps(body).encode())
    assert resp[0] == 201, resp
    assert api_server.delete(cm_path(namespace, "ctl")).status == 200


def test_kind_does_not_match_path(api_server: ApiServer, namespace: str, snapshot: Snapshot) -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "wrong-kind"}, "data": {}}
    assert_status(api_server.post(cm_path(namespace), secret), 400, "BadRequest", "Secret")
    deploy = deployment("wrong-group")
    assert_status(api_server.post(cm_path(namespace), deploy), 400, "BadRequest", "apps/v1")
    # The same mismatch on an update of an existing object.
    existing = api_server.get(cm_path(namespace, "existing")).json()
    existing["kind"] = "Secret"
    assert_status(api_server.request("PUT", cm_path(namespace, "existing"), existing), 400, "BadRequest", "Secret")
    snapshot.assert_unchanged("a body of another kind")


def test_unknown_fields_under_strict(api_server: ApiServer, namespace: str, snapshot: Snapshot) -> None:
    body = deployment("strict")
    body["spec"]["replicaz"] = 3
    body["spec"]["template"]["spec"]["containers"][0]["imagee"] = "x"
    body["metadata"]["labelz"] = {"a": "b"}
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments?fieldValidation=Strict"
    resp = api_server.post(path, body)
    assert_status(resp, 400, "BadRequest", "unknown field", "spec.replicaz", "metadata.labelz",
                  "spec.template.spec.containers[0].imagee")
    assert api_server.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/strict").status == 404
    # Without Strict the same body is accepted with warnings, the unknown fields dropped.
    resp = api_server.post(f"/apis/apps/v1/namespaces/{namespace}/deployments?fieldValidation=Warn", body)
    assert resp.status == 201, str(resp)
    assert "replicaz" in resp.headers.get("warning", ""), resp.headers
    assert "replicaz" not in resp.json()["spec"]
    assert api_server.delete(f"/apis/apps/v1/namespaces/{namespace}/deployments/strict").status in (200, 202)
    assert_status(api_server.post(f"{cm_path(namespace)}?fieldValidation=Bogus", configmap("v")), 400, "BadRequest",
                  "fieldValidation")
    snapshot.assert_unchanged("unknown fields under Strict")


@pytest.mark.parametrize("name", ["UPPER", "a;b", "$(x)", "x" * 300, "-leading", "trailing-", "a b", "a/b"])
def test_invalid_names(api_server: ApiServer, namespace: str, snapshot: Snapshot, name: str) -> None:
    resp = api_server.post(cm_path(namespace), configmap(name))
    body = assert_status(resp, 422, "Invalid", "metadata.name")
    causes = body.get("details", {}).get("causes", [])
    assert any(c.get("field") == "metadata.name" for c in causes), body
    assert body["details"].get("kind") == "ConfigMap", body
    if len(name) > 253:
        assert "253" in body["message"], body
    snapshot.assert_unchanged(f"the name {name!r}")


def test_invalid_generate_name(api_server: ApiServer, namespace: str, snapshot: Snapshot) -> None:
    body = configmap("")
    del body["metadata"]["name"]
    body["metadata"]["generateName"] = "BAD;"
    assert_status(api_server.post(cm_path(namespace), body), 422, "Invalid", "metadata.generateName")
    del body["metadata"]["generateName"]
    assert_status(api_server.post(cm_path(namespace), body), 422, "Invalid", "metadata.name")
    snapshot.assert_unchanged("an invalid generateName")


@pytest.mark.parametrize(("path_kind", "mutate", "mention"), [
    ("deployments", lambda o: o["spec"].update(replicas="three"), "replicas"),
    ("deployments", lambda o: o["spec"].update(template="not-an-object"), "template"),
    ("deployments", lambda o: o["metadata"].update(labels=["a", "b"]), "labels"),
    ("configmaps", lambda o: o.update(data={"k": 1}), "data"),
    ("configmaps", lambda o: o.update(metadata="name"), "metadata"),
    ("configmaps", lambda o: o["metadata"].update(annotations={"a": {"b": "c"}}), "annotations"),
])
def test_wrong_types(api_server: ApiServer, namespace: str, snapshot: Snapshot, path_kind: str,
                     mutate: Callable[[dict[str, Any]], None], mention: str) -> None:
    if path_kind == "deployments":
        obj = deployment("typed")
        path = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    else:
        obj = configmap("typed")
        path = cm_path(namespace)
    mutate(obj)
    assert_status(api_server.post(path, obj), 400, "BadRequest", mention)
    snapshot.assert_unchanged(f"a wrong type in {mention}")


def test_wrong_type_on_update(api_server: ApiServer, namespace: str, snapshot: Snapshot) -> None:
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/existing"
    obj = api_server.get(path).json()
    obj["spec"]["replicas"] = "three"
    assert_status(api_server.request("PUT", path, obj), 400, "BadRequest", "replicas")
    resp = api_server.patch(path, {"spec": {"replicas": "three"}})
    assert_status(resp, 400, "BadRequest", "replicas")
    snapshot.assert_unchanged("a wrong type in an update")


def test_invalid_field_values(api_server: ApiServer, namespace: str, snapshot: Snapshot) -> None:
    obj = deployment("negative", replicas=-1)
    resp = api_server.post(f"/apis/apps/v1/namespaces/{namespace}/deployments", obj)
    body = assert_status(resp, 422, "Invalid", "spec.replicas")
    assert any(c.get("field") == "spec.replicas" for c in body["details"]["causes"]), body
    obj = configmap("badlabel")
    obj["metadata"]["labels"] = {"bad key!": "v"}
    assert_status(api_server.post(cm_path(namespace), obj), 422, "Invalid", "metadata.labels")
    snapshot.assert_unchanged("invalid field values")


@pytest.mark.parametrize("selector", ["labelSelector=a b", "labelSelector=x in (", "labelSelector=x in (a",
                                      "labelSelector=!", "labelSelector=a==b==c", "labelSelector=bad key!=v",
                                      "fieldSelector=spec.unknown=x", "fieldSelector=metadata.name",
                                      "fieldSelector=status.phase==Running,spec.nodeName"])
def test_invalid_selectors(api_server: ApiServer, namespace: str, selector: str) -> None:
    key, _, value = selector.partition("=")
    query = urllib.parse.urlencode({key: value})
    resp = api_server.get(f"/api/v1/namespaces/{namespace}/pods?{query}")
    assert_status(resp, 400, "BadRequest")
    watch = api_server.get(f"/api/v1/namespaces/{namespace}/pods?watch=true&{query}", timeout=10)
    assert_status(watch, 400, "BadRequest")


def test_body_over_3_mib(api_server: ApiServer, namespace: str, snapshot: Snapshot) -> None:
    big = configmap("big")
    big["data"] = {"blob": "x" * (MAX_BODY + 1024)}
    resp = api_server.post(cm_path(namespace), big, timeout=60)
    assert_status(resp, 413, "RequestEntityTooLarge", "too large")
    # Just under the limit is not refused for its size (it may still be too big to be
    # a valid ConfigMap, which is a 422, not a 413).
    small = configmap("almost")
    small["data"] = {"blob": "x" * (MAX_BODY - 4096)}
    resp = api_server.post(cm_path(namespace), small, timeout=60)
    assert resp.status != 413, str(resp)[:300]
    if resp.status == 201:
        assert api_server.delete(cm_path(namespace, "almost")).status == 200
    assert api_server.get("/readyz", auth=False).status == 200
    snapshot.assert_unchanged("a body over 3 MiB")


def test_unsupported_content_type(api_server: ApiServer, namespace: str, snapshot: Snapshot) -> None:
    body = json.dumps(configmap("ct")).encode()
    for content_type in ("text/plain", "application/xml", "application/x-www-form-urlencoded"):
        resp = api_server.post(cm_path(namespace), body, content_type=content_type)
        assert_status(resp, 415, "UnsupportedMediaType", content_type)
    # A patch content type on a PUT, and a plain JSON type on a PATCH.
    resp = api_server.request("PUT", cm_path(namespace, "existing"), body,
                              content_type="application/merge-patch+json")
    assert resp.status == 415, str(resp)
    resp = api_server.patch(cm_path(namespace, "existing"), {"data": {"k": "changed"}}, content_type="text/plain")
    assert_status(resp, 415, "UnsupportedMediaType")
    snapshot.assert_unchanged("an unsupported Content-Type")


def test_no_token_and_bad_token(api_server: ApiServer, namespace: str, snapshot: Snapshot) -> None:
    for headers in ({}, {"Authorization": "Bearer not-the-token"}, {"Authorization": f"Basic {api_server.token}"},
                    {"Authorization": "Bearer "}, {"Authorization": f"Bearer {api_server.token}x"}):
        for method, path, body in (("GET", cm_path(namespace), None), ("POST", cm_path(namespace), configmap("x")),
                                   ("GET", "/api/v1/namespaces", None), ("DELETE", cm_path(namespace, "existing"),
                                                                         None)):
            resp = api_server.request(method, path, body, auth=False, headers=headers)
            assert_status(resp, 401, "Unauthorized")
    snapshot.assert_unchanged("unauthenticated requests")


def test_unknown_resource_path(api_server: ApiServer, namespace: str) -> None:
    for path in (f"/api/v1/namespaces/{namespace}/widgets", "/apis/widgets.example.com/v1/widgets",
                 "/api/v2/pods", "/apis/apps/v1/pods", f"/api/v1/namespaces/{namespace}/pods/x/y/z",
                 f"/api/v1/namespaces/{namespace}/configmaps/existing/status"):
        assert_status(api_server.get(path), 404, "NotFound")


def test_stale_resource_version(api_server: ApiServer, namespace: str, snapshot: Snapshot) -> None:
    path = cm_path(namespace, "existing")
    current = api_server.get(path).json()
    stale = dict(current, data={"k": "stale"})
    stale["metadata"] = dict(current["metadata"], resourceVersion=str(int(current["metadata"]["resourceVersion"]) - 1))
    body = assert_status(api_server.request("PUT", path, stale), 409, "Conflict", "existing")
    assert body["details"] == {"name": "existing", "kind": "configmaps"}, body
    # A merge patch carrying a stale resourceVersion is a precondition as well.
    resp = api_server.patch(path, {"metadata": {"resourceVersion": stale["metadata"]["resourceVersion"]},
                                   "data": {"k": "stale"}})
    assert_status(resp, 409, "Conflict")
    # Not a number at all (Kubernetes: 422 Invalid on field resourceVersion).
    garbage = dict(current, metadata=dict(current["metadata"], resourceVersion="abc"))
    resp = api_server.request("PUT", path, garbage)
    assert resp.status in (400, 422), str(resp)
    assert resp.json()["kind"] == "Status" and "resourceVersion" in resp.json()["message"], str(resp)
    snapshot.assert_unchanged("a stale resourceVersion")


def test_create_existing(api_server: ApiServer, namespace: str, snapshot: Snapshot) -> None:
    body = assert_status(api_server.post(cm_path(namespace), configmap("existing")), 409, "AlreadyExists",
                         'configmaps "existing" already exists')
    assert body["details"] == {"name": "existing", "kind": "configmaps"}, body
    snapshot.assert_unchanged("creating an existing object")


def test_missing_namespace(api_server: ApiServer, namespace: str) -> None:
    missing = f"{namespace}-missing"
    body = assert_status(api_server.post(cm_path(missing), configmap("orphan")), 404, "NotFound",
                         f'namespaces "{missing}" not found')
    assert body["details"]["name"] == missing and body["details"]["kind"] == "namespaces", body
    assert_status(api_server.get(cm_path(missing, "orphan")), 404, "NotFound")
    # The namespace in the body must match the one in the path.
    mismatched = configmap("elsewhere")
    mismatched["metadata"]["namespace"] = "default"
    assert_status(api_server.post(cm_path(namespace), mismatched), 400, "BadRequest", "namespace")
    assert api_server.get(cm_path(namespace, "elsewhere")).status == 404
    assert api_server.get(cm_path("default", "elsewhere")).status == 404


def test_missing_object(api_server: ApiServer, namespace: str) -> None:
    assert_status(api_server.get(cm_path(namespace, "nope")), 404, "NotFound", 'configmaps "nope" not found')
    assert_status(api_server.delete(cm_path(namespace, "nope")), 404, "NotFound")
    assert_status(api_server.request("PUT", cm_path(namespace, "nope"), configmap("nope")), 404, "NotFound")
    assert_status(api_server.patch(cm_path(namespace, "nope"), {"data": {}}), 404, "NotFound")


def test_bad_query_parameters(api_server: ApiServer, namespace: str, snapshot: Snapshot) -> None:
    for query in ("limit=abc", "limit=-1", "watch=maybe", "resourceVersionMatch=Sometimes&resourceVersion=1",
                  "continue=not-a-token", "timeoutSeconds=soon&watch=true"):
        resp = api_server.get(f"{cm_path(namespace)}?{query}", timeout=10)
        assert 400 <= resp.status < 500, f"{query}: {resp}"
        assert resp.json()["kind"] == "Status", f"{query}: {resp}"
    assert_status(api_server.post(f"{cm_path(namespace)}?dryRun=Some", configmap("dry")), 400, "BadRequest",
                  "dry")
    snapshot.assert_unchanged("bad query parameters")


# ---- property test: random bodies never cause a 5xx ------------------------------

KINDS = ["ConfigMap", "Pod", "Service", "Deployment", "Secret", "Job", "Lease", "Namespace", "Status", "", "List"]
API_VERSIONS = ["v1", "apps/v1", "batch/v1", "coordination.k8s.io/v1", "v2", "", "apps/v1beta1", "meta.k8s.io/v1"]
CREATE_PATHS = {
    "configmaps": "/api/v1/namespaces/{ns}/configmaps",
    "pods": "/api/v1/namespaces/{ns}/pods",
    "services": "/api/v1/namespaces/{ns}/services",
    "secrets": "/api/v1/namespaces/{ns}/secrets",
    "deployments": "/apis/apps/v1/namespaces/{ns}/deployments",
    "jobs": "/apis/batch/v1/namespaces/{ns}/jobs",
    "leases": "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
    "endpointslices": "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
}
SEEDED = {  # objects the PUT/PATCH examples write to
    "/api/v1/namespaces/{ns}/configmaps/seed": configmap("seed"),
    "/apis/apps/v1/namespaces/{ns}/deployments/seed": deployment("seed"),
    "/api/v1/namespaces/{ns}/services/seed": {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "seed"},
                                              "spec": {"ports": [{"port": 80, "targetPort": 8080}],
                                                       "selector": {"app": "seed"}}},
    "/api/v1/namespaces/{ns}/pods/seed": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "seed"},
                                          "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
}

# Strings a text() strategy rarely or never draws: lone surrogates, NUL, CR/LF, bidi controls.
nasty_strings = st.sampled_from(["\ud800", "x\udfff", "\x00", "a\r\nb: c", "\u202e", "\U0001f4a5", "\x7f\x85"])
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20), nasty_strings)
json_trees = st.recursive(scalars, lambda children: st.one_of(
    st.lists(children, max_size=4),
    st.dictionaries(st.one_of(st.text(max_size=12), nasty_strings), children, max_size=4)), max_leaves=20)
names = st.one_of(st.sampled_from(["ok", "UPPER", "", "a;b", "$(x)", "a" * 300, "seed", "x.y", "-x"]),
                  st.text(max_size=30), json_trees)
string_maps = st.one_of(st.dictionaries(st.text(max_size=20), st.text(max_size=20), max_size=3), json_trees)
metadata = st.one_of(json_trees, st.fixed_dictionaries({}, optional={
    "name": names, "generateName": names, "namespace": st.one_of(st.text(max_size=10), json_trees),
    "labels": string_maps, "annotations": string_maps, "resourceVersion": st.one_of(st.text(max_size=8), json_trees),
    "finalizers": st.one_of(st.lists(st.text(max_size=20), max_size=3), json_trees), "uid": json_trees,
    "ownerReferences": json_trees, "deletionTimestamp": json_trees, "creationTimestamp": json_trees,
}))
spec_shapes = st.one_of(json_trees, st.fixed_dictionaries({}, optional={
    "replicas": json_trees, "selector": json_trees, "template": json_trees, "containers": json_trees,
    "ports": st.one_of(json_trees, st.lists(st.dictionaries(
        st.sampled_from(["port", "targetPort", "nodePort", "protocol", "name"]), json_trees), max_size=3)),
    "type": st.one_of(st.sampled_from(["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]), json_trees),
    "clusterIP": json_trees, "nodeName": json_trees, "holderIdentity": json_trees,
}))
objects = st.fixed_dictionaries({}, optional={
    "apiVersion": st.one_of(st.sampled_from(API_VERSIONS), json_trees),
    "kind": st.one_of(st.sampled_from(KINDS), json_trees),
    "metadata": metadata, "spec": spec_shapes, "status": json_trees, "data": string_maps,
    "stringData": string_maps, "type": json_trees,
}).flatmap(lambda base: st.dictionaries(st.text(max_size=10), json_trees, max_size=2).map(
    lambda extra: {**extra, **base}))


def encode_body(draw: st.DrawFn, content_type: str) -> bytes:
    kind = draw(st.sampled_from(["object", "object", "object", "tree", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    value = draw(objects) if kind == "object" else draw(json_trees)
    if "yaml" in content_type and draw(st.booleans()):
        import yaml  # YAML-typed bodies are sometimes real YAML, sometimes JSON (a YAML subset)

        return yaml.safe_dump(value).encode()
    return json.dumps(value).encode()


@st.composite
def create_requests(draw: st.DrawFn) -> tuple[str, str, str, bytes]:
    path = draw(st.sampled_from(sorted(CREATE_PATHS.values())))
    content_type = draw(st.sampled_from(["application/json", "application/yaml", "", "text/plain",
                                         "application/merge-patch+json", "application/json; charset=utf-8"]))
    query = draw(st.sampled_from(["", "?fieldValidation=Strict", "?dryRun=All", "?fieldValidation=Ignore"]))
    return "POST", path + query, content_type, encode_body(draw, content_type)


@st.composite
def write_requests(draw: st.DrawFn) -> tuple[str, str, str, bytes]:
    path = draw(st.sampled_from(sorted(SEEDED)))
    sub = draw(st.sampled_from(["", "", "/status"])) if "configmaps" not in path else ""
    method = draw(st.sampled_from(["PUT", "PATCH"]))
    if method == "PUT":
        content_type = draw(st.sampled_from(["application/json", "application/yaml", ""]))
        body = encode_body(draw, content_type)
    else:
        content_type = draw(st.sampled_from(["application/merge-patch+json", "application/json-patch+json",
                                             "application/strategic-merge-patch+json",
                                             "application/apply-patch+yaml"]))
        if content_type == "application/json-patch+json" and draw(st.booleans()):
            op = st.fixed_dictionaries({"op": st.one_of(st.sampled_from(["add", "remove", "replace", "move", "copy",
                                                                         "test"]), json_trees),
                                        "path": st.one_of(st.sampled_from(["/spec", "/metadata/labels", "/data/k",
                                                                           "/spec/replicas", "/metadata/name",
                                                                           "/", "", "/status/phase"]),
                                                          st.text(max_size=15)),
                                        "value": json_trees, "from": st.text(max_size=15)})
            body = json.dumps(draw(st.lists(op, max_size=3))).encode()
        else:
            body = encode_body(draw, content_type)
    query = draw(st.sampled_from(["", "?fieldValidation=Strict", "?dryRun=All", "?fieldManager=fuzz"]))
    return method, path + sub + query, content_type, body


def raw_request(server: ApiServer, method: str, path: str, content_type: str, body: bytes) -> tuple[int, bytes]:
    """Like ``server.request`` but sends no Content-Type at all when it is empty, as the
    Python client's create does."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.load_verify_locations(cadata=server.ca_pem.decode())
    headers = {"Authorization": f"Bearer {server.token}", "Accept": "application/json"}
    if content_type:
        headers["Content-Type"] = content_type
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=ctx, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def assert_no_server_error(server: ApiServer, request: tuple[str, str, str, bytes]) -> None:
    method, path, content_type, body = request
    try:
        status, raw = raw_request(server, method, path, content_type, body)
    except (http.client.HTTPException, ConnectionError) as e:
        raise AssertionError(f"{method} {path} ({content_type!r}) {body[:300]!r}: no reply, the server closed "
                             f"the connection ({type(e).__name__}: {e})") from None
    resp = Reply(status, raw)
    assert resp.status < 500, f"{method} {path} ({content_type!r}) {body[:300]!r} -> {resp}"
    try:
        parsed = json.loads(resp.body)
    except ValueError:
        raise AssertionError(f"{method} {path}: reply is not JSON: {resp}") from None
    assert isinstance(parsed, dict), parsed
    if resp.status >= 400:
        assert parsed.get("kind") == "Status" and parsed.get("code") == resp.status, parsed
        assert parsed.get("status") == "Failure" and parsed.get("reason") and parsed.get("message"), parsed


class Reply:
    def __init__(self, status: int, body: bytes):
        self.status = status
        self.body = body

    def __str__(self) -> str:
        return f"HTTP {self.status}: {self.body[:2000].decode('utf-8', 'replace')}"


@pytest.fixture
def fuzz_namespace(api_server: ApiServer, namespace: str) -> str:
    for path, obj in SEEDED.items():
        resp = api_server.post(path.format(ns=namespace).rsplit("/", 1)[0], obj)
        assert resp.status == 201, str(resp)
    return namespace


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(request=create_requests())
def test_random_creates_never_cause_5xx(api_server: ApiServer, fuzz_namespace: str,
                                        request: tuple[str, str, str, bytes]) -> None:
    method, path, content_type, body = request
    assert_no_server_error(api_server, (method, path.format(ns=fuzz_namespace), content_type, body))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(request=write_requests())
def test_random_updates_and_patches_never_cause_5xx(api_server: ApiServer, fuzz_namespace: str,
                                                    request: tuple[str, str, str, bytes]) -> None:
    method, path, content_type, body = request
    assert_no_server_error(api_server, (method, path.format(ns=fuzz_namespace), content_type, body))


def test_a_body_arriving_in_pieces_is_read_whole(api_server: ApiServer, namespace: str) -> None:
    """The server reads a request body to its end, however the client's writes split it
    (kubectl's larger bodies arrive in several TLS records)."""
    import socket

    assert api_server._ssl is not None
    body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "pieces"},
                       "data": {"k": "v" * 5000}}).encode()
    head = (f"POST /api/v1/namespaces/{namespace}/configmaps HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {api_server.token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", api_server.port), timeout=10) as raw, \
            api_server._ssl.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
        conn.sendall(head + body[:100])
        # a server that parsed the first piece alone would have answered by now (400): it must wait
        conn.settimeout(0.5)
        try:
            early = conn.recv(1)
        except (TimeoutError, ssl.SSLError):
            early = b""
        assert early == b"", "the server answered before the body was complete"
        conn.settimeout(10)
        conn.sendall(body[100:])
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    status_line = reply.split(b"\r\n", 1)[0]
    assert b" 201 " in status_line, reply[:500]
    stored = api_server.get(f"/api/v1/namespaces/{namespace}/configmaps/pieces").json()
    assert stored["data"]["k"] == "v" * 5000
