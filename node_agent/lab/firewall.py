"""The lab's iptables rules.

On the host, one chain ``SKIFF-LAB-<NAME>`` jumped to from FORWARD: with br_netfilter on
(Docker turns it on), frames between two nodes on the lab bridge pass the host's FORWARD
chain, whose policy Docker sets to DROP, so they must be accepted; and anything routed
between the lab bridge and another interface is dropped, so lab traffic never leaves the
machine. Inside each node namespace, pods' traffic to destinations outside the pod
network is masqueraded behind the node address (as kind's kindnet does), so pods reach
the API server on the bridge without routes for pod CIDRs on the host.
"""

from __future__ import annotations

import ipaddress

from node_agent.lab.command import run
from node_agent.lab.layout import NODE_IFNAME, POD_SUPERNET, LabError
from node_agent.lab.network import netns_path

IPTABLES = ["iptables", "-w", "10"]
COMMENT = "skiff lab"


def chain_exists(chain: str, table: str = "filter") -> bool:
    return run([*IPTABLES, "-t", table, "-n", "-L", chain], check=False).returncode == 0


def render_lab_chain(bridge: str) -> list[list[str]]:
    """The rules of the lab chain, in order (each without ``-A CHAIN``)."""
    return [
        ["-i", bridge, "-o", bridge, "-j", "ACCEPT"],
        ["-i", bridge, "-j", "DROP"],
        ["-o", bridge, "-j", "DROP"],
    ]


def ensure_lab_chain(chain: str, bridge: str) -> None:
    """Create or refresh the chain with exactly the rendered rules, and the jump to it at the top of FORWARD."""
    if not chain_exists(chain):
        run([*IPTABLES, "-N", chain])
    run([*IPTABLES, "-F", chain])
    for rule in render_lab_chain(bridge):
        run([*IPTABLES, "-A", chain, *rule, "-m", "comment", "--comment", COMMENT])
    jump = ["FORWARD", "-j", chain, "-m", "comment", "--comment", COMMENT]
    if run([*IPTABLES, "-C", *jump], check=False).returncode != 0:
        run([*IPTABLES, "-I", jump[0], "1", *jump[1:]])


def delete_lab_chain(chain: str) -> bool:
    """Remove every jump to the chain, then the chain. Idempotent; True if the chain existed."""
    for _ in range(100):  # one jump per pass; a stray duplicate jump is removed too
        proc = run([*IPTABLES, "-D", "FORWARD", "-j", chain, "-m", "comment", "--comment", COMMENT], check=False)
        if proc.returncode != 0:
            proc = run([*IPTABLES, "-D", "FORWARD", "-j", chain], check=False)
        if proc.returncode != 0:
            break
    if not chain_exists(chain):
        return False
    run([*IPTABLES, "-F", chain])
    proc = run([*IPTABLES, "-X", chain], check=False)
    if proc.returncode != 0 and chain_exists(chain):
        raise LabError(f"cannot delete iptables chain {chain}: {proc.stderr.strip()}")
    return True


def ensure_node_masquerade(netns: str, pod_cidr: ipaddress.IPv4Network) -> None:
    """Inside the node namespace: masquerade pod traffic leaving ``eth0`` for outside the pod network."""
    rule = ["POSTROUTING", "-s", str(pod_cidr), "!", "-d", str(POD_SUPERNET), "-o", NODE_IFNAME,
            "-m", "comment", "--comment", COMMENT, "-j", "MASQUERADE"]
    enter = ["nsenter", f"--net={netns_path(netns)}", "--"]
    if run([*enter, *IPTABLES, "-t", "nat", "-C", *rule], check=False).returncode != 0:
        run([*enter, *IPTABLES, "-t", "nat", "-A", *rule])
