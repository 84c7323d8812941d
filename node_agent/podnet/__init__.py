"""The pod network across nodes: host-gw routes to every other node's pod CIDR, and the
kernel and iptables switches that forwarding needs.

- `routes`: the desired routes from Node objects, and the plan from actual to desired (pure).
- `netlink`: the route table adapter (pyroute2), the only module touching netlink.
- `controller`: the reconcile loop fed by a Node informer.
- `sysctls`, `forward_rules`: ip_forward, bridge-nf-call-iptables, the SKIFF-PODNET chain.
- `runner`: `run_pod_network`, the agent's task.
"""
