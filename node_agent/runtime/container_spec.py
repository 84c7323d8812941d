"""What Docker is asked to create for a pod's containers: a pure rendering of the pod spec.

The kubelet's translation (``kuberuntime_container.go`` + dockershim's config helpers) done
once, as data: ``container_create_kwargs`` and ``pause_create_spec`` return a
``ContainerCreateSpec`` that ``to_docker_kwargs`` turns into keyword arguments for the
docker SDK's low-level ``APIClient.create_container``. Nothing here talks to Docker or
touches the filesystem, so every rule is unit-tested on plain dicts.

Rules kept from Kubernetes:
- ``command`` replaces the image's ENTRYPOINT, ``args`` its CMD; ``$(VAR)`` in both is
  expanded with the container's environment (unknown names stay literal, ``$$`` escapes).
- CPU shares from the request (``MilliCPUToShares``: milli*1024/1000, at least 2, at most
  262144; the limit when there is no request), CFS quota from the limit on a 100 ms period
  (at least 1 ms), memory limit in bytes.
- Container securityContext overrides the pod's; fsGroup and supplementalGroups become
  extra groups; capabilities take Kubernetes names (without ``CAP_``).
- The pause container owns the network, IPC (shareable) and, with
  ``shareProcessNamespace``, PID namespaces; every other container joins them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from node_agent.runtime.env import ContainerConfigError, expand, mapping_for
from skiff.api.quantity import QuantityError, cpu_millis, memory_bytes

Obj = dict[str, Any]

# Labels (dockershim's names, see /tmp/common.md decisions) -------------------------------------
LABEL_POD_UID = "io.kubernetes.pod.uid"
LABEL_POD_NAMESPACE = "io.kubernetes.pod.namespace"
LABEL_POD_NAME = "io.kubernetes.pod.name"
LABEL_CONTAINER_NAME = "io.kubernetes.container.name"
LABEL_RESTART_COUNT = "io.kubernetes.container.restartCount"
LABEL_CONTAINER_TYPE = "io.skiff.container.type"
LABEL_MANAGED = "io.skiff.managed"
# Extra labels the agent can rebuild decisions from after a restart without the API object.
LABEL_CONTAINER_HASH = "io.kubernetes.container.hash"
LABEL_TERMINATION_MESSAGE_PATH = "io.kubernetes.container.terminationMessagePath"
LABEL_TERMINATION_MESSAGE_POLICY = "io.kubernetes.container.terminationMessagePolicy"
LABEL_TERMINATION_GRACE_PERIOD = "io.kubernetes.pod.terminationGracePeriod"

POD_INFRA_CONTAINER_NAME = "POD"
CONTAINER_TYPE_PAUSE = "pause"
CONTAINER_TYPE_INIT = "init"
CONTAINER_TYPE_APP = "app"

# Kubelet constants (pkg/kubelet/cm/helpers_linux.go, dockershim) --------------------------------
MIN_SHARES = 2
MAX_SHARES = 262144
SHARES_PER_CPU = 1024
MILLI_CPU_TO_CPU = 1000
QUOTA_PERIOD = 100_000  # microseconds
MIN_QUOTA_PERIOD = 1_000
SANDBOX_CPU_SHARES = 2
SANDBOX_SHM_SIZE = 64 * 1024 * 1024
# The kubelet gives the sandbox oom_score_adj -998; not here: lowering it needs
# CAP_SYS_RESOURCE, which a sandboxed dockerd may lack (runc then fails to start it).
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
DEFAULT_TERMINATION_GRACE_PERIOD = 30
# kubelet's containerLogMaxSize / containerLogMaxFiles defaults, in Docker's units.
LOG_MAX_SIZE = "10m"
LOG_MAX_FILES = "5"
HOSTNAME_MAX_LENGTH = 63


@dataclass(frozen=True)
class Mount:
    """One mount of a container: a host path bound at ``target``, or (``tmpfs``) a
    container-private tmpfs. ``sub_path`` records the volumeMount's subPath, already
    applied to ``source`` by whoever built the mount."""

    source: str
    target: str
    read_only: bool = False
    tmpfs: bool = False
    sub_path: str = ""
    # "", "rslave" (mountPropagation HostToContainer) or "rshared" (Bidirectional)
    propagation: str = ""
    tmpfs_size: int | None = None


@dataclass
class ContainerCreateSpec:
    """Everything ``APIClient.create_container`` needs; ``host_config`` holds the keyword
    arguments of ``APIClient.create_host_config``."""

    name: str
    image: str
    labels: dict[str, str]
    host_config: dict[str, Any]
    entrypoint: list[str] | None = None
    command: list[str] | None = None
    environment: list[str] = field(default_factory=list)
    working_dir: str | None = None
    user: str | None = None
    hostname: str | None = None
    tty: bool = False
    stdin_open: bool = False
    stdin_once: bool = False


def to_docker_kwargs(api: Any, spec: ContainerCreateSpec) -> dict[str, Any]:
    """Keyword arguments for ``api.create_container(**kwargs)`` (``api`` is a docker
    ``APIClient``, used only for ``create_host_config``, which knows the API version)."""
    kwargs: dict[str, Any] = {
        "image": spec.image,
        "name": spec.name,
        "labels": dict(spec.labels),
        "environment": list(spec.environment),
        "host_config": api.create_host_config(**spec.host_config),
        "tty": spec.tty,
        "stdin_open": spec.stdin_open,
        # docker-py sets StdinOnce exactly when stdin is open and the container is not
        # detached; that is the only way to ask for it through create_container.
        "detach": not (spec.stdin_open and spec.stdin_once),
    }
    if spec.entrypoint is not None:
        kwargs["entrypoint"] = list(spec.entrypoint)
    if spec.command is not None:
        kwargs["command"] = list(spec.command)
    if spec.working_dir:
        kwargs["working_dir"] = spec.working_dir
    if spec.user:
        kwargs["user"] = spec.user
    if spec.hostname:
        kwargs["hostname"] = spec.hostname
    return kwargs


# --- names and labels ---------------------------------------------------------------------------

def _meta(pod: Obj) -> tuple[str, str, str]:
    meta = pod.get("metadata") or {}
    return str(meta.get("name") or ""), str(meta.get("namespace") or "default"), str(meta.get("uid") or "")


def container_name(pod: Obj, container: str, attempt: int) -> str:
    """``k8s_<container>_<pod>_<namespace>_<uid>_<attempt>`` (dockershim's naming)."""
    name, namespace, uid = _meta(pod)
    return f"k8s_{container}_{name}_{namespace}_{uid}_{attempt}"


def pod_labels(pod: Obj, container: str, container_type: str, restart_count: int) -> dict[str, str]:
    name, namespace, uid = _meta(pod)
    return {
        LABEL_POD_UID: uid,
        LABEL_POD_NAMESPACE: namespace,
        LABEL_POD_NAME: name,
        LABEL_CONTAINER_NAME: container,
        LABEL_RESTART_COUNT: str(restart_count),
        LABEL_CONTAINER_TYPE: container_type,
        LABEL_MANAGED: "true",
    }


def hash_container(container: Obj) -> str:
    """A stable hash of a container spec (kubelet's ``HashContainer`` idea): the agent
    recreates a container whose spec changed (only ``image`` can, for a pod)."""
    canonical = json.dumps(container, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def format_pod(pod: Obj) -> str:
    """kubelet's ``format.Pod``: ``name_namespace(uid)``."""
    name, namespace, uid = _meta(pod)
    return f"{name}_{namespace}({uid})"


# --- resources ----------------------------------------------------------------------------------

def milli_cpu_to_shares(milli_cpu: int) -> int:
    """kubelet ``MilliCPUToShares``."""
    if milli_cpu == 0:
        # Docker reads 0 as unset (1024 shares); 2 is what the kernel means by "nothing".
        return MIN_SHARES
    shares = milli_cpu * SHARES_PER_CPU // MILLI_CPU_TO_CPU
    return max(MIN_SHARES, min(MAX_SHARES, shares))


def milli_cpu_to_quota(milli_cpu: int, period: int = QUOTA_PERIOD) -> int:
    """kubelet ``MilliCPUToQuota``: 0 (no quota) without a limit, else at least 1 ms."""
    if milli_cpu == 0:
        return 0
    return max(MIN_QUOTA_PERIOD, milli_cpu * period // MILLI_CPU_TO_CPU)


def _quantity(values: Mapping[str, Any] | None, name: str) -> Any | None:
    if not values:
        return None
    return values.get(name)


def resource_host_config(container: Obj) -> dict[str, Any]:
    """``calculateLinuxResources``: cpu_shares always, cpu_quota/period and mem_limit when
    limited. Swap is capped at the memory limit, as the kubelet's NoSwap behaviour."""
    resources = container.get("resources") or {}
    limits = resources.get("limits") or {}
    requests = resources.get("requests") or {}
    try:
        cpu_request = _quantity(requests, "cpu")
        cpu_limit = _quantity(limits, "cpu")
        memory_limit = _quantity(limits, "memory")
        if cpu_request is None and cpu_limit is not None:
            shares = milli_cpu_to_shares(cpu_millis(cpu_limit))
        else:
            shares = milli_cpu_to_shares(cpu_millis(cpu_request) if cpu_request is not None else 0)
        out: dict[str, Any] = {"cpu_shares": shares}
        quota = milli_cpu_to_quota(cpu_millis(cpu_limit)) if cpu_limit is not None else 0
        if quota > 0:
            out["cpu_period"] = QUOTA_PERIOD
            out["cpu_quota"] = quota
        mem = memory_bytes(memory_limit) if memory_limit is not None else 0
        if mem > 0:
            out["mem_limit"] = mem
            out["memswap_limit"] = mem
    except QuantityError as exc:
        raise ContainerConfigError(message=f"invalid resources for container {container.get('name')}: {exc}") from exc
    return out


# --- security -----------------------------------------------------------------------------------

def _effective(pod_sc: Obj, sc: Obj, name: str) -> Any:
    """Container securityContext wins over the pod's (``DetermineEffectiveSecurityContext``)."""
    value = sc.get(name)
    return value if value is not None else pod_sc.get(name)


def _image_uid(image_user: str) -> tuple[int | None, str]:
    """(numeric uid or None, user name) of an image's USER (``"name:group"`` allowed)."""
    user = image_user.split(":", 1)[0]
    if user == "":
        return 0, ""
    if user.isdigit():
        return int(user), ""
    return None, user


def security_settings(pod: Obj, container: Obj, *, image_user: str = "") -> tuple[str | None, dict[str, Any]]:
    """(``user`` for the container config, host-config settings) from the effective
    securityContext; verifies runAsNonRoot as the kubelet does."""
    spec = pod.get("spec") or {}
    pod_sc = spec.get("securityContext") or {}
    sc = container.get("securityContext") or {}
    run_as_user = _effective(pod_sc, sc, "runAsUser")
    run_as_group = _effective(pod_sc, sc, "runAsGroup")
    run_as_non_root = _effective(pod_sc, sc, "runAsNonRoot")

    if run_as_non_root:
        cname = container.get("name")
        if run_as_user is not None:
            if int(run_as_user) == 0:
                raise ContainerConfigError(
                    message=f'container\'s runAsUser breaks non-root policy (pod: "{format_pod(pod)}", '
                            f"container: {cname})")
        else:
            uid, username = _image_uid(image_user)
            if uid == 0:
                raise ContainerConfigError(
                    message=f'container has runAsNonRoot and image will run as root (pod: "{format_pod(pod)}", '
                            f"container: {cname})")
            if uid is None:
                raise ContainerConfigError(
                    message=f"container has runAsNonRoot and image has non-numeric user ({username}), cannot "
                            f'verify user is non-root (pod: "{format_pod(pod)}", container: {cname})')

    user: str | None = None
    if run_as_user is not None:
        user = str(int(run_as_user))
    if run_as_group is not None:
        # Docker only takes a group together with a user: keep the image's user then.
        base = user if user is not None else (image_user.split(":", 1)[0] or "0")
        user = f"{base}:{int(run_as_group)}"

    host: dict[str, Any] = {}
    groups: list[str] = []
    if pod_sc.get("fsGroup") is not None:
        groups.append(str(int(pod_sc["fsGroup"])))
    for gid in pod_sc.get("supplementalGroups") or []:
        if str(int(gid)) not in groups:
            groups.append(str(int(gid)))
    if groups:
        host["group_add"] = groups

    if sc.get("privileged"):
        host["privileged"] = True
    if sc.get("readOnlyRootFilesystem"):
        host["read_only"] = True
    caps = sc.get("capabilities") or {}
    if caps.get("add"):
        host["cap_add"] = [_cap_name(c) for c in caps["add"]]
    if caps.get("drop"):
        host["cap_drop"] = [_cap_name(c) for c in caps["drop"]]

    security_opt: list[str] = []
    if sc.get("allowPrivilegeEscalation") is False and not sc.get("privileged"):
        security_opt.append("no-new-privileges")
    seccomp = (_effective(pod_sc, sc, "seccompProfile") or {}).get("type")
    if seccomp != "RuntimeDefault" and not sc.get("privileged"):
        # The kubelet's default (seccompDefault=false) is Unconfined; Localhost profiles
        # would need the JSON content, which Docker cannot load from a path.
        security_opt.append("seccomp=unconfined")
    if security_opt:
        host["security_opt"] = security_opt
    return user, host


def _cap_name(cap: Any) -> str:
    name = str(cap).upper()
    return name[4:] if name.startswith("CAP_") else name


# --- mounts -------------------------------------------------------------------------------------

def mount_host_config(mounts: list[Mount], termination_log: str | None, termination_path: str) -> dict[str, Any]:
    binds: list[str] = []
    tmpfs: dict[str, str] = {}
    for m in mounts:
        if m.tmpfs:
            opts = ["rw" if not m.read_only else "ro"]
            if m.tmpfs_size:
                opts.append(f"size={m.tmpfs_size}")
            tmpfs[m.target] = ",".join(opts)
            continue
        mode = "ro" if m.read_only else "rw"
        if m.propagation:
            mode += f",{m.propagation}"
        binds.append(f"{m.source}:{m.target}:{mode}")
    if termination_log and termination_path and not any(m.target == termination_path for m in mounts):
        binds.append(f"{termination_log}:{termination_path}:rw")
    out: dict[str, Any] = {}
    if binds:
        out["binds"] = binds
    if tmpfs:
        out["tmpfs"] = tmpfs
    return out


def log_config() -> dict[str, Any]:
    return {"type": "json-file", "config": {"max-size": LOG_MAX_SIZE, "max-file": LOG_MAX_FILES}}


# --- the two specs ------------------------------------------------------------------------------

def container_create_kwargs(
    pod: Obj,
    container: Obj,
    *,
    kind: Literal["init", "app"],
    pause_id: str,
    restart_count: int,
    attempt: int,
    mounts: list[Mount],
    env: dict[str, str],
    image_ref: str,
    termination_log: str | None = None,
    image_user: str = "",
) -> ContainerCreateSpec:
    """The create spec of an init or app container joining the pause container ``pause_id``.

    ``env`` is the resolved environment (``resolve_env``), ``mounts`` the container's
    volume mounts (``volumes.mounts_for``), ``image_ref`` what to create from (the image
    name or its ID). ``termination_log`` is the host file bound at the container's
    terminationMessagePath (``volumes.prepare_termination_log``); ``image_user`` is the
    image's USER, needed for runAsNonRoot and runAsGroup without runAsUser.
    Raises ContainerConfigError (CreateContainerConfigError) for a spec Docker cannot run.
    """
    spec = pod.get("spec") or {}
    cname = str(container.get("name") or "")
    mapping = mapping_for(env)
    command = [expand(str(c), mapping) for c in container.get("command") or []]
    args = [expand(str(a), mapping) for a in container.get("args") or []]

    user, security_host = security_settings(pod, container, image_user=image_user)
    termination_path = str(container.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH)
    grace = spec.get("terminationGracePeriodSeconds")
    labels = pod_labels(pod, cname, CONTAINER_TYPE_INIT if kind == "init" else CONTAINER_TYPE_APP, restart_count)
    labels[LABEL_CONTAINER_HASH] = hash_container(container)
    labels[LABEL_TERMINATION_MESSAGE_PATH] = termination_path
    labels[LABEL_TERMINATION_MESSAGE_POLICY] = str(container.get("terminationMessagePolicy") or "File")
    labels[LABEL_TERMINATION_GRACE_PERIOD] = str(grace if grace is not None else DEFAULT_TERMINATION_GRACE_PERIOD)

    host: dict[str, Any] = {
        "network_mode": f"container:{pause_id}",
        "ipc_mode": "host" if spec.get("hostIPC") else f"container:{pause_id}",
        "log_config": log_config(),
    }
    if spec.get("hostPID"):
        host["pid_mode"] = "host"
    elif spec.get("shareProcessNamespace"):
        host["pid_mode"] = f"container:{pause_id}"
    host.update(resource_host_config(container))
    host.update(security_host)
    host.update(mount_host_config(mounts, termination_log, termination_path))

    return ContainerCreateSpec(
        name=container_name(pod, cname, attempt),
        image=image_ref,
        labels=labels,
        host_config=host,
        entrypoint=command or None,
        command=args or None,
        environment=[f"{k}={v}" for k, v in env.items()],
        working_dir=str(container.get("workingDir") or "") or None,
        user=user,
        tty=bool(container.get("tty")),
        stdin_open=bool(container.get("stdin")),
        stdin_once=bool(container.get("stdinOnce")),
    )


def pod_hostname(pod: Obj) -> str:
    """``spec.hostname`` or the pod name, cut to 63 characters (kubelet's GeneratePodHostNameAndDomain)."""
    spec = pod.get("spec") or {}
    name, _, _ = _meta(pod)
    hostname = str(spec.get("hostname") or name)
    return hostname[:HOSTNAME_MAX_LENGTH].rstrip("-.")


def pause_create_spec(pod: Obj, pause_image: str, *, attempt: int = 0) -> ContainerCreateSpec:
    """The pod sandbox: no network (the CNI plugin wires it), shareable IPC, the pod's
    hostname, and the namespaced sysctls of the pod's securityContext."""
    spec = pod.get("spec") or {}
    pod_sc = spec.get("securityContext") or {}
    host: dict[str, Any] = {
        "network_mode": "host" if spec.get("hostNetwork") else "none",
        "ipc_mode": "host" if spec.get("hostIPC") else "shareable",
        "shm_size": SANDBOX_SHM_SIZE,
        "cpu_shares": SANDBOX_CPU_SHARES,
        "log_config": log_config(),
    }
    if spec.get("hostPID"):
        host["pid_mode"] = "host"
    sysctls = {str(s.get("name")): str(s.get("value", "")) for s in pod_sc.get("sysctls") or [] if s.get("name")}
    if sysctls:
        host["sysctls"] = sysctls
    labels = pod_labels(pod, POD_INFRA_CONTAINER_NAME, CONTAINER_TYPE_PAUSE, attempt)
    grace = spec.get("terminationGracePeriodSeconds")
    labels[LABEL_TERMINATION_GRACE_PERIOD] = str(grace if grace is not None else DEFAULT_TERMINATION_GRACE_PERIOD)
    return ContainerCreateSpec(
        name=container_name(pod, POD_INFRA_CONTAINER_NAME, attempt),
        image=pause_image,
        labels=labels,
        host_config=host,
        # On the host network the container keeps the node's hostname, as in Kubernetes.
        hostname=None if spec.get("hostNetwork") else pod_hostname(pod),
    )
