"""The arithmetic of Deployments (Kubernetes' pkg/controller/deployment/util): template
hashes, revisions and their annotations, maxSurge/maxUnavailable, which ReplicaSet is new,
proportional scaling, conditions and status. Everything here is pure.

One deliberate departure from Kubernetes, in the rolling-update counts: a ReplicaSet's
pods are counted as ``max(spec.replicas, status.replicas)`` and its available pods as
``min(status.availableReplicas, spec.replicas)`` (`pods_upper_bound`,
`available_lower_bound`). Kubernetes counts ``spec.replicas`` and
``status.availableReplicas``; right after a ReplicaSet is scaled down its status still
shows the pods being deleted, which lets a rollout briefly exceed maxSurge or undercut
maxUnavailable. These counts never trust a status that lags its spec in the unsafe
direction, so the bounds hold at every moment the pods can be observed.
"""

from __future__ import annotations

import copy
import json
import math
import struct
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from control_plane.controllers.taints import parse_time
from control_plane.controllers.workload_pods import meta

Obj = dict[str, Any]

# Labels and annotations (apps/v1 and deployment/util).
POD_TEMPLATE_HASH = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
ROLLBACK_TO = "deprecated.deployment.rollback.to"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
ANNOTATIONS_TO_SKIP = frozenset({LAST_APPLIED, REVISION, REVISION_HISTORY, DESIRED_REPLICAS, MAX_REPLICAS,
                                 ROLLBACK_TO})
MAX_REV_HISTORY_CHARS = 2000

# Condition types and reasons.
AVAILABLE = "Available"
PROGRESSING = "Progressing"
REPLICA_FAILURE = "ReplicaFailure"
MINIMUM_REPLICAS_AVAILABLE = "MinimumReplicasAvailable"
MINIMUM_REPLICAS_UNAVAILABLE = "MinimumReplicasUnavailable"
NEW_RS_REASON = "NewReplicaSetCreated"
FOUND_NEW_RS_REASON = "FoundNewReplicaSet"
RS_UPDATED_REASON = "ReplicaSetUpdated"
NEW_RS_AVAILABLE_REASON = "NewReplicaSetAvailable"
TIMED_OUT_REASON = "ProgressDeadlineExceeded"
FAILED_RS_CREATE_REASON = "ReplicaSetCreateError"
PAUSED_REASON = "DeploymentPaused"
RESUMED_REASON = "DeploymentResumed"

RECREATE = "Recreate"
ROLLING_UPDATE = "RollingUpdate"
MAX_INT32 = 2**31 - 1

_SAFE_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"


# ---- small accessors -------------------------------------------------------------------

def spec_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def status_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    status = obj.get("status")
    return status if isinstance(status, dict) else {}


def replicas(obj: Mapping[str, Any]) -> int:
    """spec.replicas (1 when unset, as the API server defaults it)."""
    value = spec_of(obj).get("replicas")
    return value if isinstance(value, int) else 1


def status_count(obj: Mapping[str, Any], name: str) -> int:
    value = status_of(obj).get(name)
    return value if isinstance(value, int) else 0


def annotations_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return meta(obj).get("annotations") or {}


def strategy_type(d: Mapping[str, Any]) -> str:
    return str((spec_of(d).get("strategy") or {}).get("type") or ROLLING_UPDATE)


def is_rolling_update(d: Mapping[str, Any]) -> bool:
    return strategy_type(d) == ROLLING_UPDATE


def creation_key(rs: Mapping[str, Any]) -> tuple[float, str]:
    """ReplicaSetsByCreationTimestamp: oldest first, names break ties."""
    return (parse_time(meta(rs).get("creationTimestamp")) or 0.0, str(meta(rs).get("name") or ""))


def by_creation(rss: Iterable[Obj]) -> list[Obj]:
    return sorted(rss, key=creation_key)


def by_size_older(rss: Iterable[Obj]) -> list[Obj]:
    """ReplicaSetsBySizeOlder: largest first, the older of equal sizes first."""
    return sorted(by_creation(rss), key=replicas, reverse=True)


def by_size_newer(rss: Iterable[Obj]) -> list[Obj]:
    """ReplicaSetsBySizeNewer: largest first, the newer of equal sizes first."""
    return sorted(sorted(rss, key=creation_key, reverse=True), key=replicas, reverse=True)


def by_revision(rss: Iterable[Obj]) -> list[Obj]:
    """ReplicaSetsByRevision: lowest revision first, then oldest."""
    return sorted(by_creation(rss), key=revision)


def active(rss: Iterable[Obj | None]) -> list[Obj]:
    """FilterActiveReplicaSets: those with spec.replicas > 0."""
    return [rs for rs in rss if rs is not None and replicas(rs) > 0]


def present(rss: Iterable[Obj | None]) -> list[Obj]:
    return [rs for rs in rss if rs is not None]


# ---- template hash ---------------------------------------------------------------------

def _fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for byte in data:
        h ^= byte
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def safe_encode_string(s: str) -> str:
    """rand.SafeEncodeString: digits mapped onto consonants and non-confusable digits."""
    return "".join(_SAFE_ALPHANUMS[ord(c) % len(_SAFE_ALPHANUMS)] for c in s)


def semantic(value: Any) -> Any:
    """The value with empty fields dropped (null, "", 0, false, [], {}), as decoding into
    Go structs makes them indistinguishable; templates are compared and hashed this way."""
    if isinstance(value, dict):
        out = {k: semantic(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, "", 0, False, [], {})}
    if isinstance(value, list):
        return [semantic(v) for v in value]
    return value


def compute_hash(template: Mapping[str, Any], collision_count: int | None) -> str:
    """controller.ComputeHash: FNV-1a (32 bit) of the template, then the collision count
    (8 bytes, little endian), rendered with SafeEncodeString. The template is printed as
    canonical JSON rather than Go's spew dump, so the value differs from Kubernetes' but
    is as stable: same template and count, same hash."""
    printed = json.dumps(semantic(dict(template)), sort_keys=True, separators=(",", ":"))
    data = printed.encode()
    if collision_count is not None:
        data += struct.pack("<Q", collision_count & 0xFFFFFFFF)
    return safe_encode_string(str(_fnv32a(data)))


def _without_hash(template: Mapping[str, Any]) -> Any:
    t = copy.deepcopy(dict(template))
    labels = (t.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(POD_TEMPLATE_HASH, None)
    return semantic(t)


def equal_ignore_hash(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """EqualIgnoreHash: the two pod templates are the same but for pod-template-hash."""
    return bool(_without_hash(a) == _without_hash(b))


def template_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    template = spec_of(obj).get("template")
    return template if isinstance(template, dict) else {}


def find_new_replica_set(d: Mapping[str, Any], rss: Sequence[Obj]) -> Obj | None:
    """The oldest ReplicaSet whose template matches the Deployment's."""
    for rs in by_creation(rss):
        if equal_ignore_hash(template_of(rs), template_of(d)):
            return rs
    return None


def find_old_replica_sets(d: Mapping[str, Any], rss: Sequence[Obj]) -> tuple[list[Obj], list[Obj]]:
    """(old ones with pods, all old ones)."""
    new = find_new_replica_set(d, rss)
    old = [rs for rs in rss if new is None or meta(rs).get("uid") != meta(new).get("uid")]
    return [rs for rs in old if replicas(rs) != 0], old


# ---- revisions and annotations ---------------------------------------------------------

def revision(obj: Mapping[str, Any]) -> int:
    try:
        return int(annotations_of(obj).get(REVISION) or 0)
    except ValueError:
        return 0


def max_revision(rss: Iterable[Obj]) -> int:
    return max((revision(rs) for rs in rss), default=0)


def _copy_deployment_annotations(d: Mapping[str, Any], rs: Obj) -> bool:
    target = meta(rs).setdefault("annotations", {})
    changed = False
    for key, value in annotations_of(d).items():
        if key in ANNOTATIONS_TO_SKIP or target.get(key) == value:
            continue
        target[key] = value
        changed = True
    return changed


def set_replicas_annotations(rs: Obj, desired: int, max_replicas: int) -> bool:
    ann = meta(rs).setdefault("annotations", {})
    changed = False
    for key, value in ((DESIRED_REPLICAS, str(desired)), (MAX_REPLICAS, str(max_replicas))):
        if ann.get(key) != value:
            ann[key] = value
            changed = True
    return changed


def replicas_annotations_need_update(rs: Mapping[str, Any], desired: int, max_replicas: int) -> bool:
    ann = annotations_of(rs)
    return ann.get(DESIRED_REPLICAS) != str(desired) or ann.get(MAX_REPLICAS) != str(max_replicas)


def set_new_replica_set_annotations(d: Mapping[str, Any], rs: Obj, new_revision: int, exists: bool) -> bool:
    """SetNewReplicaSetAnnotations: copy the Deployment's own annotations, raise the
    revision to ``new_revision`` (remembering the old one in revision-history: a rollback
    reuses an old ReplicaSet), and give a ReplicaSet about to be created its
    desired/max replicas."""
    changed = _copy_deployment_annotations(d, rs)
    ann = meta(rs).setdefault("annotations", {})
    old_text = ann.get(REVISION)
    try:
        old = int(old_text) if old_text else 0
    except ValueError:
        return changed
    if old < new_revision:
        ann[REVISION] = str(new_revision)
        changed = True
        if old_text:
            history = [r for r in (ann.get(REVISION_HISTORY) or "").split(",") if r]
            history.append(old_text)
            while history and len(",".join(history)) > MAX_REV_HISTORY_CHARS:
                history.pop(0)
            ann[REVISION_HISTORY] = ",".join(history)
    if not exists and set_replicas_annotations(rs, replicas(d), replicas(d) + max_surge(d)):
        changed = True
    return changed


def set_deployment_revision(d: Obj, value: str) -> bool:
    ann = meta(d).setdefault("annotations", {})
    if ann.get(REVISION) == value:
        return False
    ann[REVISION] = value
    return True


def desired_replicas_annotation(rs: Mapping[str, Any]) -> int | None:
    try:
        return int(annotations_of(rs)[DESIRED_REPLICAS])
    except (KeyError, ValueError):
        return None


def max_replicas_annotation(rs: Mapping[str, Any]) -> int | None:
    try:
        return int(annotations_of(rs)[MAX_REPLICAS])
    except (KeyError, ValueError):
        return None


# ---- maxSurge / maxUnavailable ---------------------------------------------------------

def scaled_value(value: int | str | None, total: int, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent: "25%" of ``total``, rounded up or down."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    text = value.strip()
    if text.endswith("%"):
        percent = int(text[:-1])
        exact = percent * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(text)


def resolve_fenceposts(max_surge_value: int | str | None, max_unavailable_value: int | str | None,
                       desired: int) -> tuple[int, int]:
    """(surge, unavailable) in pods; both rounding to 0 means unavailable 1."""
    surge = scaled_value(max_surge_value, desired, True)
    unavailable = scaled_value(max_unavailable_value, desired, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def _rolling(d: Mapping[str, Any]) -> dict[str, Any]:
    return (spec_of(d).get("strategy") or {}).get("rollingUpdate") or {}


def max_surge(d: Mapping[str, Any]) -> int:
    if not is_rolling_update(d):
        return 0
    rolling = _rolling(d)
    return resolve_fenceposts(rolling.get("maxSurge"), rolling.get("maxUnavailable"), replicas(d))[0]


def max_unavailable(d: Mapping[str, Any]) -> int:
    if not is_rolling_update(d) or replicas(d) == 0:
        return 0
    rolling = _rolling(d)
    unavailable = resolve_fenceposts(rolling.get("maxSurge"), rolling.get("maxUnavailable"), replicas(d))[1]
    return min(unavailable, replicas(d))


# ---- counting --------------------------------------------------------------------------

def replica_count(rss: Iterable[Obj | None]) -> int:
    """GetReplicaCountForReplicaSets: the sum of spec.replicas."""
    return sum(replicas(rs) for rs in present(rss))


def actual_count(rss: Iterable[Obj | None]) -> int:
    """GetActualReplicaCountForReplicaSets: the sum of status.replicas."""
    return sum(status_count(rs, "replicas") for rs in present(rss))


def ready_count(rss: Iterable[Obj | None]) -> int:
    return sum(status_count(rs, "readyReplicas") for rs in present(rss))


def available_count(rss: Iterable[Obj | None]) -> int:
    return sum(status_count(rs, "availableReplicas") for rs in present(rss))


def pods_upper_bound(rss: Iterable[Obj | None]) -> int:
    """How many pods the ReplicaSets may have right now (see the module docstring)."""
    return sum(max(replicas(rs), status_count(rs, "replicas")) for rs in present(rss))


def rs_available_lower_bound(rs: Mapping[str, Any]) -> int:
    return min(status_count(rs, "availableReplicas"), replicas(rs))


def available_lower_bound(rss: Iterable[Obj | None]) -> int:
    """How many available pods the ReplicaSets surely keep (see the module docstring)."""
    return sum(rs_available_lower_bound(rs) for rs in present(rss))


def new_rs_new_replicas(d: Mapping[str, Any], all_rss: Sequence[Obj | None], new_rs: Mapping[str, Any]) -> int:
    """NewRSNewReplicas: how far the new ReplicaSet may grow now."""
    if not is_rolling_update(d):
        return replicas(d)
    surge = scaled_value(_rolling(d).get("maxSurge"), replicas(d), True)
    current = pods_upper_bound(all_rss)
    max_total = replicas(d) + surge
    if current >= max_total:
        return replicas(new_rs)
    return replicas(new_rs) + min(max_total - current, replicas(d) - replicas(new_rs))


def is_saturated(d: Mapping[str, Any], rs: Mapping[str, Any] | None) -> bool:
    if rs is None:
        return False
    desired = desired_replicas_annotation(rs)
    return (desired is not None and replicas(rs) == replicas(d) and desired == replicas(d)
            and status_count(rs, "availableReplicas") == replicas(d))


def find_active_or_latest(new_rs: Obj | None, old_rss: Sequence[Obj]) -> Obj | None:
    """The one ReplicaSet with pods, or the newest if none has any; None if several have."""
    if new_rs is None and not old_rss:
        return None
    newest_first = sorted(old_rss, key=creation_key, reverse=True)
    live = active([*newest_first, new_rs])
    if not live:
        return new_rs if new_rs is not None else newest_first[0]
    return live[0] if len(live) == 1 else None


def _replica_set_fraction(rs: Mapping[str, Any], d: Mapping[str, Any]) -> int:
    if replicas(d) == 0:
        return -replicas(rs)
    deployment_max = replicas(d) + max_surge(d)
    before = max_replicas_annotation(rs)
    if not before:
        before = status_count(d, "replicas")  # an annotation edited away: use the last known size
        if not before:
            return 0
    return _round_half_away(replicas(rs) * deployment_max / before) - replicas(rs)


def _round_half_away(x: float) -> int:
    return int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))


def proportion(rs: Mapping[str, Any] | None, d: Mapping[str, Any], to_add: int, added: int) -> int:
    """GetProportion: this ReplicaSet's share of ``to_add`` (capped by what is left)."""
    if rs is None or replicas(rs) == 0 or to_add == 0 or to_add == added:
        return 0
    fraction = _replica_set_fraction(rs, d)
    allowed = to_add - added
    return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)


# ---- conditions ------------------------------------------------------------------------

def rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def new_condition(type_: str, status: str, reason: str, message: str, now: float) -> Obj:
    at = rfc3339(now)
    return {"type": type_, "status": status, "lastUpdateTime": at, "lastTransitionTime": at,
            "reason": reason, "message": message}


def get_condition(status: Mapping[str, Any], type_: str) -> Obj | None:
    for c in status.get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == type_:
            return c
    return None


def set_condition(status: Obj, condition: Obj) -> None:
    """SetDeploymentCondition: same status and reason -> nothing; same status -> keep the
    transition time; the condition moves to the end of the list."""
    current = get_condition(status, condition["type"])
    if current is not None and current.get("status") == condition["status"] \
            and current.get("reason") == condition["reason"]:
        return
    if current is not None and current.get("status") == condition["status"]:
        condition["lastTransitionTime"] = current.get("lastTransitionTime")
    remove_condition(status, condition["type"])
    status.setdefault("conditions", []).append(condition)


def remove_condition(status: Obj, type_: str) -> None:
    conditions = [c for c in status.get("conditions") or [] if not (isinstance(c, dict) and c.get("type") == type_)]
    if conditions:
        status["conditions"] = conditions
    else:
        status.pop("conditions", None)


def has_progress_deadline(d: Mapping[str, Any]) -> bool:
    deadline = spec_of(d).get("progressDeadlineSeconds")
    return isinstance(deadline, int) and deadline != MAX_INT32


def has_revision_history_limit(d: Mapping[str, Any]) -> bool:
    limit = spec_of(d).get("revisionHistoryLimit")
    return isinstance(limit, int) and limit != MAX_INT32


def deployment_complete(d: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    want = replicas(d)
    return ((status.get("updatedReplicas") or 0) == want and (status.get("replicas") or 0) == want
            and (status.get("availableReplicas") or 0) == want
            and (status.get("observedGeneration") or 0) >= (meta(d).get("generation") or 0))


def deployment_progressing(d: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    old = status_of(d)

    def get(s: Mapping[str, Any], name: str) -> int:
        return int(s.get(name) or 0)

    return (get(status, "updatedReplicas") > get(old, "updatedReplicas")
            or get(status, "replicas") - get(status, "updatedReplicas")
            < get(old, "replicas") - get(old, "updatedReplicas")
            or get(status, "readyReplicas") > get(old, "readyReplicas")
            or get(status, "availableReplicas") > get(old, "availableReplicas"))


def deployment_timed_out(d: Mapping[str, Any], status: Mapping[str, Any], now: float) -> bool:
    if not has_progress_deadline(d):
        return False
    condition = get_condition(status, PROGRESSING)
    if condition is None or condition.get("reason") == NEW_RS_AVAILABLE_REASON:
        return False
    if condition.get("reason") == TIMED_OUT_REASON:
        return True
    since = parse_time(condition.get("lastUpdateTime")) or 0.0
    return since + int(spec_of(d)["progressDeadlineSeconds"]) < now


def calculate_status(all_rss: Sequence[Obj | None], new_rs: Obj | None, d: Mapping[str, Any], now: float) -> Obj:
    """calculateStatus: counts from the ReplicaSets' statuses, and the Available condition."""
    available = available_count(all_rss)
    unavailable = max(replica_count(all_rss) - available, 0)
    old = status_of(d)
    status: Obj = {
        "observedGeneration": meta(d).get("generation") or 0,
        "replicas": actual_count(all_rss),
        "updatedReplicas": actual_count([new_rs]),
        "readyReplicas": ready_count(all_rss),
        "availableReplicas": available,
        "unavailableReplicas": unavailable,
    }
    if old.get("conditions"):
        status["conditions"] = copy.deepcopy(old["conditions"])
    if old.get("collisionCount") is not None:
        status["collisionCount"] = old["collisionCount"]
    if available >= replicas(d) - max_unavailable(d):
        set_condition(status, new_condition(AVAILABLE, "True", MINIMUM_REPLICAS_AVAILABLE,
                                            "Deployment has minimum availability.", now))
    else:
        set_condition(status, new_condition(AVAILABLE, "False", MINIMUM_REPLICAS_UNAVAILABLE,
                                            "Deployment does not have minimum availability.", now))
    return status


_OMIT_WHEN_ZERO = ("observedGeneration", "replicas", "updatedReplicas", "readyReplicas", "availableReplicas",
                   "unavailableReplicas", "conditions")


def wire_status(status: Mapping[str, Any]) -> Obj:
    """The status as Kubernetes serializes it: omitempty fields left out when zero."""
    return {k: v for k, v in status.items() if not (k in _OMIT_WHEN_ZERO and not v)}


def same_status(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return wire_status(a) == wire_status(b)
