"""One scheduling decision: the filter chain, the score chain, and the verdict.

`Framework.schedule(pod)` returns the chosen node's name or raises `FitError`, whose
message is kube-scheduler's FailedScheduling text:

    0/3 nodes are available: 1 Insufficient memory, 2 node(s) had untolerated taint(s).
    preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod,
    2 Preemption is not helpful for scheduling.

(one line; reasons counted per node and sorted as strings, as FitError.Error does).
The chain, Nomad-style: PreFilter (node names from matchFields) -> static filters (cached
per pod template, see `StaticFilterCache`) -> dynamic filters -> scores -> best node,
ties broken at random. `placement` holds the two ways of walking the nodes.
"""

from __future__ import annotations

import random
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from control_plane.scheduler import placement
from control_plane.scheduler.cache import Cache, NodeInfo
from control_plane.scheduler.filters import (
    ERR_AFFINITY_CONFLICT,
    ERR_PREFILTER_NODE_AFFINITY,
    dynamic_reasons,
    insufficient_resources,
    static_reason,
)
from control_plane.scheduler.podinfo import PodInfo
from control_plane.scheduler.settings import SchedulerSettings

NO_NODES_AVAILABLE = "no nodes available to schedule pods"
PREEMPTION_NOT_HELPFUL = "Preemption is not helpful for scheduling"
NO_PREEMPTION_VICTIMS = "No preemption victims found for incoming pod"
PREEMPTION_NEVER = "not eligible due to preemptionPolicy=Never."
MIN_FEASIBLE_NODES_TO_FIND = 100
MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND = 5
STATIC_CACHE_ENTRIES = 512
CLASS_SCORE_MEMO = 65536


def num_feasible_nodes_to_find(percentage: int, num_nodes: int) -> int:
    """How many feasible nodes to find before scoring (kube-scheduler's numFeasibleNodesToFind)."""
    if num_nodes < MIN_FEASIBLE_NODES_TO_FIND:
        return num_nodes
    if percentage <= 0:
        percentage = max(50 - num_nodes // 125, MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND)
    return max(num_nodes * min(percentage, 100) // 100, MIN_FEASIBLE_NODES_TO_FIND)


def nodes_available_message(num_nodes: int, reasons: Mapping[str, int], prefilter_msg: str = "",
                            postfilter_msg: str = "") -> str:
    """FitError.Error(): "0/N nodes are available: <prefilter>. <counted reasons>. <postfilter>"."""
    msg = f"0/{num_nodes} nodes are available:"
    if prefilter_msg:
        msg += f" {prefilter_msg}."
    else:
        counted = sorted(f"{n} {reason}" for reason, n in reasons.items() if n)
        if counted:
            msg += " " + ", ".join(counted) + "."
    if postfilter_msg:
        msg += " " + postfilter_msg
    return msg


@dataclass
class Diagnosis:
    """Why no node fits: each reason with the number of nodes giving it, and how many
    nodes failed in ways preemption could not (or could) resolve."""

    num_nodes: int
    reasons: Counter[str] = field(default_factory=Counter)
    unresolvable: int = 0
    resolvable: int = 0
    prefilter_msg: str = ""

    def preemption_message(self, preempt_never: bool) -> str:
        """DefaultPreemption's PostFilter message. Skiff does not preempt, so nodes where
        preemption might have helped report that no victims were found."""
        if preempt_never:
            return f"preemption: {PREEMPTION_NEVER}"
        counts = {PREEMPTION_NOT_HELPFUL: self.unresolvable, NO_PREEMPTION_VICTIMS: self.resolvable}
        return "preemption: " + nodes_available_message(self.num_nodes, counts)


class FitError(Exception):
    """The pod fits no node; ``str(error)`` is the FailedScheduling message."""

    def __init__(self, message: str, diagnosis: Diagnosis | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.diagnosis = diagnosis

    @classmethod
    def of(cls, pod: PodInfo, diagnosis: Diagnosis) -> FitError:
        return cls(nodes_available_message(diagnosis.num_nodes, diagnosis.reasons, diagnosis.prefilter_msg,
                                           diagnosis.preemption_message(pod.preempt_never)), diagnosis)


@dataclass(slots=True)
class StaticResult:
    """The static filters' verdict for one pod template over every node: the nodes that
    fail, each with its reason, and those reasons counted."""

    pod: PodInfo
    failed: dict[str, str] = field(default_factory=dict)
    reason_counts: Counter[str] = field(default_factory=Counter)

    def set(self, name: str, reason: str | None) -> None:
        old = self.failed.pop(name, None)
        if old is not None:
            self.reason_counts[old] -= 1
            if not self.reason_counts[old]:
                del self.reason_counts[old]
        if reason is not None:
            self.failed[name] = reason
            self.reason_counts[reason] += 1


class StaticFilterCache:
    """Static filter results per pod signature (most recently used kept). A node change
    re-evaluates that one node for every cached signature."""

    def __init__(self, cache: Cache, name_taints: bool = False, max_entries: int = STATIC_CACHE_ENTRIES) -> None:
        self.cache = cache
        self.name_taints = name_taints
        self.max_entries = max_entries
        self._entries: OrderedDict[str, StaticResult] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, pod: PodInfo) -> StaticResult:
        sig = pod.static_signature
        assert sig is not None, "pods narrowed by PreFilter are filtered directly"
        result = self._entries.get(sig)
        if result is not None:
            self._entries.move_to_end(sig)
            return result
        result = StaticResult(pod)
        for ni in self.cache.node_list:
            result.set(ni.name, static_reason(pod, ni, self.name_taints))
        self._entries[sig] = result
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return result

    def node_changed(self, ni: NodeInfo) -> None:
        for result in self._entries.values():
            result.set(ni.name, static_reason(result.pod, ni, self.name_taints))

    def node_removed(self, name: str) -> None:
        for result in self._entries.values():
            result.set(name, None)


@dataclass
class FrameworkStats:
    indexed: int = 0  # decisions over the class index (every node considered)
    scanned: int = 0  # decisions walking nodes one by one (sampled as kube-scheduler does)
    unschedulable: int = 0


class Framework:
    def __init__(self, cache: Cache, settings: SchedulerSettings | None = None,
                 rng: random.Random | None = None) -> None:
        self.cache = cache
        self.settings = settings or SchedulerSettings()
        self.rng = rng or random.Random()
        self.static = StaticFilterCache(cache, self.settings.name_taints_in_messages)
        self.next_start = 0  # where the next scan starts, so every node gets its turn
        self.stats = FrameworkStats()
        self._class_scores: dict[tuple[object, ...], int] = {}

    def _memo(self) -> dict[tuple[object, ...], int]:
        """Scores by (resource class, pod shape): they depend on nothing else."""
        if len(self._class_scores) > CLASS_SCORE_MEMO:
            self._class_scores.clear()
        return self._class_scores

    # ---- cluster changes -------------------------------------------------------------

    def node_changed(self, ni: NodeInfo) -> None:
        self.static.node_changed(ni)

    def node_removed(self, name: str) -> None:
        self.static.node_removed(name)

    # ---- one decision ----------------------------------------------------------------

    def schedule(self, pod: PodInfo) -> str:
        num_nodes = self.cache.node_count()
        if num_nodes == 0:
            raise FitError(NO_NODES_AVAILABLE)
        if pod.prefilter_nodes is not None:
            return self._schedule_narrowed(pod, pod.prefilter_nodes, num_nodes)
        static = self.static.get(pod)
        if placement.indexable(pod, self.cache, static.failed):
            self.stats.indexed += 1
            node = placement.place_indexed(pod, self.cache, static.failed, self.settings, self.rng, self._memo())
            if node is None:
                raise self._fit_error(pod, self._diagnose_by_class(pod, static, num_nodes))
            return node
        self.stats.scanned += 1
        node = self._scan(pod, self.cache.node_list, static.failed, num_nodes)
        if node is None:
            raise self._fit_error(pod, self._diagnose(pod, self.cache.node_list, static.failed, num_nodes))
        return node

    def _schedule_narrowed(self, pod: PodInfo, names: frozenset[str], num_nodes: int) -> str:
        if not names:
            diag = Diagnosis(num_nodes, unresolvable=num_nodes, prefilter_msg=ERR_AFFINITY_CONFLICT)
            raise self._fit_error(pod, diag)
        candidates = [ni for ni in (self.cache.get(n) for n in sorted(names)) if ni is not None]
        self.stats.scanned += 1
        node = self._scan(pod, candidates, None, num_nodes) if candidates else None
        if node is None:
            diag = self._diagnose(pod, candidates, None, num_nodes)
            absent = num_nodes - len(candidates)
            if absent:
                diag.reasons[ERR_PREFILTER_NODE_AFFINITY] += absent
                diag.unresolvable += absent
            raise self._fit_error(pod, diag)
        return node

    def _scan(self, pod: PodInfo, candidates: list[NodeInfo], failed: Mapping[str, str] | None,
              num_nodes: int) -> str | None:
        want = num_feasible_nodes_to_find(self.settings.percentage_of_nodes_to_score, len(candidates))
        feasible, processed = placement.find_feasible(pod, candidates, failed, want, self.next_start,
                                                      self.settings.name_taints_in_messages)
        self.next_start = (self.next_start + processed) % num_nodes
        if not feasible:
            return None
        if len(feasible) == 1:
            return feasible[0].name
        return placement.select_best(pod, feasible, self.cache, self.settings, self.rng, self._memo())

    def _fit_error(self, pod: PodInfo, diag: Diagnosis) -> FitError:
        self.stats.unschedulable += 1
        return FitError.of(pod, diag)

    # ---- why nothing fits ------------------------------------------------------------

    def _diagnose(self, pod: PodInfo, nodes: Iterable[NodeInfo], failed: Mapping[str, str] | None,
                  num_nodes: int) -> Diagnosis:
        diag = Diagnosis(num_nodes)
        for ni in nodes:
            reason = failed.get(ni.name) if failed is not None else \
                static_reason(pod, ni, self.settings.name_taints_in_messages)
            if reason:
                diag.reasons[reason] += 1
                diag.unresolvable += 1
                continue
            reasons = dynamic_reasons(pod, ni)
            if reasons:
                diag.reasons.update(reasons)
                diag.resolvable += 1
        return diag

    def _diagnose_by_class(self, pod: PodInfo, static: StaticResult, num_nodes: int) -> Diagnosis:
        """The same counts as `_diagnose`, a resource class at a time (pods without host
        ports: every node of a class fails the dynamic filters the same way)."""
        diag = Diagnosis(num_nodes, reasons=Counter(static.reason_counts), unresolvable=len(static.failed))
        excluded_by_class: Counter[object] = Counter()
        for name in static.failed:
            ni = self.cache.nodes.get(name)
            if ni is not None and ni.class_key is not None:
                excluded_by_class[ni.class_key] += 1
        for cls in self.cache.iter_classes():
            n = len(cls.members) - excluded_by_class[cls.key]
            if n <= 0:
                continue
            acpu, amem, aeph, apods, rcpu, rmem, reph, _, _, count, ascal, rscal = cls.key
            reasons = insufficient_resources(pod, acpu, amem, aeph, apods, dict(ascal), rcpu, rmem, reph,
                                             dict(rscal), count)
            if reasons:
                for reason in reasons:
                    diag.reasons[reason] += n
                diag.resolvable += n
        return diag
