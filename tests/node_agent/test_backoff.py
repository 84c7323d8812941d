"""CrashLoopBackOff windows on a fake clock."""

from __future__ import annotations

import pytest

from node_agent.backoff import CrashBackoff, go_duration


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


KEY = ("uid-1", "app")


def crash_loop(backoff: CrashBackoff, clock: Clock, runs: int, run_for: float = 1.0) -> list[float]:
    """Let the container run ``run_for`` seconds and exit, ``runs`` times, restarting as
    soon as the back-off allows; returns how long each restart had to wait."""
    waits = []
    for _ in range(runs):
        clock.now += run_for
        finished = clock.now
        wait = backoff.in_backoff(KEY, finished)
        waits.append(wait)
        clock.now += wait
        assert backoff.in_backoff(KEY, finished) == 0.0
        backoff.record_start(KEY, finished)
    return waits


def test_first_restart_is_immediate_then_doubles_to_the_cap() -> None:
    clock = Clock()
    backoff = CrashBackoff(clock=clock)
    waits = crash_loop(backoff, clock, 9, run_for=1.0)
    # Each window is measured from the exit, so the container's own run time is not counted.
    assert waits == [0.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0, 300.0]
    assert backoff.next_delay(KEY) == 300.0


def test_remaining_counts_down() -> None:
    clock = Clock()
    backoff = CrashBackoff(clock=clock)
    assert backoff.in_backoff(KEY, clock.now) == 0.0
    assert backoff.next_delay(KEY) == 0.0
    assert backoff.record_start(KEY, clock.now) == 10.0
    clock.now += 2
    finished = clock.now
    assert backoff.in_backoff(KEY, finished) == 10.0
    clock.now += 4
    assert backoff.in_backoff(KEY, finished) == 6.0
    assert backoff.in_backoff(KEY) == 10.0  # "finished now"
    clock.now += 6
    assert backoff.in_backoff(KEY, finished) == 0.0


def test_reset_after_running_long_enough() -> None:
    clock = Clock()
    backoff = CrashBackoff(clock=clock)
    crash_loop(backoff, clock, 5)
    assert backoff.next_delay(KEY) == 160.0
    # Ran 601 s: stable, starts over without waiting.
    clock.now += 601
    assert backoff.in_backoff(KEY, clock.now) == 0.0
    assert backoff.record_start(KEY, clock.now) == 10.0
    # Exactly 600 s is not enough (kubelet: strictly more than twice the cap).
    for _ in range(3):
        clock.now += 1
        backoff.record_start(KEY, clock.now)
    assert backoff.next_delay(KEY) == 80.0
    clock.now += 600
    assert backoff.in_backoff(KEY, clock.now) == 80.0


def test_keys_are_independent_and_forgotten() -> None:
    clock = Clock()
    backoff = CrashBackoff(clock=clock)
    backoff.record_start(("uid-1", "a"), clock.now)
    backoff.record_start(("uid-1", "a"), clock.now)
    backoff.record_start(("uid-2", "a"), clock.now)
    assert backoff.next_delay(("uid-1", "a")) == 20.0
    assert backoff.next_delay(("uid-1", "b")) == 0.0
    backoff.forget_pod("uid-1")
    assert backoff.next_delay(("uid-1", "a")) == 0.0
    assert backoff.next_delay(("uid-2", "a")) == 10.0
    backoff.forget(("uid-2", "a"))
    assert backoff.next_delay(("uid-2", "a")) == 0.0


def test_gc() -> None:
    clock = Clock()
    backoff = CrashBackoff(clock=clock)
    backoff.record_start(KEY, clock.now)
    clock.now += 600
    backoff.gc()
    assert backoff.next_delay(KEY) == 10.0
    clock.now += 1
    backoff.gc()
    assert backoff.next_delay(KEY) == 0.0


def test_custom_parameters() -> None:
    clock = Clock()
    backoff = CrashBackoff(initial=1, maximum=4, reset_after=8, clock=clock)
    assert crash_loop(backoff, clock, 6) == [0.0, 1.0, 2.0, 4.0, 4.0, 4.0]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (10, "10s"), (80, "1m20s"), (160, "2m40s"), (300, "5m0s"), (3600, "1h0m0s"), (1.5, "1.5s")],
)
def test_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text
