"""Accept forwarded pod traffic: chain ``SKIFF-PODNET`` in the filter table, jumped to from FORWARD.

A host whose Docker manages iptables has FORWARD's policy at DROP, which would drop pod
packets routed between the pod bridge and the node's uplink. Like flannel's FLANNEL-FWD,
the chain accepts everything from or to the cluster's pod CIDR. The chain is rendered
whole and loaded with ``iptables-restore --noflush`` (which flushes only the chains it
names); the jump is checked and inserted at the top of FORWARD. Nothing is ever removed,
as kubelet and kube-proxy leave their base chains: the rules are harmless once unused.
Chain KUBE-FORWARD belongs to the service proxy and is not touched here.
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Callable, Sequence

CHAIN = "SKIFF-PODNET"
COMMENT = "skiff pod network"
WAIT = ["-w", "10"]

Runner = Callable[[Sequence[str], str | None], subprocess.CompletedProcess[str]]


class ForwardRulesError(RuntimeError):
    """iptables refused; the message has the command and its output."""


def run_command(argv: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        raise ForwardRulesError(f"{argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise ForwardRulesError(f"`{' '.join(argv)}` did not finish within 60s") from None


def render_chain_rules(cluster_cidr: str) -> list[str]:
    """The chain's rules as ``iptables -S`` prints them."""
    net = ipaddress.ip_network(cluster_cidr, strict=False)
    return [f'-A {CHAIN} -s {net} -m comment --comment "{COMMENT}" -j ACCEPT',
            f'-A {CHAIN} -d {net} -m comment --comment "{COMMENT}" -j ACCEPT']


def render_restore(cluster_cidr: str) -> str:
    return "\n".join(["*filter", f":{CHAIN} - [0:0]", *render_chain_rules(cluster_cidr), "COMMIT", ""])


JUMP = ["FORWARD", "-m", "comment", "--comment", COMMENT, "-j", CHAIN]


def ensure_forward_accept(cluster_cidr: str, run: Runner = run_command, prefix: Sequence[str] = ()) -> list[str]:
    """Make the chain hold exactly the rendered rules and FORWARD jump to it; what was changed.

    ``prefix`` runs the tools elsewhere (e.g. ``nsenter --net=PATH --``). Raises ForwardRulesError.
    """
    iptables = [*prefix, "iptables", *WAIT]
    changed = []
    current = run([*iptables, "-S", CHAIN], None)
    want = render_chain_rules(cluster_cidr)
    have = [line for line in current.stdout.splitlines() if line.startswith("-A ")] if current.returncode == 0 else []
    if have != want:
        proc = run([*prefix, "iptables-restore", *WAIT, "--noflush"], render_restore(cluster_cidr))
        if proc.returncode != 0:
            raise ForwardRulesError(f"iptables-restore of chain {CHAIN} failed (exit {proc.returncode}): "
                                    f"{proc.stderr.strip() or proc.stdout.strip()}")
        changed.append(f"chain {CHAIN}: {len(want)} rules for {cluster_cidr}")
    if run([*iptables, "-C", *JUMP], None).returncode != 0:
        proc = run([*iptables, "-I", JUMP[0], "1", *JUMP[1:]], None)
        if proc.returncode != 0:
            raise ForwardRulesError(f"cannot insert the jump FORWARD -> {CHAIN} (exit {proc.returncode}): "
                                    f"{proc.stderr.strip() or proc.stdout.strip()}")
        changed.append(f"jump FORWARD -> {CHAIN}")
    return changed
