"""``skiff lab chaos`` without a lab: its arguments, how NODE is resolved against the lab's
state, and the faults that find nothing to do (they touch nothing on the host).

The lab here is only a state file in a temporary directory, with a name no real lab has;
its nodes have no namespace, no link and no process.
"""

from __future__ import annotations

import argparse
import os
import secrets
import string
from pathlib import Path

import pytest

from node_agent.lab import chaos
from node_agent.lab.layout import LabError
from node_agent.lab.main import main
from node_agent.lab.state import LabState, NodeState, save_state

FAULT_NAMES = ["kill-node", "restore-node", "partition", "heal", "stop-agent", "start-agent", "restart-docker",
               "memory-pressure", "disk-pressure", "relieve"]
WAITING = {"restore-node", "heal", "start-agent"}
SIZED = {"memory-pressure", "disk-pressure"}


def _name() -> str:
    return "c" + "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5))


def fake_lab(state_dir: Path, name: str, nodes: int = 3) -> LabState:
    state = LabState(name=name, state_dir=str(state_dir), subnet_index=200)
    layout = state.layout
    for i in range(1, nodes + 1):
        state.nodes.append(NodeState(index=i, name=layout.node_name(i), netns=layout.netns(i),
                                     ip=str(layout.node_ip(i)), pod_cidr=str(layout.pod_cidr(i)),
                                     docker_host=layout.docker_host(i)))
    state_dir.mkdir(parents=True)
    save_state(state)
    return state


@pytest.fixture
def lab(tmp_path: Path) -> LabState:
    return fake_lab(tmp_path / "lab", _name())


def run(lab: LabState, *args: str) -> int:
    return main(["chaos", *args, "--name", lab.name, "--state-dir", lab.state_dir])


# -- the parser --------------------------------------------------------------------------------


def test_every_fault_is_a_subcommand_and_only_the_undoing_ones_wait() -> None:
    assert [f.name for f in chaos.FAULTS] == FAULT_NAMES
    assert {f.name for f in chaos.FAULTS if f.waits} == WAITING
    assert {f.name for f in chaos.FAULTS if f.sized} == SIZED


def test_chaos_alone_prints_its_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chaos"]) == 1
    err = capsys.readouterr().err
    for fault in FAULT_NAMES:
        assert fault in err


@pytest.mark.parametrize("argv", [
    ["chaos", "kill-node"],  # no NODE
    ["chaos", "kill-node", "1", "2"],  # two of them
    ["chaos", "memory-pressure", "1", "--wait", "5"],  # nothing to wait for
    ["chaos", "relieve", "1", "--size", "1Gi"],  # nothing to size
    ["chaos", "kill-node", "1", "--name", "Bad_Name"],
    ["chaos", "kill-node", "1", "--wait", "5"],  # nothing to wait for
    ["chaos", "heal", "1", "--wait", "soon"],
])
def test_malformed_arguments_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: skiff") and "error:" in err, err


# -- NODE against the lab's state ------------------------------------------------------------------


def test_a_node_is_named_by_its_node_name_or_its_number(lab: LabState) -> None:
    assert chaos.resolve_node(lab, f"{lab.name}-node-2").index == 2
    assert chaos.resolve_node(lab, "3").name == f"{lab.name}-node-3"


@pytest.mark.parametrize("spec", ["0", "4", "-1", "node-2", "02", "x-node-2", ""])
def test_an_unknown_node_names_the_lab_and_its_nodes(lab: LabState, spec: str) -> None:
    with pytest.raises(LabError) as exc:
        chaos.resolve_node(lab, spec)
    nodes = ", ".join(f"{lab.name}-node-{i}" for i in (1, 2, 3))
    assert str(exc.value) == f"lab {lab.name} has no node {spec!r}; its nodes: {nodes} (or their numbers 1-3)"


@pytest.mark.parametrize("fault", FAULT_NAMES)
def test_every_fault_refuses_an_unknown_node_and_changes_nothing(lab: LabState, fault: str,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    before = (Path(lab.state_dir) / "state.json").read_bytes()
    assert run(lab, fault, "other-node-1") == 1
    captured = capsys.readouterr()
    assert f"has no node 'other-node-1'; its nodes: {lab.name}-node-1" in " ".join(captured.err.split())
    assert captured.out == ""
    assert (Path(lab.state_dir) / "state.json").read_bytes() == before


def test_a_lab_without_state_does_not_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name = _name()
    assert main(["chaos", "kill-node", "1", "--name", name, "--state-dir", str(tmp_path / "none")]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert f"lab {name} does not exist" in err
    assert f"`skiff lab up --name {name}` creates it" in err


def test_hints_repeat_the_lab_arguments_the_user_gave(lab: LabState) -> None:
    args = argparse.Namespace(name=lab.name, state_dir=Path("/srv/labs/x"))
    target = chaos.Target(lab, lab.nodes[1], chaos.lab_args(args))
    assert target.command("heal") == f"skiff lab chaos heal {lab.name}-node-2 --name {lab.name} --state-dir /srv/labs/x"
    bare = chaos.lab_args(argparse.Namespace(name=lab.name, state_dir=None))
    assert bare == f"--name {lab.name}"


def test_a_nodes_cgroups_are_its_own_not_those_of_a_node_with_a_longer_number(
        lab: LabState, monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = f"skiff-{lab.name}-node-1"
    found = [Path(f"/sys/fs/cgroup/{c}/{prefix}{suffix}") for c in ("cpu", "memory") for suffix in ("", "0", "1")]
    monkeypatch.setattr(chaos.cgroups, "lab_cgroups", lambda p: [cg for cg in found if cg.name.startswith(p)])
    assert chaos.node_cgroups(lab.layout, 1) == [Path(f"/sys/fs/cgroup/cpu/{prefix}"),
                                                 Path(f"/sys/fs/cgroup/memory/{prefix}")]


# -- faults with nothing to do (idempotence), on a lab that runs nothing -----------------------------

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="skiff lab chaos needs root")


@root_only
def test_kill_node_of_a_node_that_runs_nothing_says_so(lab: LabState, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(lab, "kill-node", "2") == 0
    out = capsys.readouterr().out
    assert f"{lab.name}-node-2 is already down: none of its processes runs" in out
    assert f"undo: skiff lab chaos restore-node {lab.name}-node-2 --name {lab.name} --state-dir {lab.state_dir}" \
        in " ".join(out.split())


@root_only
def test_stop_agent_of_a_node_without_one_says_so(lab: LabState, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(lab, "stop-agent", "1") == 0
    assert f"the agent of {lab.name}-node-1 is not running" in capsys.readouterr().out


@root_only
@pytest.mark.parametrize("fault", ["partition", "heal"])
def test_a_node_without_its_link_cannot_be_partitioned_or_healed(lab: LabState, fault: str,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert run(lab, fault, "1") == 1
    err = " ".join(capsys.readouterr().err.split())
    assert f"link skiff-{lab.name}-1 does not exist; `skiff lab up` recreates the node's link" in err


@root_only
def test_restore_node_of_a_lab_without_its_namespace_points_to_lab_up(
        lab: LabState, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(lab, "restore-node", "3") == 1
    err = " ".join(capsys.readouterr().err.split())
    assert f"the namespace skiff-{lab.name}-3 of {lab.name}-node-3 is gone" in err


@root_only
def test_pressure_without_a_running_agent_needs_a_size_or_an_agent(lab: LabState,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert run(lab, "memory-pressure", "1") == 1
    err = " ".join(capsys.readouterr().err.split())
    assert f"the agent of {lab.name}-node-1 has no --memory or no memory.available threshold; give --size" in err
    assert run(lab, "disk-pressure", "1", "--size", "lots") == 1
    assert "--size 'lots'" in " ".join(capsys.readouterr().err.split())
    assert run(lab, "disk-pressure", "1") == 1
    err = " ".join(capsys.readouterr().err.split())
    assert f"does not exist: the agent of {lab.name}-node-1 has not run yet" in err


@root_only
def test_relieve_of_a_node_without_pressure_says_so(lab: LabState, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(lab, "relieve", "2") == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"{lab.name}-node-2 has no chaos pressure to relieve" in out
    assert "undo:" not in out
