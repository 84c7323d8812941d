"""``skiff proxy`` and the agent's proxy flags: IPVS refused with a clear message, --cleanup, durations."""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

import pytest

from node_agent.lab.controlplane import skiff_command
from node_agent.proxy.ipvs import ProxyModeError, check_proxy_mode, ipvs_unavailable_reason
from node_agent.proxy.settings import ProxySettings, parse_duration
from tests.proxy.netns import NEEDS_ROOT, NEEDS_TOOLS, NetnsFactory
from tests.proxy.test_iptables_netns import proxier_in, snapshot
from tests.proxy.test_render import SERVICES, SLICES

IPVS_MISSING = ipvs_unavailable_reason()


def skiff(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*skiff_command(), *args], capture_output=True, text=True, timeout=timeout, check=False)


def test_ipvs_is_refused_where_the_kernel_lacks_it(tmp_path: Path) -> None:
    with pytest.raises(ProxyModeError) as info:
        check_proxy_mode("ipvs", proc_path=tmp_path / "ip_vs")
    message = str(info.value)
    assert message.startswith("IPVS is not available in this kernel: ") or "no IPVS proxier" in message
    assert message.endswith("; use --proxy-mode iptables")


def test_ipvs_is_refused_where_the_kernel_has_it_too(tmp_path: Path) -> None:
    (tmp_path / "ip_vs").write_text("IP Virtual Server version 1.2.1\n")
    with pytest.raises(ProxyModeError, match="this kernel has IPVS, but Skiff has no IPVS proxier yet; "
                                             "use --proxy-mode iptables"):
        check_proxy_mode("ipvs", proc_path=tmp_path / "ip_vs")
    check_proxy_mode("iptables", proc_path=tmp_path / "ip_vs")


@pytest.mark.skipif(IPVS_MISSING is not None, reason=f"IPVS is not available in this kernel: {IPVS_MISSING}")
def test_ipvs_mode_where_the_kernel_has_it() -> None:
    with pytest.raises(ProxyModeError, match="no IPVS proxier yet"):
        check_proxy_mode("ipvs")


@pytest.mark.parametrize("program", [["proxy", "--kubeconfig", "/nonexistent"],
                                     ["agent", "--kubeconfig", "/nonexistent", "--node-name", "n1"]])
def test_the_commands_refuse_ipvs_mode_before_doing_anything(program: list[str]) -> None:
    proc = skiff(*program, "--proxy-mode", "ipvs")
    assert proc.returncode != 0
    assert "use --proxy-mode iptables" in proc.stderr, proc.stderr
    if IPVS_MISSING is not None:
        assert "IPVS is not available in this kernel: " in proc.stderr


def test_skiff_proxy_has_kube_proxys_flags() -> None:
    proc = skiff("proxy", "--help")
    assert proc.returncode == 0
    for flag in ("--kubeconfig", "--hostname-override", "--proxy-mode", "--cluster-cidr",
                 "--iptables-min-sync-period", "--iptables-sync-period", "--cleanup"):
        assert flag in proc.stdout
    assert "--disable-proxy" in skiff("agent", "--help").stdout


@NEEDS_ROOT
@NEEDS_TOOLS
def test_cleanup_removes_the_rules_an_earlier_proxy_left(netns: NetnsFactory) -> None:
    ns = netns.make("k")
    proxier_in(ns).sync_blocking(snapshot(SERVICES, SLICES), full=True)
    assert "KUBE-SERVICES" in ns.save()
    proc = subprocess.run(ns.argv(*skiff_command(), "proxy", "--cleanup"), capture_output=True, text=True,
                          timeout=60, check=False, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "KUBE-" not in ns.save()


@pytest.mark.parametrize(("text", "seconds"), [("1s", 1.0), ("500ms", 0.5), ("1m30s", 90.0), ("2", 2.0),
                                               ("0.25", 0.25), ("1h", 3600.0)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "1x", "s", "1s2", "-1s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


def test_settings_are_validated() -> None:
    ProxySettings(node_name="n").validate()
    for bad in (ProxySettings(node_name=""), ProxySettings(node_name="n", mode="userspace"),
                ProxySettings(node_name="n", cluster_cidr="fd00::/64"),
                ProxySettings(node_name="n", min_sync_period=60, sync_period=30)):
        with pytest.raises(ValueError):
            bad.validate()
