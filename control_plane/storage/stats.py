"""Counters a store exposes for tests, benchmarks and /metrics."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StoreStats:
    writes: int  # successful writes, i.e. revisions made
    commits: int  # transactions committed; for SQLite each is one fsync
    largest_batch: int  # most operations committed together
    watchers: int  # watches currently subscribed
    watchers_cut_off: int  # watches ended with WatcherTooSlowError
