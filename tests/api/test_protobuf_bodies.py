"""Protobuf request bodies (application/vnd.kubernetes.protobuf), as kubectl 1.32+ sends
for ``create deployment|namespace|configmap|secret|service|job|...``.

Unit tests decode hand-built messages (a tiny encoder below) and a body recorded from
kubectl 1.35; end-to-end tests run the pinned kubectl 1.35 against a real server and
check that (a) the body it sent decodes to exactly the JSON kubectl itself prints for
the same object (``--dry-run=client -o json``: Go's encoding/json of the same struct),
and (b) the stored object equals what kubectl 1.20 creates with JSON for the same
command.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from control_plane.api import bodies, errors
from control_plane.api.protobuf import MAGIC, MEDIA_TYPE, DecodeError, decode_body, known_kinds
from control_plane.api.protobuf.decoder import go_duration
from control_plane.api.protobuf.schema import load
from skiff.api.resources import REGISTRY

if TYPE_CHECKING:
    from tests.conftest import ApiServer

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS = REPO_ROOT / ".tools"


# ---- a tiny protobuf encoder for hand-built messages ----------------------------------------

def varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative ints as 10-byte two's complement, as Go writes them
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def f(number: int, value: bytes | str | int) -> bytes:
    """Field ``number``: bytes/str length-delimited, int/bool as a varint."""
    if isinstance(value, (bytes, str)):
        data = value.encode() if isinstance(value, str) else value
        return varint(number << 3 | 2) + varint(len(data)) + data
    return varint(number << 3) + varint(int(value))


def m(*fields: bytes) -> bytes:
    return b"".join(fields)


def entry(number: int, key: str, value: bytes | str | int) -> bytes:
    """One map entry of map field ``number``."""
    return f(number, m(f(1, key), f(2, value)))


def body(api_version: str, kind: str, raw: bytes) -> bytes:
    return MAGIC + f(1, m(f(1, api_version), f(2, kind))) + f(2, raw)


def decode(api_version: str, kind: str, *fields: bytes) -> dict[str, Any]:
    return decode_body(body(api_version, kind, m(*fields)))


def meta(name: str) -> bytes:
    return f(1, m(f(1, name)))


# ---- decoding ----------------------------------------------------------------------------

# `kubectl-1.35 create deployment d1 --image=skiff/app:1.0 --replicas=2 --port=8080`, as sent.
KUBECTL_135_DEPLOYMENT = bytes.fromhex(
    "6b3873000a150a07617070732f7631120a4465706c6f796d656e7412bb010a1d0a02643112001a0022002a003200380042005a090a"
    "0361707012026431128b010802120b0a090a03617070120264311a720a1b0a0012001a0022002a003200380042005a090a036170"
    "7012026431125312350a03617070120d736b6966662f6170703a312e302a00320b0a00100018903f22002a0042006a0072008001"
    "00880100900100a201001a00320042004a0052005800600068008201008a01009a0100c2010022020a00280038001a0c08001000"
    "18002000280038001a002200")


def test_body_recorded_from_kubectl_135() -> None:
    assert decode_body(KUBECTL_135_DEPLOYMENT) == {
        "kind": "Deployment", "apiVersion": "apps/v1",
        "metadata": {"name": "d1", "labels": {"app": "d1"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "d1"}},
            "template": {"metadata": {"labels": {"app": "d1"}},
                         "spec": {"containers": [{"name": "app", "image": "skiff/app:1.0",
                                                  "ports": [{"containerPort": 8080}], "resources": {}}]}},
            "strategy": {},
        },
        "status": {},
    }


def test_absent_fields_are_go_zero_values() -> None:
    # Go writes a non-pointer struct even when empty, a nil pointer/slice without
    # omitempty as null, and a non-omitempty scalar as its zero value.
    assert decode("apps/v1", "Deployment") == {
        "kind": "Deployment", "apiVersion": "apps/v1", "metadata": {},
        "spec": {"selector": None, "template": {"metadata": {}, "spec": {"containers": None}}, "strategy": {}},
        "status": {},
    }
    assert decode("v1", "Event") == {
        "kind": "Event", "apiVersion": "v1", "metadata": {}, "involvedObject": {}, "source": {},
        "firstTimestamp": None, "lastTimestamp": None, "eventTime": None,
        "reportingComponent": "", "reportingInstance": "",
    }


def test_pointer_presence() -> None:
    spec = decode("apps/v1", "Deployment", f(2, m()))["spec"]
    assert "replicas" not in spec and "revisionHistoryLimit" not in spec
    # replicas=0 and revisionHistoryLimit=0 are pointers: present zeros stay; minReadySeconds
    # and paused are omitempty values: a zero is indistinguishable from absent in Go.
    spec = decode("apps/v1", "Deployment", f(2, m(f(1, 0), f(6, 0), f(5, 0), f(7, 0))))["spec"]
    assert spec["replicas"] == 0 and spec["revisionHistoryLimit"] == 0
    assert "minReadySeconds" not in spec and "paused" not in spec
    spec = decode("apps/v1", "Deployment", f(2, m(f(5, 7), f(7, 1))))["spec"]
    assert spec["minReadySeconds"] == 7 and spec["paused"] is True
    # ContainerPort.containerPort has no omitempty: a zero is written.
    container = m(f(1, "c"), f(6, m(f(1, "http"))))
    pod = decode("v1", "Pod", f(2, m(f(2, container))))
    assert pod["spec"]["containers"] == [{"name": "c", "ports": [{"name": "http", "containerPort": 0}],
                                          "resources": {}}]


def test_repeated_message_field_merges() -> None:
    obj = decode("v1", "ConfigMap", f(1, m(f(1, "a"))), f(1, m(entry(11, "k", "v"))), f(1, m(f(3, "ns"))))
    assert obj["metadata"] == {"name": "a", "namespace": "ns", "labels": {"k": "v"}}
    # a scalar repeated: the last one wins
    assert decode("v1", "ConfigMap", f(1, m(f(1, "a"), f(1, "b"))))["metadata"] == {"name": "b"}


def test_maps_are_sorted_and_quantities_are_strings() -> None:
    quota = decode("v1", "ResourceQuota", meta("q"),
                   f(2, m(entry(1, "pods", m(f(1, "3"))), entry(1, "cpu", m(f(1, "500m"))),
                          entry(1, "memory", m()))))
    assert quota["spec"] == {"hard": {"cpu": "500m", "memory": "0", "pods": "3"}}
    assert list(quota["spec"]["hard"]) == ["cpu", "memory", "pods"]
    pod = decode("v1", "Pod", f(2, m(f(2, m(f(1, "c"), f(8, m(entry(1, "cpu", m(f(1, "1"))))))))))
    assert pod["spec"]["containers"][0]["resources"] == {"limits": {"cpu": "1"}}


def test_bytes_are_base64() -> None:
    secret = decode("v1", "Secret", meta("s"), entry(2, "bin", b"\x00\xff"), entry(2, "empty", b""),
                    entry(4, "plain", "text"), f(3, "Opaque"))
    assert secret["data"] == {"bin": "AP8=", "empty": ""}
    assert secret["stringData"] == {"plain": "text"}
    assert secret["type"] == "Opaque"
    cm = decode("v1", "ConfigMap", meta("c"), entry(2, "a", "b"), entry(3, "blob", b"\x89PNG"), f(4, 1))
    assert cm == {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "c"}, "immutable": True,
                  "data": {"a": "b"}, "binaryData": {"blob": "iVBORw=="}}


def test_times() -> None:
    ts = m(f(1, 1704164645), f(2, 999_999_999))  # 2024-01-02T03:04:05.999999999Z
    event = decode("v1", "Event", meta("e"), f(6, ts), f(10, ts), f(11, m(f(1, 2), f(2, ts))))
    assert event["firstTimestamp"] == "2024-01-02T03:04:05Z"  # metav1.Time keeps whole seconds
    assert event["lastTimestamp"] is None
    assert event["eventTime"] == "2024-01-02T03:04:05.999999Z"  # MicroTime: microseconds
    assert event["series"] == {"count": 2, "lastObservedTime": "2024-01-02T03:04:05.999999Z"}
    # A zero Time travels as no bytes; creationTimestamp (omitzero) then disappears.
    obj = decode("v1", "ConfigMap", f(1, m(f(1, "c"), f(8, b""), f(9, m(f(1, 0))))))
    assert obj["metadata"] == {"name": "c", "deletionTimestamp": "1970-01-01T00:00:00Z"}
    managed = m(f(1, "kubectl"), f(2, "Update"), f(4, m(f(1, 86400))), f(7, m(f(1, '{"f:data":{}}'))))
    obj = decode("v1", "ConfigMap", f(1, m(f(1, "c"), f(17, managed))))
    assert obj["metadata"]["managedFields"] == [{"manager": "kubectl", "operation": "Update",
                                                 "time": "1970-01-02T00:00:00Z", "fieldsV1": {"f:data": {}}}]


@pytest.mark.parametrize(("ns", "text"), [
    (0, "0s"), (1, "1ns"), (1500, "1.5µs"), (1_500_000, "1.5ms"), (10**9, "1s"), (90 * 10**9, "1m30s"),
    (3600 * 10**9, "1h0m0s"), (3723 * 10**9 + 5 * 10**8, "1h2m3.5s"), (-2 * 10**9, "-2s"),
])
def test_go_duration(ns: int, text: str) -> None:
    assert go_duration(ns) == text


def test_int_or_string() -> None:
    ports = m(f(1, m(f(1, "web"), f(3, 80), f(4, m(f(1, 0), f(2, 8080))))),
              f(1, m(f(1, "alt"), f(2, "UDP"), f(3, 53), f(4, m(f(1, 1), f(3, "dns"))))),
              f(1, m(f(3, 81))))  # an absent IntOrString is Go's zero value: 0
    svc = decode("v1", "Service", meta("s"), f(2, ports))
    assert svc["spec"]["ports"] == [{"name": "web", "port": 80, "targetPort": 8080},
                                    {"name": "alt", "protocol": "UDP", "port": 53, "targetPort": "dns"},
                                    {"port": 81, "targetPort": 0}]


def test_inline_structs() -> None:
    volumes = m(f(1, m(f(1, "data"), f(2, m(f(2, m()))))),                    # emptyDir: {}
                f(1, m(f(1, "cfg"), f(2, m(f(19, m(f(1, m(f(1, "cm"))), f(3, 0o644))))))),
                f(1, m(f(1, "bare"))))
    probe = m(f(1, m(f(2, m(f(1, "/healthz"), f(2, m(f(1, 1), f(3, "http"))))))), f(2, 3))
    pod = decode("v1", "Pod", f(2, m(volumes, f(2, m(f(1, "c"), f(10, probe))))))
    assert pod["spec"]["volumes"] == [{"name": "data", "emptyDir": {}},
                                      {"name": "cfg", "configMap": {"name": "cm", "defaultMode": 420}},
                                      {"name": "bare"}]
    assert pod["spec"]["containers"][0]["livenessProbe"] == {"httpGet": {"path": "/healthz", "port": "http"},
                                                             "initialDelaySeconds": 3}


def test_repeated_scalars_packed_or_not() -> None:
    unpacked = m(f(4, 3000), f(4, 4000))
    packed = f(4, varint(3000) + varint(4000))
    for groups in (unpacked, packed, f(4, varint(3000)) + f(4, 4000)):
        pod = decode("v1", "Pod", f(2, m(f(14, groups))))
        assert pod["spec"]["securityContext"] == {"supplementalGroups": [3000, 4000]}
    pod = decode("v1", "Pod", f(2, m(f(2, m(f(1, "c"), f(3, "sh"), f(3, "-c"), f(4, "x"))))))
    assert pod["spec"]["containers"][0]["command"] == ["sh", "-c"]
    assert pod["spec"]["containers"][0]["args"] == ["x"]


def test_negative_ints_invalid_utf8_and_unknown_fields() -> None:
    unknown = (f(99, 5) + f(98, b"junk") + varint(97 << 3 | 1) + bytes(8) + varint(96 << 3 | 5) + bytes(4)
               + varint(95 << 3 | 3) + f(1, 1) + varint(95 << 3 | 4))  # a group, skipped whole
    obj = decode("apps/v1", "Deployment", f(1, m(f(1, "d\xff".encode("latin-1")), unknown)),
                 f(2, m(f(1, -1), f(9, -(2**31)), unknown)), unknown)
    assert obj["metadata"] == {"name": "d\ufffd"}
    assert obj["spec"]["replicas"] == -1
    assert obj["spec"]["progressDeadlineSeconds"] == -(2**31)
    assert decode("v1", "Pod", f(2, m(f(4, 2**62))))["spec"]["terminationGracePeriodSeconds"] == 2**62


@pytest.mark.parametrize(("data", "message"), [
    (b"", "empty data"),
    (b'{"kind":"ConfigMap"}', "does not appear to be a protobuf message, expected prefix [107 56 115 0]"),
    (MAGIC, "empty body"),
    (MAGIC + b"\x0a\x05ab", "the object provided is unrecognized: unexpected EOF"),
    (MAGIC + f(2, meta("x")), "Object 'Kind' is missing"),
    (MAGIC + f(1, m(f(2, "ConfigMap"))), "Object 'apiVersion' is missing"),
    (body("v1", "Widget", b""), 'no kind "Widget" is registered for version "v1"'),
    (body("apps/v2", "Deployment", b""), 'no kind "Deployment" is registered for version "apps/v2"'),
    (body("apps/v1", "Deployment", f(2, m(f(1, "2")))),
     'Deployment in version "v1" cannot be handled as a Deployment: proto: wrong wireType = 2 for field replicas'),
    (body("v1", "ConfigMap", f(1, 5)), "proto: wrong wireType = 0 for field metadata"),
    (body("v1", "ConfigMap", b"\x08" + b"\xff" * 11), "proto: integer overflow"),
    (body("v1", "ConfigMap", b"\x0f"), "proto: illegal wireType 7"),
    (body("v1", "ConfigMap", b"\x00\x00"), "proto: illegal tag 0"),
    (body("v1", "ConfigMap", b"\x0c"), "proto: wiretype end group for non-group"),
    (body("v1", "ConfigMap", f(1, b"\x0a\x7f")), "unexpected EOF"),
    (body("v1", "ConfigMap", b"\x0a\x80"), "unexpected EOF"),
    (body("v1", "Service", f(2, f(1, m(f(4, m(f(1, 5))))))), "impossible IntOrString.Type 5"),
    (body("v1", "ConfigMap", f(1, m(f(17, m(f(7, m(f(1, "{not json")))))))), "an embedded object is not JSON"),
    (body("v1", "ConfigMap", f(1, m(f(9, m(f(1, 10**15)))))), "time out of range"),
])
def test_malformed_bodies(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as e:
        decode_body(data)
    assert message in str(e.value)


def test_parse_document_decodes_protobuf_and_answers_400() -> None:
    obj = bodies.parse_document(body("v1", "Namespace", meta("n")), MEDIA_TYPE)
    assert obj == {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "n"}, "spec": {}, "status": {}}
    with pytest.raises(errors.ApiError) as e:
        bodies.parse_document(MAGIC + b"\xff", MEDIA_TYPE)
    assert (e.value.code, e.value.reason) == (400, "BadRequest")


# ---- the table ---------------------------------------------------------------------------

def test_every_served_kind_is_in_the_table() -> None:
    kinds = set(known_kinds())
    for rt in REGISTRY.types:
        assert f"{rt.api_version}/{rt.kind}" in kinds
    assert {"v1/Binding", "autoscaling/v1/Scale", "policy/v1/Eviction"} <= kinds
    schema = load()
    assert schema.message_for("v1", "DeleteOptions") is schema.message_for("apps/v1", "DeleteOptions") is not None


def test_table_agrees_with_the_json_schema() -> None:
    """Field names match control_plane/api/schema/fields.json (the official client's
    models), and a field that schema does not know (newer than the client) is only ever
    written when set: otherwise fieldValidation=Strict would reject every protobuf body."""
    fields_json = json.loads((REPO_ROOT / "control_plane/api/schema/fields.json").read_text())
    models, schema = fields_json["models"], load()
    seen: set[tuple[str, str]] = set()
    unknown_always_written: list[str] = []
    matched = 0

    def flat(message: str) -> dict[str, Any]:
        out = {}
        for field in schema.messages[message].fields:
            if field.inline:
                out.update(flat(field.type))
            else:
                out[field.name] = field
        return out

    def walk(message: str, model: str, path: str) -> None:
        nonlocal matched
        if (message, model) in seen:
            return
        seen.add((message, model))
        theirs: dict[str, str] = models[model]
        for name, field in flat(message).items():
            if name not in theirs:
                if not (field.pointer or field.omitempty or field.omitzero):
                    unknown_always_written.append(f"{path}.{name}")
                continue
            matched += 1
            other = theirs[name]
            while other.startswith(("list[", "map[")):
                other = other[5:-1] if other.startswith("list[") else other[4:-1]
            if field.type in schema.messages and other in models:
                walk(field.type, other, f"{path}.{name}")

    for key, message in schema.kinds.items():
        api_version, _, kind = key.rpartition("/")
        model = fields_json["kinds"].get(key) or fields_json["kinds"].get(f"V1{kind}")
        if model:
            walk(message, model, key)
    assert matched > 700
    assert not unknown_always_written


@pytest.mark.skipif(not (TOOLS / "kubectl-1.35").is_file(), reason="scripts/setup.sh fetches kubectl 1.35")
def test_generated_table_is_up_to_date(tmp_path: Path) -> None:
    out = tmp_path / "messages.json"
    subprocess.run([sys.executable, str(REPO_ROOT / "scripts/gen_protobuf_schema.py"), "--out", str(out)],
                   check=True, capture_output=True, timeout=120)
    assert out.read_text() == (REPO_ROOT / "control_plane/api/protobuf/messages.json").read_text()


# ---- a real server -----------------------------------------------------------------------

def cm_path(ns: str, name: str | None = None) -> str:
    return f"/api/v1/namespaces/{ns}/configmaps" + (f"/{name}" if name else "")


def test_server_accepts_protobuf_and_answers_bad_ones_with_400(api_server: ApiServer, namespace: str) -> None:
    cm = body("v1", "ConfigMap", m(meta("pb"), entry(2, "a", "b"), entry(3, "bin", b"\x00\x01")))
    resp = api_server.post(cm_path(namespace), cm, content_type=MEDIA_TYPE)
    assert resp.status == 201, str(resp)
    stored = api_server.get(cm_path(namespace, "pb")).json()
    assert (stored["data"], stored["binaryData"]) == ({"a": "b"}, {"bin": "AAE="})
    # an update (PUT) with protobuf, carrying the resourceVersion
    rv = stored["metadata"]["resourceVersion"]
    updated = body("v1", "ConfigMap", m(f(1, m(f(1, "pb"), f(6, rv))), entry(2, "a", "c")))
    resp = api_server.request("PUT", cm_path(namespace, "pb") + "?fieldValidation=Strict", updated,
                              content_type=MEDIA_TYPE)
    assert resp.status == 200, str(resp)
    assert api_server.get(cm_path(namespace, "pb")).json()["data"] == {"a": "c"}

    bad = [
        (MAGIC + b"\x0a\x05ab", "unexpected EOF"),
        (b"\x00k8s", "expected prefix"),
        (body("v1", "Widget", b""), 'no kind "Widget" is registered'),
        (body("apps/v1", "Deployment", meta("wrong-kind")), "does not match"),
        (body("v1", "ConfigMap", m(f(1, 5))), "wrong wireType"),
    ]
    for data, message in bad:
        resp = api_server.post(cm_path(namespace), data, content_type=MEDIA_TYPE)
        assert resp.status == 400, str(resp)
        status = resp.json()
        assert (status["kind"], status["reason"], status["code"]) == ("Status", "BadRequest", 400)
        assert message in status["message"], status
    # patches are JSON (or YAML) only, as in Kubernetes
    resp = api_server.patch(cm_path(namespace, "pb"), cm, content_type=MEDIA_TYPE)
    assert resp.status == 415, str(resp)
    assert api_server.get(cm_path(namespace, "pb")).json()["data"] == {"a": "c"}


# ---- the real kubectl 1.35 (protobuf) against kubectl 1.20 (JSON) ------------------------

class Kubectl:
    def __init__(self, version: str, kubeconfig: Path, workdir: Path):
        self.binary = TOOLS / f"kubectl-{version}"
        if not (self.binary.is_file() and os.access(self.binary, os.X_OK)):
            reason = f"{self.binary} is missing: scripts/setup.sh fetches kubectl {version}"
            if os.environ.get("CI"):
                pytest.fail(reason)
            pytest.skip(reason)
        self.version = version
        self.kubeconfig = kubeconfig
        self.cache_dir = workdir / f"cache-{version}"
        home = workdir / f"home-{version}"
        home.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "HOME": str(home)}

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [str(self.binary), "--kubeconfig", str(self.kubeconfig), "--cache-dir", str(self.cache_dir), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=self.env,
                              stdin=subprocess.DEVNULL)

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = self(*args)
        assert result.returncode == 0, f"kubectl {self.version} {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result


def sent_body(log: str) -> tuple[str, bytes]:
    """From a ``-v=10`` log: the Content-Type and the bytes of the request with a body."""
    # -v=10 logs each request as a curl command line
    sent = re.findall(r'curl -v -X(?:POST|PUT)\b[^\n]*?-H "Content-Type: ([^"]+)"', log)
    content_type = sent[-1] if sent else ""
    dumps = re.findall(r'"Request Body" body=<\n(.*?)\n >', log, re.S)
    assert dumps, log[-3000:]
    data = bytearray()
    for line in dumps[-1].splitlines():
        hexdump = re.match(r"\s*[0-9a-f]{8}  ((?:[0-9a-f]{2} {1,2})+)", line)
        assert hexdump, f"not a hexdump line: {line!r}"
        data += bytes.fromhex(hexdump.group(1).replace(" ", ""))
    return content_type, bytes(data)


@pytest.fixture
def kubectls(api_server: ApiServer, tmp_path: Path) -> tuple[Kubectl, Kubectl]:
    return Kubectl("1.20", api_server.kubeconfig, tmp_path), Kubectl("1.35", api_server.kubeconfig, tmp_path)


@pytest.fixture
def second_namespace(api_server: ApiServer, namespace: str) -> Iterator[str]:
    name = f"{namespace[:40]}-json-{uuid.uuid4().hex[:12]}"
    resp = api_server.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    assert resp.status == 201, str(resp)
    yield name
    api_server.delete(f"/api/v1/namespaces/{name}")


def _drop_null_creation_timestamps(value: Any) -> None:
    # kubectl 1.20's Go writes a zero creationTimestamp as null; 1.35's omits it (omitzero).
    if isinstance(value, dict):
        if "creationTimestamp" in value and value["creationTimestamp"] is None:
            del value["creationTimestamp"]
        for v in value.values():
            _drop_null_creation_timestamps(v)
    elif isinstance(value, list):
        for v in value:
            _drop_null_creation_timestamps(v)


def normalized(obj: dict[str, Any]) -> dict[str, Any]:
    """What the server assigns differently to two creations of the same object."""
    _drop_null_creation_timestamps(obj)
    md = obj["metadata"]
    for key in ("uid", "resourceVersion", "creationTimestamp", "namespace", "managedFields", "name"):
        md.pop(key, None)
    md.get("labels", {}).pop("kubernetes.io/metadata.name", None)
    spec = obj.get("spec", {})
    for key in ("clusterIP", "clusterIPs"):
        spec.pop(key, None)
    for port in spec.get("ports") or []:
        port.pop("nodePort", None)
    if obj["kind"] == "Job":
        obj.pop("status", None)
    text = json.dumps(obj, sort_keys=True)
    if obj["kind"] == "Job":  # the controller-uid labels carry each Job's own uid
        text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "UID", text)
    result: dict[str, Any] = json.loads(text)
    return result


# (id, kubectl arguments after `create`, the object's path with {ns})
CREATE_COMMANDS = [
    ("namespace", ["namespace", "{name}"], "/api/v1/namespaces/{name}"),
    ("deployment", ["deployment", "web", "--image=skiff/app:1.0", "--replicas=2", "--port=8080"],
     "/apis/apps/v1/namespaces/{ns}/deployments/web"),
    ("deployment-zero-replicas", ["deployment", "idle", "--image=skiff/app:1.0", "--replicas=0"],
     "/apis/apps/v1/namespaces/{ns}/deployments/idle"),
    ("configmap", ["configmap", "cfg", "--from-literal=a=b", "--from-file={tmp}/greeting.txt",
                   "--from-file={tmp}/blob.bin"], "/api/v1/namespaces/{ns}/configmaps/cfg"),
    ("secret-generic", ["secret", "generic", "sec", "--from-literal=user=admin", "--from-file={tmp}/blob.bin"],
     "/api/v1/namespaces/{ns}/secrets/sec"),
    ("secret-tls", ["secret", "tls", "tls", "--cert={pki}/server.crt", "--key={pki}/server.key"],
     "/api/v1/namespaces/{ns}/secrets/tls"),
    ("service-clusterip", ["service", "clusterip", "web", "--tcp=80:8080", "--tcp=53:dns"],
     "/api/v1/namespaces/{ns}/services/web"),
    ("service-nodeport", ["service", "nodeport", "np", "--tcp=80:8080"], "/api/v1/namespaces/{ns}/services/np"),
    ("job", ["job", "batch", "--image=skiff/app:1.0", "--", "sh", "-c", "true"],
     "/apis/batch/v1/namespaces/{ns}/jobs/batch"),
    ("serviceaccount", ["serviceaccount", "robot"], "/api/v1/namespaces/{ns}/serviceaccounts/robot"),
    ("quota", ["quota", "q", "--hard=pods=3,cpu=1,memory=1Gi,services.nodeports=0"],
     "/api/v1/namespaces/{ns}/resourcequotas/q"),
]


@pytest.mark.parametrize(("args", "path"), [c[1:] for c in CREATE_COMMANDS], ids=[c[0] for c in CREATE_COMMANDS])
def test_kubectl_135_create_sends_protobuf_that_decodes_like_go(
        api_server: ApiServer, namespace: str, second_namespace: str, kubectls: tuple[Kubectl, Kubectl],
        tmp_path: Path, args: list[str], path: str) -> None:
    kubectl120, kubectl135 = kubectls
    (tmp_path / "greeting.txt").write_text("hello\n")
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)))
    suffix = uuid.uuid4().hex[:6]
    names = {namespace: f"pb-{suffix}", second_namespace: f"json-{suffix}"}

    def argv(ns: str, *flags: str) -> list[str]:  # flags first: `create job ... -- cmd` ends the line
        subst = {"tmp": str(tmp_path), "pki": str(api_server.data_dir / "pki"), "name": names[ns]}
        return ["create", "-n", ns, *flags, *(a.format(**subst) for a in args)]

    try:
        created = kubectl135.ok(*argv(namespace, "-v=10"))
        content_type, sent = sent_body(created.stderr)
        assert content_type == MEDIA_TYPE
        # Go's own JSON for the same object is what the decoded body must equal.
        printed = json.loads(kubectl135.ok(*argv(namespace, "--dry-run=client", "-o=json")).stdout)
        assert decode_body(sent) == printed

        kubectl120.ok(*argv(second_namespace))
        by_protobuf = api_server.get(path.format(ns=namespace, name=names[namespace])).json()
        by_json = api_server.get(path.format(ns=second_namespace, name=names[second_namespace])).json()
        assert normalized(by_protobuf) == normalized(by_json)
    finally:
        if args[0] == "namespace":  # the others go with the test's namespaces
            for name in names.values():
                api_server.delete(f"/api/v1/namespaces/{name}")


RICH_POD: dict[str, Any] = {
    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "rich", "labels": {"app": "rich"}},
    "spec": {
        "initContainers": [{"name": "init", "image": "skiff/app:1.0", "command": ["sh", "-c", "true"],
                            "resources": {}}],
        "containers": [{
            "name": "main", "image": "skiff/app:1.0", "args": ["httpd", "-f"], "workingDir": "/w",
            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
                      {"containerPort": 53, "protocol": "UDP"}],
            "env": [{"name": "A", "value": "1"},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory",
                                                                       "divisor": "1Mi"}}},
                    {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k", "optional": True}}}],
            "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "P_"}],
            "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "250m"}},
            "volumeMounts": [{"name": "data", "mountPath": "/data"},
                             {"name": "cfg", "mountPath": "/cfg", "readOnly": True, "subPath": "x"}],
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http",
                                          "httpHeaders": [{"name": "X", "value": "y"}]},
                              "initialDelaySeconds": 3, "periodSeconds": 5, "failureThreshold": 2},
            "readinessProbe": {"tcpSocket": {"port": 8080}, "timeoutSeconds": 2},
            "startupProbe": {"exec": {"command": ["true"]}, "successThreshold": 1},
            "lifecycle": {"preStop": {"sleep": {"seconds": 2}}},
            "securityContext": {"runAsUser": 1000, "runAsNonRoot": True, "readOnlyRootFilesystem": False,
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}},
        }],
        "volumes": [
            {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}},
            {"name": "cfg", "configMap": {"name": "cm", "defaultMode": 420,
                                          "items": [{"key": "a", "path": "a.txt", "mode": 256}]}},
            {"name": "sec", "secret": {"secretName": "s", "optional": False}},
            {"name": "hp", "hostPath": {"path": "/tmp", "type": "Directory"}},
            {"name": "proj", "projected": {"sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600, "audience": "api"}},
                {"downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}]}},
        ],
        "restartPolicy": "Always", "terminationGracePeriodSeconds": 5, "activeDeadlineSeconds": 600,
        "nodeSelector": {"disk": "ssd"}, "hostname": "h", "subdomain": "sd",
        "securityContext": {"fsGroup": 2000, "supplementalGroups": [3000, 4000], "runAsGroup": 0,
                            "sysctls": [{"name": "net.ipv4.ip_local_port_range", "value": "1024 65535"}]},
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "k", "operator": "In", "values": ["a", "b"]}]}]},
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 10, "preference": {"matchExpressions": [{"key": "z", "operator": "Exists"}]}}]},
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 5, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "rich"}},
                                                  "topologyKey": "kubernetes.io/hostname"}}]}},
        "tolerations": [{"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"},
                        {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}],
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway",
                                       "labelSelector": {"matchLabels": {"app": "rich"}}}],
        "hostAliases": [{"ip": "127.0.0.2", "hostnames": ["foo", "bar"]}],
        "dnsConfig": {"nameservers": ["1.1.1.1"], "searches": ["a.b"], "options": [{"name": "ndots", "value": "2"}]},
        "enableServiceLinks": False, "readinessGates": [{"conditionType": "x/y"}],
    },
}


def test_kubectl_135_debug_copy_sends_a_rich_pod_as_protobuf(api_server: ApiServer, namespace: str,
                                                              kubectls: tuple[Kubectl, Kubectl],
                                                              tmp_path: Path) -> None:
    """``kubectl debug --copy-to`` reads a Pod (JSON), and POSTs its Go struct plus a
    debug container as protobuf: volumes (inline sources), probes (inline handlers,
    IntOrString), quantities, affinity... must come back as they went in."""
    _, kubectl135 = kubectls
    manifest = tmp_path / "rich.json"
    manifest.write_text(json.dumps(RICH_POD))  # already in Go's canonical JSON shape
    kubectl135.ok("create", "-n", namespace, "-f", str(manifest))
    result = kubectl135.ok("debug", "-n", namespace, "rich", "--copy-to=rich-copy", "--image=skiff/app:1.0",
                           "--container=dbg", "--keep-liveness", "--keep-readiness", "--keep-startup", "-v=10")
    content_type, sent = sent_body(result.stderr)
    assert content_type == MEDIA_TYPE
    original = api_server.get(f"/api/v1/namespaces/{namespace}/pods/rich").json()["spec"]
    assert decode_body(sent)["spec"]["volumes"] == original["volumes"]  # with the server's defaults
    copy = api_server.get(f"/api/v1/namespaces/{namespace}/pods/rich-copy").json()["spec"]
    assert [c["name"] for c in copy["containers"]] == ["main", "dbg"]
    copy["containers"] = copy["containers"][:1]
    assert copy == original
