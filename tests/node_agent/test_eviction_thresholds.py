"""Eviction flags as kubelet parses them: defaults, soft thresholds and their grace periods,
minimum reclaim, percentages (float32), the errors, and the agent's flags onto its settings."""

from __future__ import annotations

import argparse

import pytest

from node_agent.eviction.flags import add_eviction_flags, eviction_settings
from node_agent.eviction.thresholds import (
    Threshold,
    ThresholdValue,
    parse_duration,
    parse_settings,
    parse_threshold_config,
)
from node_agent.settings import AgentSettings, EvictionSettings

MI = 1 << 20


def test_kubelets_default_hard_thresholds() -> None:
    assert parse_settings(EvictionSettings()) == [
        Threshold("memory.available", ThresholdValue(quantity=100 * MI)),
        Threshold("nodefs.available", ThresholdValue(percentage=0.10000000149011612)),
        Threshold("imagefs.available", ThresholdValue(percentage=0.15000000596046448)),
        Threshold("nodefs.inodesFree", ThresholdValue(percentage=0.05000000074505806)),
    ]
    assert EvictionSettings().pressure_transition_period == 300.0


def test_soft_thresholds_with_grace_periods_and_minimum_reclaim() -> None:
    thresholds = parse_threshold_config("memory.available<100Mi", "memory.available<1.5Gi,pid.available<200",
                                        "memory.available=1m30s,pid.available=10s",
                                        "memory.available=200Mi,nodefs.available=5%")
    assert thresholds == [
        Threshold("memory.available", ThresholdValue(quantity=100 * MI), 0.0, ThresholdValue(quantity=200 * MI)),
        Threshold("memory.available", ThresholdValue(quantity=1536 * MI), 90.0, ThresholdValue(quantity=200 * MI)),
        Threshold("pid.available", ThresholdValue(quantity=200, format="DecimalSI"), 10.0),
    ]
    assert [t.hard for t in thresholds] == [True, False, False]


def test_zero_and_hundred_percent_switch_a_threshold_off() -> None:
    assert parse_threshold_config("memory.available<0%,nodefs.available<100%,imagefs.available<1%") == [
        Threshold("imagefs.available", ThresholdValue(percentage=0.009999999776482582))]
    assert parse_threshold_config("") == []


def test_a_quantity_prints_back_as_written_and_a_percentage_as_bytes() -> None:
    t = parse_threshold_config("memory.available<1500Mi")[0]
    assert t.value.describe(2 << 30) == "1500Mi"
    t = parse_threshold_config("memory.available<1.5Gi")[0]
    assert t.value.describe(2 << 30) == "1536Mi"
    t = parse_threshold_config("nodefs.available<50%")[0]
    assert (t.quantity(4 << 30), t.value.describe(4 << 30)) == (2 << 30, "2Gi")


@pytest.mark.parametrize(("args", "error"), [
    (("memory.free<1Gi",), "--eviction-hard: unsupported eviction signal memory.free"),
    (("memory.available=1Gi",), "--eviction-hard: expected SIGNAL<VALUE, got 'memory.available=1Gi'"),
    (("memory.available<0",), "--eviction-hard: eviction threshold memory.available must be positive: 0"),
    (("memory.available<-1Mi",), "must be positive"),
    (("memory.available<lots",), "--eviction-hard: invalid quantity 'lots'"),
    (("nodefs.available<150%",), "eviction percentage threshold nodefs.available must be <= 100%: 150%"),
    (("nodefs.available<-5%",), "must be >= 0%"),
    (("", "memory.available<1Gi"), "grace period must be specified for the soft eviction threshold memory.available"),
    (("", "memory.available<1Gi", "memory.available=soon"), "--eviction-soft-grace-period: invalid duration 'soon'"),
    (("", "memory.available<1Gi", "memory.available=-1s"), "must be a positive value"),
    (("", "", "", "memory.available=-1Mi"), "negative eviction minimum reclaim specified for memory.available"),
    (("", "", "", "nodefs.available=0%"), "eviction percentage minimum reclaim nodefs.available must be positive"),
])
def test_bad_flags_are_refused_naming_the_flag(args: tuple[str, ...], error: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_threshold_config(*args)
    assert error in str(exc.value)


@pytest.mark.parametrize(("text", "seconds"), [("10s", 10.0), ("5m0s", 300.0), ("1m30s", 90.0), ("1h", 3600.0),
                                                ("500ms", 0.5), ("0", 0.0), ("1.5s", 1.5)])
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def parse_agent_flags(*argv: str) -> EvictionSettings:
    p = argparse.ArgumentParser()
    add_eviction_flags(p)
    return eviction_settings(p.parse_args(list(argv)))


def test_agent_flags_map_onto_the_settings_and_are_validated_with_them() -> None:
    assert parse_agent_flags() == EvictionSettings()
    settings = parse_agent_flags("--eviction-hard", "memory.available<1Gi", "--eviction-soft",
                                 "memory.available<1.2Gi", "--eviction-soft-grace-period", "memory.available=20s",
                                 "--eviction-pressure-transition-period", "10s", "--eviction-max-pod-grace-period",
                                 "5", "--eviction-monitoring-period", "2s", "--no-kernel-memcg-notification",
                                 "--cgroup-root", "/skiff-lab-node-1")
    assert settings == EvictionSettings(hard="memory.available<1Gi", soft="memory.available<1.2Gi",
                                        soft_grace_period="memory.available=20s", pressure_transition_period=10.0,
                                        max_pod_grace_period=5, monitoring_period=2.0,
                                        kernel_memcg_notification=False, cgroup_root="/skiff-lab-node-1")
    bad = AgentSettings(node_name="n", kubeconfig=__file__,  # type: ignore[arg-type]
                        eviction=EvictionSettings(soft="memory.available<1Gi"))
    with pytest.raises(ValueError, match="grace period must be specified"):
        bad.validate()
