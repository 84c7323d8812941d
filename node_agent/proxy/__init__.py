"""The service proxy (kube-proxy): Services and EndpointSlices -> iptables rules on this node.

model.py           API objects -> service ports and endpoints (validated at the edge)
iptables_rules.py  the pure renderer: ruleset text, chain names from hashes
iptables_exec.py   the iptables tools (restore, save, check), optionally in a netns
applier.py         apply only what changed; full syncs remove stale chains, ensure jumps
conntrack.py       clear UDP flows to removed endpoints
sync_runner.py     rate-limited syncs (min interval, periodic)
proxier.py         informers -> model -> render -> apply
ipvs.py            IPVS detection (refused where the kernel lacks it)
main.py            ``skiff proxy``
"""
