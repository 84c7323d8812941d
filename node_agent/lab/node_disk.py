"""A lab node's own small disk (``skiff lab up --node-disk 4Gi``): an ext4 filesystem in a sparse
image file, loop-mounted at ``<node>/disk``, whose ``agent`` and ``docker`` directories are
bound onto the node's agent root dir and Docker data root. The node's nodefs and imagefs are
then that one small filesystem, so disk pressure (``skiff lab chaos disk-pressure``) is
reached with a few gigabytes — allocated inside the image, hardly any on the host's disk.

Only a node created with it gets one (its directories must not exist yet); ``skiff lab up``
mounts it again when it is not mounted, and ``skiff lab down`` unmounts everything under the
state dir (the loop device goes with the last unmount) and deletes the image.
"""

from __future__ import annotations

import os
from pathlib import Path

from node_agent.lab.command import run
from node_agent.lab.layout import LabError, LabLayout
from node_agent.lab.mounts import mount_points
from skiff.api.quantity import QuantityError, memory_bytes

IMAGE = "disk.img"
MOUNT = "disk"
BOUND = ("agent", "docker")  # the node's agent root dir and Docker data root


def is_mounted(path: Path) -> bool:
    return os.path.realpath(path) in set(mount_points())


def ensure_node_disk(layout: LabLayout, i: int, size: str | None) -> str | None:
    """Mount the node's disk if it has (or, with ``size``, is to get) one; returns what was done."""
    node = layout.node_dir(i)
    image, mount = node / IMAGE, node / MOUNT
    if not image.exists():
        if size is None:
            return None
        try:
            size_bytes = memory_bytes(size)
        except QuantityError as exc:
            raise LabError(f"--node-disk {size!r}: {exc}") from exc
        if any((node / d).exists() for d in BOUND):
            raise LabError(f"{layout.node_name(i)} already has its data on the host's disk; --node-disk applies to "
                           f"new nodes (`skiff lab down --name {layout.name}` first)")
        node.mkdir(parents=True, exist_ok=True)
        with open(image, "wb") as f:
            f.truncate(size_bytes)
        run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)])
        done = f"a {size} ext4 disk"
    else:
        done = "its disk"
    mount.mkdir(exist_ok=True)
    if not is_mounted(mount):
        run(["mount", "-o", "loop", str(image), str(mount)])
    for sub in BOUND:
        (mount / sub).mkdir(exist_ok=True)
        (node / sub).mkdir(exist_ok=True)
        if not is_mounted(node / sub):
            run(["mount", "--bind", str(mount / sub), str(node / sub)])
    return done
