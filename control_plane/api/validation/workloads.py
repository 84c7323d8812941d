"""Deployments, ReplicaSets, DaemonSets (pkg/apis/apps/validation) and Jobs (pkg/apis/batch/validation)."""

from __future__ import annotations

from control_plane.api.validation.equality import semantic_equal
from control_plane.api.validation.field import (
    INT64,
    ErrorList,
    Obj,
    child,
    get_dict,
    get_str,
    int_or_string,
    key,
    opt_bool,
    opt_dict,
    opt_int,
    opt_str,
    scratch,
)
from control_plane.api.validation.meta import FIELD_IMMUTABLE, template_labels
from control_plane.api.validation.names import is_valid_percent, validate_nonnegative
from control_plane.api.validation.pods import validate_pod_template
from control_plane.api.validation.selectors import Selector, validate_label_selector

DEPLOYMENT_STRATEGIES = ("Recreate", "RollingUpdate")
DAEMONSET_STRATEGIES = ("RollingUpdate", "OnDelete")
JOB_RESTART_POLICIES = ("OnFailure", "Never")
COMPLETION_MODES = ("NonIndexed", "Indexed")
POD_REPLACEMENT_POLICIES = ("TerminatingOrFailed", "Failed")
# Labels the job controller's generated selector relies on (batch/v1 types.go).
JOB_CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
LEGACY_JOB_CONTROLLER_UID_LABEL = "controller-uid"
LEGACY_JOB_NAME_LABEL = "job-name"

SPEC = "spec"
TEMPLATE_LABELS_PATH = "spec.template.metadata.labels"
SELECTOR_MISMATCH = "`selector` does not match template `labels`"


# --- shared pieces ----------------------------------------------------------------------------

def _selector(errs: ErrorList, spec: Obj, kind: str) -> Selector | None:
    """Validate spec.selector; None when absent (Kubernetes then matches nothing)."""
    sel = opt_dict(errs, spec, "selector", SPEC)
    path = child(SPEC, "selector")
    if sel is None:
        errs.required(path)
        return None
    parsed = validate_label_selector(errs, sel, path)
    if parsed.empty:
        errs.invalid(path, sel, f"empty selector is invalid for {kind}")
    return parsed


def _check_template_match(errs: ErrorList, selector: Selector | None, template: Obj) -> None:
    labels = template_labels(template)
    if selector is None or (selector.valid and not selector.empty and not selector.matches(labels)):
        errs.invalid(TEMPLATE_LABELS_PATH, labels, SELECTOR_MISMATCH)


def _template_restart_always(errs: ErrorList, template: Obj, owner: str) -> None:
    spec = get_dict(scratch(), template, SPEC, "")
    policy = get_str(scratch(), spec, "restartPolicy", "")
    if policy != "Always":
        errs.not_supported("spec.template.spec.restartPolicy", policy, ("Always",))
    if spec.get("activeDeadlineSeconds") is not None:
        errs.forbidden("spec.template.spec.activeDeadlineSeconds", f"activeDeadlineSeconds in {owner} is not Supported")


def _int_or_percent(errs: ErrorList, obj: Obj, name: str, path: str) -> int | str | None:
    """ValidatePositiveIntOrPercent; returns the value for the cross-field rules."""
    value = int_or_string(errs, obj, name, path)
    field_path = child(path, name)
    if isinstance(value, str):
        errs.invalid_each(field_path, value, is_valid_percent(value))
    else:
        validate_nonnegative(errs, value, field_path)
    return value


def _amount(value: int | str | None) -> int:
    """getIntOrPercentValue: "25%" -> 25, 3 -> 3, anything else -> 0."""
    if isinstance(value, str):
        return int(value[:-1]) if not is_valid_percent(value) else 0
    return value or 0


def _not_more_than_100_percent(errs: ErrorList, value: int | str | None, path: str) -> None:
    if isinstance(value, str) and not is_valid_percent(value) and int(value[:-1]) > 100:
        errs.invalid(path, value, "must not be greater than 100%")


def _selector_immutable(errs: ErrorList, obj: Obj, old: Obj) -> None:
    quiet = scratch()
    new_sel = get_dict(quiet, obj, SPEC, "").get("selector")
    old_sel = get_dict(quiet, old, SPEC, "").get("selector")
    if not semantic_equal(new_sel, old_sel):
        errs.invalid(child(SPEC, "selector"), new_sel, FIELD_IMMUTABLE)


def _replica_counts(errs: ErrorList, spec: Obj) -> None:
    for name in ("replicas", "minReadySeconds"):
        validate_nonnegative(errs, opt_int(errs, spec, name, SPEC), child(SPEC, name))


# --- Deployment, ReplicaSet, DaemonSet ---------------------------------------------------------

def _validate_deployment_strategy(errs: ErrorList, spec: Obj) -> None:
    strategy = get_dict(errs, spec, "strategy", SPEC)
    path = child(SPEC, "strategy")
    type_ = get_str(errs, strategy, "type", path)
    rolling = opt_dict(errs, strategy, "rollingUpdate", path)
    rolling_path = child(path, "rollingUpdate")
    if type_ == "Recreate":
        if rolling is not None:
            errs.forbidden(rolling_path, "may not be specified when strategy `type` is 'Recreate'")
    elif type_ == "RollingUpdate":
        if rolling is None:
            errs.required(rolling_path, "this should be defaulted and never be nil")
            return
        unavailable = _int_or_percent(errs, rolling, "maxUnavailable", rolling_path)
        surge = _int_or_percent(errs, rolling, "maxSurge", rolling_path)
        if _amount(unavailable) == 0 and _amount(surge) == 0:
            errs.invalid(child(rolling_path, "maxUnavailable"), unavailable or 0, "may not be 0 when `maxSurge` is 0")
        _not_more_than_100_percent(errs, unavailable, child(rolling_path, "maxUnavailable"))
    else:
        errs.not_supported(child(path, "type"), type_, DEPLOYMENT_STRATEGIES)


def validate_deployment(errs: ErrorList, obj: Obj) -> None:
    spec = get_dict(errs, obj, SPEC, "")
    _replica_counts(errs, spec)
    selector = _selector(errs, spec, "deployment")
    template = validate_pod_template(errs, spec, SPEC)
    _check_template_match(errs, selector, template)
    _template_restart_always(errs, template, "ReplicaSet")
    _validate_deployment_strategy(errs, spec)
    history = opt_int(errs, spec, "revisionHistoryLimit", SPEC)
    validate_nonnegative(errs, history, child(SPEC, "revisionHistoryLimit"))
    opt_bool(errs, spec, "paused", SPEC)
    deadline = opt_int(errs, spec, "progressDeadlineSeconds", SPEC)
    if deadline is not None:
        validate_nonnegative(errs, deadline, child(SPEC, "progressDeadlineSeconds"))
        if deadline <= (opt_int(scratch(), spec, "minReadySeconds", SPEC) or 0):
            errs.invalid(child(SPEC, "progressDeadlineSeconds"), deadline, "must be greater than minReadySeconds")


def validate_replica_set(errs: ErrorList, obj: Obj) -> None:
    spec = get_dict(errs, obj, SPEC, "")
    _replica_counts(errs, spec)
    # Kubernetes says "deployment" here too.
    selector = _selector(errs, spec, "deployment")
    template = validate_pod_template(errs, spec, SPEC)
    _check_template_match(errs, selector, template)
    _template_restart_always(errs, template, "ReplicaSet")


def _validate_daemon_set_strategy(errs: ErrorList, spec: Obj) -> None:
    strategy = get_dict(errs, spec, "updateStrategy", SPEC)
    path = child(SPEC, "updateStrategy")
    type_ = get_str(errs, strategy, "type", path)
    rolling = opt_dict(errs, strategy, "rollingUpdate", path)
    rolling_path = child(path, "rollingUpdate")
    if type_ == "OnDelete":
        return
    if type_ != "RollingUpdate":
        errs.not_supported(child(path, "type"), type_, DAEMONSET_STRATEGIES)
        return
    if rolling is None:
        errs.required(rolling_path)
        return
    unavailable = _int_or_percent(errs, rolling, "maxUnavailable", rolling_path)
    surge = _int_or_percent(errs, rolling, "maxSurge", rolling_path)
    _not_more_than_100_percent(errs, unavailable, child(rolling_path, "maxUnavailable"))
    _not_more_than_100_percent(errs, surge, child(rolling_path, "maxSurge"))
    has_unavailable, has_surge = _amount(unavailable) != 0, _amount(surge) != 0
    if has_unavailable and has_surge:
        errs.invalid(child(rolling_path, "maxSurge"), surge, "may not be set when maxUnavailable is non-zero")
    elif not has_unavailable and not has_surge:
        errs.required(child(rolling_path, "maxUnavailable"), "cannot be 0 when maxSurge is 0")


def validate_daemon_set(errs: ErrorList, obj: Obj) -> None:
    spec = get_dict(errs, obj, SPEC, "")
    selector = _selector(errs, spec, "daemonset")
    template = validate_pod_template(errs, spec, SPEC)
    _check_template_match(errs, selector, template)
    _template_restart_always(errs, template, "DaemonSet")
    for name in ("minReadySeconds", "templateGeneration", "revisionHistoryLimit"):
        validate_nonnegative(errs, opt_int(errs, spec, name, SPEC, INT64), child(SPEC, name))
    _validate_daemon_set_strategy(errs, spec)


def validate_apps_update(errs: ErrorList, obj: Obj, old: Obj) -> None:
    """apps/v1 selectors are immutable (the Deployment, ReplicaSet and DaemonSet strategies)."""
    _selector_immutable(errs, obj, old)


# --- Job -----------------------------------------------------------------------------------

def _has_label(errs: ErrorList, labels: dict[str, str], label: str, expected: str) -> None:
    """ValidateHasLabel on the pod template."""
    path = key(TEMPLATE_LABELS_PATH, label)
    if label not in labels:
        errs.required(path, f"must be '{expected}'")
    elif labels[label] != expected:
        errs.invalid(path, labels, f"must be '{expected}'")


def _validate_generated_selector(errs: ErrorList, obj: Obj, selector: Selector | None, template: Obj) -> None:
    """With manualSelector unset, the selector and template labels must be the generated ones."""
    spec = get_dict(scratch(), obj, SPEC, "")
    if opt_bool(scratch(), spec, "manualSelector", SPEC) or selector is None:
        return
    meta = get_dict(scratch(), obj, "metadata", "")
    uid = get_str(scratch(), meta, "uid", "metadata")
    name = get_str(scratch(), meta, "name", "metadata")
    if not uid:
        errs.required("metadata.uid")
    labels = template_labels(template)
    expected = {JOB_CONTROLLER_UID_LABEL: uid, JOB_NAME_LABEL: name}
    for label, value in (*expected.items(), (LEGACY_JOB_CONTROLLER_UID_LABEL, uid), (LEGACY_JOB_NAME_LABEL, name)):
        _has_label(errs, labels, label, value)
    if selector.valid and not selector.matches(expected):
        errs.invalid(child(SPEC, "selector"), spec.get("selector"), "`selector` not auto-generated")


def validate_job(errs: ErrorList, obj: Obj) -> None:
    spec = get_dict(errs, obj, SPEC, "")
    for name in ("parallelism", "completions", "backoffLimit", "ttlSecondsAfterFinished", "backoffLimitPerIndex",
                 "maxFailedIndexes"):
        validate_nonnegative(errs, opt_int(errs, spec, name, SPEC), child(SPEC, name))
    validate_nonnegative(errs, opt_int(errs, spec, "activeDeadlineSeconds", SPEC, INT64),
                         child(SPEC, "activeDeadlineSeconds"))
    for flag in ("suspend", "manualSelector"):
        opt_bool(errs, spec, flag, SPEC)
    mode = opt_str(errs, spec, "completionMode", SPEC)
    if mode is not None:
        errs.enum(mode, child(SPEC, "completionMode"), COMPLETION_MODES)
        if mode == "Indexed" and spec.get("completions") is None:
            errs.required(child(SPEC, "completions"), "when completion mode is Indexed")
    replacement = opt_str(errs, spec, "podReplacementPolicy", SPEC)
    if replacement is not None:
        errs.enum(replacement, child(SPEC, "podReplacementPolicy"), POD_REPLACEMENT_POLICIES)
    get_dict(errs, spec, "podFailurePolicy", SPEC)
    selector: Selector | None = None
    raw_selector = opt_dict(errs, spec, "selector", SPEC)
    if raw_selector is None:
        errs.required(child(SPEC, "selector"))
    else:
        selector = validate_label_selector(errs, raw_selector, child(SPEC, "selector"))
    template = validate_pod_template(errs, spec, SPEC)
    if selector is not None and selector.valid and not selector.matches(template_labels(template)):
        errs.invalid(TEMPLATE_LABELS_PATH, template_labels(template), SELECTOR_MISMATCH)
    _validate_generated_selector(errs, obj, selector, template)
    policy = get_str(scratch(), get_dict(scratch(), template, SPEC, ""), "restartPolicy", "")
    if policy not in JOB_RESTART_POLICIES:
        errs.not_supported("spec.template.spec.restartPolicy", policy, JOB_RESTART_POLICIES)


def validate_job_update(errs: ErrorList, obj: Obj, old: Obj) -> None:
    quiet = scratch()
    spec, old_spec = get_dict(quiet, obj, SPEC, ""), get_dict(quiet, old, SPEC, "")
    for name in ("selector", "template", "completions", "completionMode"):
        if not semantic_equal(spec.get(name), old_spec.get(name)):
            errs.invalid(child(SPEC, name), spec.get(name), FIELD_IMMUTABLE)


# --- status -----------------------------------------------------------------------------------

STATUS_COUNTERS = {
    "Deployment": ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas", "unavailableReplicas",
                   "collisionCount"),
    "ReplicaSet": ("replicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas"),
    "DaemonSet": ("currentNumberScheduled", "numberMisscheduled", "desiredNumberScheduled", "numberReady",
                  "updatedNumberScheduled", "numberAvailable", "numberUnavailable", "collisionCount"),
    "Job": ("active", "succeeded", "failed", "ready", "terminating"),
}


def validate_workload_status(errs: ErrorList, obj: Obj, kind: str) -> None:
    """Counters are non-negative; ready/available never exceed replicas (ValidateDeploymentStatus...)."""
    status = get_dict(errs, obj, "status", "")
    counts = {name: opt_int(errs, status, name, "status") for name in STATUS_COUNTERS.get(kind, ())}
    for name, value in counts.items():
        validate_nonnegative(errs, value, child("status", name))
    validate_nonnegative(errs, opt_int(errs, status, "observedGeneration", "status", INT64),
                         "status.observedGeneration")
    if "replicas" not in counts:
        return
    replicas = counts["replicas"] or 0
    for name in ("updatedReplicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas"):
        value = counts.get(name)
        if value is not None and value > replicas:
            errs.invalid(child("status", name), value, "cannot be greater than status.replicas")
    available, ready = counts.get("availableReplicas") or 0, counts.get("readyReplicas") or 0
    if available > ready:
        errs.invalid("status.availableReplicas", available, "cannot be greater than readyReplicas")
