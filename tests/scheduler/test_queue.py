"""The scheduling queue on a fake clock: order, backoff, parking and moving back."""

from __future__ import annotations

from typing import Any

from sched_objects import make_pod

from control_plane.scheduler.podinfo import PodInfo
from control_plane.scheduler.queue import ACTIVE, BACKOFF, IN_FLIGHT, UNSCHEDULABLE, SchedulingQueue


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def info(name: str, **kw: Any) -> PodInfo:
    return PodInfo.of(make_pod(name, **kw))


def popped_names(q: SchedulingQueue) -> list[str]:
    out = []
    while (qp := q.pop_nowait()) is not None:
        out.append(qp.info.name)
    return out


def test_higher_priority_first_then_oldest() -> None:
    clock = Clock()
    q = SchedulingQueue(clock=clock)
    for name, prio in (("a", 0), ("b", 10), ("c", 0), ("d", 10)):
        q.add(info(name, priority=prio))
        clock.now += 1
    assert popped_names(q) == ["b", "d", "a", "c"]


def test_backoff_doubles_from_one_second_up_to_ten() -> None:
    q = SchedulingQueue()
    assert [q.backoff_duration(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_error_waits_out_the_backoff() -> None:
    clock = Clock()
    q = SchedulingQueue(clock=clock)
    q.add(info("a"))
    qp = q.pop_nowait()
    assert qp is not None and qp.attempts == 1
    q.error(qp)
    assert q.get("default/a") is qp and qp.where == BACKOFF
    assert q.flush() == clock.now + 1 and q.pop_nowait() is None
    clock.now += 1
    q.flush()
    qp2 = q.pop_nowait()
    assert qp2 is qp and qp.attempts == 2
    q.error(qp)
    clock.now += 1.5
    q.flush()
    assert q.pop_nowait() is None  # the second backoff is 2 s
    clock.now += 0.5
    q.flush()
    assert q.pop_nowait() is qp


def test_unschedulable_pods_wait_for_a_cluster_event() -> None:
    clock = Clock()
    q = SchedulingQueue(clock=clock)
    q.add(info("a"))
    qp = q.pop_nowait()
    assert qp is not None
    q.unschedulable(qp)
    assert qp.where == UNSCHEDULABLE
    clock.now += 60
    q.flush()
    assert q.pop_nowait() is None  # no event: it stays parked
    assert q.move_all("NodeAdd") == 1
    assert qp.where == ACTIVE and q.pop_nowait() is qp


def test_moved_pod_still_backing_off_goes_through_backoff() -> None:
    clock = Clock()
    q = SchedulingQueue(clock=clock)
    q.add(info("a"))
    qp = q.pop_nowait()
    assert qp is not None
    q.unschedulable(qp)
    clock.now += 0.5
    q.move_all("NodeAdd")
    assert qp.where == BACKOFF and q.pop_nowait() is None
    clock.now += 0.5
    q.flush()
    assert q.pop_nowait() is qp


def test_unschedulable_pods_come_back_after_five_minutes() -> None:
    clock = Clock()
    q = SchedulingQueue(clock=clock)
    q.add(info("a"))
    qp = q.pop_nowait()
    assert qp is not None
    q.unschedulable(qp)
    clock.now += 299
    q.flush()
    assert qp.where == UNSCHEDULABLE
    clock.now += 1
    q.flush()
    assert qp.where == ACTIVE


def test_event_while_in_flight_keeps_the_pod_out_of_the_parking() -> None:
    clock = Clock()
    q = SchedulingQueue(clock=clock)
    q.add(info("a"))
    qp = q.pop_nowait()
    assert qp is not None and qp.where == IN_FLIGHT
    q.move_all("NodeAdd")  # a node arrived while the pod was being decided
    q.unschedulable(qp)
    assert qp.where == BACKOFF


def test_spec_update_moves_a_parked_pod_status_update_does_not() -> None:
    clock = Clock()
    q = SchedulingQueue(clock=clock)
    pod = make_pod("a")
    q.add(PodInfo.of(pod))
    qp = q.pop_nowait()
    assert qp is not None
    q.unschedulable(qp)
    clock.now += 5
    q.update(PodInfo.of({**pod, "status": {"conditions": [{"type": "PodScheduled", "status": "False"}]}}))
    assert qp.where == UNSCHEDULABLE
    q.update(PodInfo.of({**pod, "spec": {**pod["spec"], "tolerations": [{"operator": "Exists"}]}}))
    assert qp.where == ACTIVE and qp.info.tolerations == [{"operator": "Exists"}]


def test_delete_and_done_remove_pods() -> None:
    q = SchedulingQueue()
    q.add(info("a"))
    q.add(info("b"))
    q.delete("default/a")
    qp = q.pop_nowait()
    assert qp is not None and qp.info.name == "b" and q.pop_nowait() is None
    q.done(qp.key)
    assert "default/b" not in q
    q.add(info("c"))
    qc = q.pop_nowait()
    assert qc is not None
    q.delete("default/c")  # deleted while in flight: a failure does not bring it back
    q.unschedulable(qc)
    assert "default/c" not in q and q.counts() == {ACTIVE: 0, BACKOFF: 0, UNSCHEDULABLE: 0, IN_FLIGHT: 0}
