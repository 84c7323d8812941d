"""CNI configuration of a lab node: the conflist in the node's config dir and the
``skiff-bridge`` plugin wrapper in the lab's bin dir.

The conflist is the one shared by Skiff's plugin and Debian's reference plugins; only the
plugin ``type`` differs. IPAM state goes under the node's own directory, never the shared
``/var/lib/cni/networks``, so lab nodes do not hand out each other's addresses.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from node_agent.lab.layout import LabLayout

PLUGINS = ("skiff", "reference")
REFERENCE_BIN_DIR = Path("/usr/lib/cni")
CONFLIST_NAME = "10-skiff.conflist"
POD_BRIDGE = "skiff0"


def render_conflist(plugin: str, pod_cidr: ipaddress.IPv4Network, ipam_dir: Path) -> dict[str, Any]:
    if plugin not in PLUGINS:
        raise ValueError(f"unknown CNI plugin {plugin!r}; expected one of {', '.join(PLUGINS)}")
    gateway = pod_cidr.network_address + 1
    return {
        "cniVersion": "1.0.0",
        "name": "skiff",
        "plugins": [{
            "type": "skiff-bridge" if plugin == "skiff" else "bridge",
            "bridge": POD_BRIDGE,
            "isGateway": True,
            "ipMasq": False,
            "hairpinMode": True,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": str(pod_cidr), "gateway": str(gateway)}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": str(ipam_dir),
            },
        }],
    }


def conf_dir(layout: LabLayout, i: int) -> Path:
    return layout.node_dir(i) / "cni" / "net.d"


def ipam_dir(layout: LabLayout, i: int) -> Path:
    return layout.node_dir(i) / "cni" / "ipam"


def bin_path(layout: LabLayout) -> str:
    """The agent's ``--cni-bin-dir``: Skiff's wrapper first, then the reference plugins (loopback...)."""
    return f"{layout.cni_bin_dir}:{REFERENCE_BIN_DIR}"


def _write_if_changed(path: Path, text: str, mode: int) -> None:
    if path.exists() and path.read_text() == text and (path.stat().st_mode & 0o777) == mode:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def ensure_plugin_wrapper(layout: LabLayout) -> Path:
    """``<state>/cni-bin/skiff-bridge``: runs ``python -m cni.plugin`` with this interpreter (the venv's)."""
    path = layout.cni_bin_dir / "skiff-bridge"
    _write_if_changed(path, f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m cni.plugin "$@"\n', 0o755)
    return path


def ensure_node_cni(layout: LabLayout, i: int, plugin: str) -> Path:
    """Write the node's conflist (and the IPAM dir); returns the conflist's path."""
    ipam_dir(layout, i).mkdir(parents=True, exist_ok=True)
    conflist = render_conflist(plugin, layout.pod_cidr(i), ipam_dir(layout, i))
    path = conf_dir(layout, i) / CONFLIST_NAME
    _write_if_changed(path, json.dumps(conflist, indent=2) + "\n", 0o644)
    return path
