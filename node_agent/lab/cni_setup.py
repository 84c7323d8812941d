"""Where a lab node's CNI configuration and plugins live.

The agent writes the conflist for its ``--pod-cidr`` and ``--cni-plugin`` into its
``--cni-conf-dir`` and installs ``skiff-bridge`` into the first ``--cni-bin-dir``
(``node_agent.runtime.cni``); the lab only gives each node directories of its own, so
nodes never share a conflist or IPAM state, and keeps the reference plugins on the path.
"""

from __future__ import annotations

from pathlib import Path

from node_agent.lab.layout import LabLayout

PLUGINS = ("skiff", "reference")
REFERENCE_BIN_DIR = Path("/usr/lib/cni")


def conf_dir(layout: LabLayout, i: int) -> Path:
    return layout.node_dir(i) / "cni" / "net.d"


def bin_path(layout: LabLayout) -> str:
    """The agent's ``--cni-bin-dir``: the lab's own dir first (the agent installs skiff-bridge there),
    then the reference plugins (bridge, host-local, loopback)."""
    return f"{layout.cni_bin_dir}:{REFERENCE_BIN_DIR}"


def ensure_cni_dirs(layout: LabLayout, i: int) -> None:
    conf_dir(layout, i).mkdir(parents=True, exist_ok=True)
    layout.cni_bin_dir.mkdir(parents=True, exist_ok=True)
