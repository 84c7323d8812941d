"""A lab node's size on its agent's command line, and how the pressure faults read it back."""

from __future__ import annotations

from pathlib import Path

from node_agent.lab.agents import LAB_EVICTION_FLAGS, NodeResources, agent_argv
from node_agent.lab.layout import LabLayout
from node_agent.lab.pressure import agent_flag


def test_a_lab_agent_reads_its_nodes_cgroup_with_short_eviction_timings(tmp_path: Path) -> None:
    layout = LabLayout("t1", tmp_path, 7)
    argv = agent_argv(layout, 2, "skiff", NodeResources())
    assert agent_flag(argv, "--cgroup-root") == "/skiff-t1-node-2"
    assert agent_flag(argv, "--memory") == "2Gi"
    assert agent_flag(argv, "--eviction-pressure-transition-period") == "10s"
    assert agent_flag(argv, "--eviction-monitoring-period") == "2s"
    assert all(flag in argv for flag in LAB_EVICTION_FLAGS)
    # on the host's disk: memory only, the host's disk is not the node's to clean
    assert agent_flag(argv, "--eviction-hard") == "memory.available<100Mi"


def test_a_node_with_a_disk_of_its_own_keeps_kubelets_thresholds_and_extra_flags_come_last(tmp_path: Path) -> None:
    layout = LabLayout("t1", tmp_path, 7)
    argv = agent_argv(layout, 1, "skiff", NodeResources(memory=None, disk="3Gi",
                                                        agent_args=("--eviction-hard=pid.available<10",)))
    assert "--memory" not in argv
    assert argv[-1] == "--eviction-hard=pid.available<10"
    assert agent_flag(argv, "--eviction-hard") == "pid.available<10"
    assert sum(a.startswith("--eviction-hard") for a in argv) == 1


def test_agent_flag_takes_the_last_of_either_spelling() -> None:
    assert agent_flag(["--memory", "1Gi", "--memory=2Gi"], "--memory") == "2Gi"
    assert agent_flag(["--memory=1Gi", "--memory", "3Gi"], "--memory") == "3Gi"
    assert agent_flag(["--memory"], "--memory") is None
