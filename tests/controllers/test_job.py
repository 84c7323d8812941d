"""The Job controller against a real API server running only it; the test plays the
kubelet by patching pod status (Succeeded/Failed with a terminated container)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from hollow import (
    controller_server,
    event_reasons,
    finish_pod,
    fresh_namespace,
    get_or_none,
    list_items,
    ok,
    pod_template,
)

from control_plane.controllers.job import format_indexes, parse_indexes

if TYPE_CHECKING:
    from tests.conftest import ApiServer

TRACKING = "batch.kubernetes.io/job-tracking"


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with controller_server(request.config, tmp_path_factory.mktemp("job-server"), "job") as srv:
        yield srv


@pytest.fixture
def ns(server: ApiServer, request: pytest.FixtureRequest) -> str:
    return fresh_namespace(server, request)


def jobs_path(ns: str) -> str:
    return f"/apis/batch/v1/namespaces/{ns}/jobs"


def create_job(server: ApiServer, ns: str, name: str, **spec: Any) -> dict[str, Any]:
    body = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"template": pod_template({"app": name}, restart_policy="Never"), **spec}}
    return ok(server.post(jobs_path(ns), body))


def job(server: ApiServer, ns: str, name: str) -> dict[str, Any]:
    return ok(server.get(f"{jobs_path(ns)}/{name}"))


def pods(server: ApiServer, ns: str, name: str, active_only: bool = True) -> list[dict[str, Any]]:
    found = list_items(server, f"/api/v1/namespaces/{ns}/pods?labelSelector=batch.kubernetes.io/job-name={name}")
    if active_only:
        found = [p for p in found if p["status"].get("phase") not in ("Succeeded", "Failed")
                 and not p["metadata"].get("deletionTimestamp")]
    return sorted(found, key=lambda p: p["metadata"]["name"])


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in obj.get("status", {}).get("conditions") or [] if c["type"] == type_), None)


def test_job_completes(server: ApiServer, ns: str, wait_until: Callable[..., Any]) -> None:
    created = create_job(server, ns, "pi", completions=3, parallelism=2)
    first = wait_until(lambda: len(pods(server, ns, "pi")) == 2 and pods(server, ns, "pi"), 10, "two pods (parallelism 2)")
    pod = first[0]
    assert pod["metadata"]["name"].startswith("pi-")
    assert pod["metadata"]["finalizers"] == [TRACKING]
    assert pod["metadata"]["ownerReferences"] == [{"apiVersion": "batch/v1", "kind": "Job", "name": "pi",
                                                   "uid": created["metadata"]["uid"], "controller": True,
                                                   "blockOwnerDeletion": True}]
    assert pod["metadata"]["labels"]["batch.kubernetes.io/controller-uid"] == created["metadata"]["uid"]
    wait_until(lambda: job(server, ns, "pi")["status"].get("active") == 2, 10, "status.active 2")
    assert job(server, ns, "pi")["status"]["startTime"]

    finish_pod(server, ns, first[0]["metadata"]["name"], 0)
    wait_until(lambda: job(server, ns, "pi")["status"].get("succeeded") == 1 and len(pods(server, ns, "pi")) == 2, 10,
               "one success counted and a third pod started")
    for p in pods(server, ns, "pi"):
        finish_pod(server, ns, p["metadata"]["name"], 0)
    done = wait_until(lambda: condition(job(server, ns, "pi"), "Complete") and job(server, ns, "pi"), 10, "Complete")
    status = done["status"]
    assert status["succeeded"] == 3 and "active" not in status and not status.get("failed")
    assert status["completionTime"] and status["uncountedTerminatedPods"] == {} and status["ready"] == 0
    assert condition(done, "Complete")["status"] == "True"  # type: ignore[index]
    finished = pods(server, ns, "pi", active_only=False)
    assert len(finished) == 3 and all(not p["metadata"].get("finalizers") for p in finished), \
        "counted pods let go of the tracking finalizer"
    wait_until(lambda: "Completed" in event_reasons(server, ns, "pi"), 10, "the Completed event")
    assert event_reasons(server, ns, "pi").count("SuccessfulCreate") == 3


def test_failing_job_stops_at_backoff_limit(server: ApiServer, ns: str, wait_until: Callable[..., Any]) -> None:
    create_job(server, ns, "flaky", backoffLimit=1)
    (first,) = wait_until(lambda: pods(server, ns, "flaky"), 10, "the first pod")
    finish_pod(server, ns, first["metadata"]["name"], 1)
    wait_until(lambda: job(server, ns, "flaky")["status"].get("failed") == 1, 10, "the failure counted")
    failed_at = time.monotonic()
    (second,) = wait_until(lambda: pods(server, ns, "flaky"), 20, "a replacement pod after the 10s backoff")
    assert time.monotonic() - failed_at > 5, "the replacement waits for the pod failure backoff"
    finish_pod(server, ns, second["metadata"]["name"], 1)
    failed = wait_until(lambda: condition(job(server, ns, "flaky"), "Failed") and job(server, ns, "flaky"), 10,
                        "condition Failed")
    cond = condition(failed, "Failed")
    assert cond is not None and (cond["reason"], cond["message"]) == (
        "BackoffLimitExceeded", "Job has reached the specified backoff limit")
    assert failed["status"]["failed"] == 2 and not failed["status"].get("succeeded")
    assert "completionTime" not in failed["status"]
    time.sleep(0.5)
    assert pods(server, ns, "flaky") == [], "no pod is started after the limit"
    wait_until(lambda: "BackoffLimitExceeded" in event_reasons(server, ns, "flaky"), 10, "the event")


def test_active_deadline_fails_the_job_and_deletes_its_pods(server: ApiServer, ns: str,
                                                            wait_until: Callable[..., Any]) -> None:
    create_job(server, ns, "slow", activeDeadlineSeconds=2, parallelism=2, completions=4)
    wait_until(lambda: len(pods(server, ns, "slow")) == 2, 10, "two running pods")
    failed = wait_until(lambda: condition(job(server, ns, "slow"), "Failed") and job(server, ns, "slow"), 15,
                        "the deadline to fail the Job")
    assert condition(failed, "Failed")["reason"] == "DeadlineExceeded"  # type: ignore[index]
    assert failed["status"]["failed"] == 2, "pods stopped by the deadline count as failed"
    wait_until(lambda: pods(server, ns, "slow", active_only=False) == [], 10, "the active pods to be deleted")


def test_ttl_after_finished_deletes_the_job(server: ApiServer, ns: str, wait_until: Callable[..., Any]) -> None:
    create_job(server, ns, "short", ttlSecondsAfterFinished=1)
    (pod,) = wait_until(lambda: pods(server, ns, "short"), 10, "the pod")
    finish_pod(server, ns, pod["metadata"]["name"], 0)
    # The Job may be gone before a poll sees it Complete (a 1 s TTL on a busy machine):
    # its Completed event outlives it and shows it finished before it was deleted.
    wait_until(lambda: get_or_none(server, f"{jobs_path(ns)}/short") is None, 15, "the Job to be deleted after its TTL")
    events = server.get(f"/api/v1/namespaces/{ns}/events?fieldSelector=involvedObject.name=short").json()["items"]
    assert "Completed" in {e["reason"] for e in events}, events


def test_indexed_job(server: ApiServer, ns: str, wait_until: Callable[..., Any]) -> None:
    create_job(server, ns, "idx", completionMode="Indexed", completions=3, parallelism=2)
    running = wait_until(lambda: len(pods(server, ns, "idx")) == 2 and pods(server, ns, "idx"), 10, "two indexed pods")
    by_index = {p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]: p for p in running}
    assert sorted(by_index) == ["0", "1"]
    zero = by_index["0"]
    assert zero["metadata"]["name"].startswith("idx-0-")
    assert zero["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"] == "0"
    assert zero["spec"]["hostname"] == "idx-0"
    assert {"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
        "apiVersion": "v1", "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}} \
        in zero["spec"]["containers"][0]["env"] or zero["spec"]["containers"][0]["env"][-1]["name"] == \
        "JOB_COMPLETION_INDEX"
    finish_pod(server, ns, by_index["1"]["metadata"]["name"], 0)
    wait_until(lambda: job(server, ns, "idx")["status"].get("completedIndexes") == "1", 10, "index 1 completed")
    wait_until(lambda: sorted(p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"]
                              for p in pods(server, ns, "idx")) == ["0", "2"], 10, "index 2 started")
    for p in pods(server, ns, "idx"):
        finish_pod(server, ns, p["metadata"]["name"], 0)
    done = wait_until(lambda: condition(job(server, ns, "idx"), "Complete") and job(server, ns, "idx"), 10, "Complete")
    assert done["status"]["completedIndexes"] == "0-2" and done["status"]["succeeded"] == 3


def test_suspend_and_resume(server: ApiServer, ns: str, wait_until: Callable[..., Any]) -> None:
    create_job(server, ns, "later", suspend=True)
    suspended = wait_until(lambda: condition(job(server, ns, "later"), "Suspended") and job(server, ns, "later"), 10,
                           "condition Suspended")
    assert condition(suspended, "Suspended")["reason"] == "JobSuspended"  # type: ignore[index]
    assert pods(server, ns, "later") == [] and "startTime" not in suspended["status"]
    ok(server.patch(f"{jobs_path(ns)}/later", {"spec": {"suspend": False}}))
    wait_until(lambda: len(pods(server, ns, "later")) == 1, 10, "a pod once resumed")

    def resumed_status() -> dict[str, Any] | None:
        # the pod can show before the status write that records the resume: wait for it
        j = job(server, ns, "later")
        cond = condition(j, "Suspended")
        return j if cond is not None and (cond["status"], cond["reason"]) == ("False", "JobResumed") else None

    resumed = wait_until(resumed_status, 10, "condition Suspended=False reason JobResumed")
    assert resumed["status"]["startTime"]
    ok(server.patch(f"{jobs_path(ns)}/later", {"spec": {"suspend": True}}))
    wait_until(lambda: pods(server, ns, "later", active_only=False) == [], 10, "the pod deleted when suspended again")
    assert not job(server, ns, "later")["status"].get("failed"), "pods removed by suspension are not failures"


def test_completed_indexes_format() -> None:
    assert format_indexes([5, 1, 3, 4, 0]) == "0-1,3-5"
    assert parse_indexes("0-1,3-5,9", 6) == {0, 1, 3, 4, 5}
    assert parse_indexes("x,2", 3) == {2}
    assert format_indexes([]) == ""
