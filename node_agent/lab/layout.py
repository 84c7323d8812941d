"""The lab's names and address plan, derived from the lab name alone.

Everything a lab creates on the host is named after it, so a lab can be found and torn
down from its name even when its state file is lost, and two labs never collide:

- network namespace and host-side veth of node i: ``skiff-<name>-<i>``; lab bridge ``skiff-<name>``
- node names ``<name>-node-<i>``; node addresses 10.250.<k>.(10+i), bridge 10.250.<k>.1
- pod CIDR of node i: 10.244.<i>.0/24
- cgroup parent of node i's containers: ``/skiff-<name>-node-<i>``
- iptables chain ``SKIFF-LAB-<NAME>`` in the filter table
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

NAME_RE = re.compile(r"^[a-z0-9]{1,6}$")
DEFAULT_NAME = "skiff"
DEFAULT_STATE_ROOT = Path("/var/lib/skiff-lab")
RUN_DIR = Path("/run/skiff-lab")  # name → state dir pointers and locks; gone at reboot, like the lab
MAX_NODES = 50
LAB_SUPERNET = ipaddress.IPv4Network("10.250.0.0/16")
POD_SUPERNET = ipaddress.IPv4Network("10.244.0.0/16")
API_PORT = 6443
AGENT_PORT = 10250
NODE_IFNAME = "eth0"  # the node's interface inside its namespace


class LabError(RuntimeError):
    """A lab operation failed; the message names the object and the cause."""


def validate_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise LabError(f"invalid lab name {name!r}: use 1 to 6 characters from a-z and 0-9")
    return name


def preferred_subnet_index(name: str) -> int:
    """The k of 10.250.<k>.0/24 a name gets unless another lab already has it (stable)."""
    return hashlib.sha256(name.encode()).digest()[0]


def subnet_for(index: int) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(f"10.250.{index}.0/24")


@dataclass(frozen=True)
class LabLayout:
    name: str
    state_dir: Path
    subnet_index: int

    # -- host-wide names --------------------------------------------------------

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return subnet_for(self.subnet_index)

    @property
    def bridge(self) -> str:
        return f"skiff-{self.name}"

    @property
    def bridge_ip(self) -> ipaddress.IPv4Interface:
        return ipaddress.IPv4Interface(f"{self.subnet.network_address + 1}/{self.subnet.prefixlen}")

    @property
    def chain(self) -> str:
        return f"SKIFF-LAB-{self.name.upper()}"

    @property
    def netns_prefix(self) -> str:
        return f"skiff-{self.name}-"

    @property
    def cgroup_prefix(self) -> str:
        return f"skiff-{self.name}-node-"

    # -- per node ----------------------------------------------------------------

    def node_name(self, i: int) -> str:
        return f"{self.name}-node-{i}"

    def netns(self, i: int) -> str:
        return f"{self.netns_prefix}{i}"

    def host_veth(self, i: int) -> str:
        return f"{self.netns_prefix}{i}"

    def node_ip(self, i: int) -> ipaddress.IPv4Interface:
        return ipaddress.IPv4Interface(f"{self.subnet.network_address + 10 + i}/{self.subnet.prefixlen}")

    def pod_cidr(self, i: int) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"10.244.{i}.0/24")

    def cgroup_parent(self, i: int) -> str:
        return f"/{self.cgroup_prefix}{i}"

    def node_dir(self, i: int) -> Path:
        return self.state_dir / self.node_name(i)

    def docker_socket(self, i: int) -> Path:
        return self.node_dir(i) / "docker.sock"

    def docker_host(self, i: int) -> str:
        return f"unix://{self.docker_socket(i)}"

    # -- files -------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def server_dir(self) -> Path:
        return self.state_dir / "server"

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def cni_bin_dir(self) -> Path:
        return self.state_dir / "cni-bin"

    @property
    def api_url(self) -> str:
        return f"https://{self.bridge_ip.ip}:{API_PORT}"


def default_state_dir(name: str) -> Path:
    return DEFAULT_STATE_ROOT / name
