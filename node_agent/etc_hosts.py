"""The kubelet-managed /etc/hosts every container of a pod gets (unless the pod uses
the host's network): localhost entries, the pod's own IP and hostname, and
spec.hostAliases."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from node_agent.runtime.container_spec import Mount

HEADER = """# Kubernetes-managed hosts file.
127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
fe00::0\tip6-mcastprefix
fe00::1\tip6-allnodes
fe00::2\tip6-allrouters
"""


def render_etc_hosts(pod: dict[str, Any], pod_ip: str, cluster_domain: str = "cluster.local") -> str:
    spec = pod.get("spec") or {}
    md = pod.get("metadata") or {}
    hostname = str(spec.get("hostname") or md.get("name") or "")
    lines = [HEADER]
    if spec.get("subdomain"):
        fqdn = f"{hostname}.{spec['subdomain']}.{md.get('namespace', 'default')}.svc.{cluster_domain}"
        lines.append(f"{pod_ip}\t{fqdn}\t{hostname}\n")
    else:
        lines.append(f"{pod_ip}\t{hostname}\n")
    aliases = [a for a in spec.get("hostAliases") or [] if isinstance(a, dict) and a.get("ip")]
    if aliases:
        lines.append("\n# Entries added by HostAliases.\n")
        for alias in aliases:
            lines.append(f"{alias['ip']}\t" + "\t".join(str(h) for h in alias.get("hostnames") or []) + "\n")
    return "".join(lines)


def etc_hosts_mount(pod: dict[str, Any], pod_dir: Path, pod_ip: str | None,
                    container: dict[str, Any]) -> Mount | None:
    """Write ``<pod_dir>/etc-hosts`` (atomically) and return its mount, or None when
    kubelet would not manage /etc/hosts for this container."""
    spec = pod.get("spec") or {}
    if spec.get("hostNetwork") or not pod_ip:
        return None
    if any(m.get("mountPath") == "/etc/hosts" for m in container.get("volumeMounts") or [] if isinstance(m, dict)):
        return None
    path = Path(pod_dir) / "etc-hosts"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(render_etc_hosts(pod, pod_ip))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return Mount(source=str(path), target="/etc/hosts")
