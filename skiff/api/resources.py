"""The resource types Skiff serves, with Kubernetes' names.

One table drives discovery, routing, storage keys and the CLI's short names, so a
resource added here is served everywhere at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

READ_VERBS = ("get", "list", "watch")
ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()  # e.g. ("status", "scale")
    verbs: tuple[str, ...] = ALL_VERBS
    categories: tuple[str, ...] = ()

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> str:
        return self.api_version

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def resource_prefix(self) -> str:
        """Storage key prefix for every object of this type (ends with '/')."""
        return f"/registry/{self.group or 'core'}/{self.plural}/"

    def storage_key(self, namespace: str | None, name: str) -> str:
        if self.namespaced:
            return f"{self.resource_prefix}{namespace}/{name}"
        return f"{self.resource_prefix}{name}"

    def list_prefix(self, namespace: str | None) -> str:
        if self.namespaced and namespace:
            return f"{self.resource_prefix}{namespace}/"
        return self.resource_prefix

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{name}"
            if sub:
                base += f"/{sub}"
        return base


_ALL = "all"

RESOURCES: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "Namespace", "namespaces", False, ("ns",), ("status", "finalize"),
                 verbs=("create", "delete", "get", "list", "patch", "update", "watch")),
    ResourceType("", "v1", "Pod", "pods", True, ("po",), ("status", "binding", "log", "exec", "eviction"),
                 categories=(_ALL,)),
    ResourceType("", "v1", "Node", "nodes", False, ("no",), ("status",)),
    ResourceType("", "v1", "Service", "services", True, ("svc",), ("status",), categories=(_ALL,),
                 verbs=("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")),
    ResourceType("", "v1", "Endpoints", "endpoints", True, ("ep",)),
    ResourceType("", "v1", "ConfigMap", "configmaps", True, ("cm",)),
    ResourceType("", "v1", "Secret", "secrets", True),
    ResourceType("", "v1", "ServiceAccount", "serviceaccounts", True, ("sa",)),
    ResourceType("", "v1", "Event", "events", True, ("ev",)),
    ResourceType("", "v1", "ResourceQuota", "resourcequotas", True, ("quota",), ("status",)),
    ResourceType("", "v1", "LimitRange", "limitranges", True, ("limits",)),
    ResourceType("apps", "v1", "Deployment", "deployments", True, ("deploy",), ("status", "scale"),
                 categories=(_ALL,)),
    ResourceType("apps", "v1", "ReplicaSet", "replicasets", True, ("rs",), ("status", "scale"),
                 categories=(_ALL,)),
    ResourceType("apps", "v1", "DaemonSet", "daemonsets", True, ("ds",), ("status",), categories=(_ALL,)),
    ResourceType("batch", "v1", "Job", "jobs", True, (), ("status",), categories=(_ALL,)),
    ResourceType("coordination.k8s.io", "v1", "Lease", "leases", True),
    ResourceType("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", True),
)

# Preferred group order in discovery, as Kubernetes lists them.
GROUP_ORDER: tuple[str, ...] = ("", "apps", "batch", "coordination.k8s.io", "discovery.k8s.io")


@dataclass
class Registry:
    types: tuple[ResourceType, ...] = RESOURCES
    _by_path: dict[tuple[str, str, str], ResourceType] = field(default_factory=dict)
    _by_kind: dict[tuple[str, str], ResourceType] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for rt in self.types:
            self._by_path[(rt.group, rt.version, rt.plural)] = rt
            self._by_kind[(rt.api_version, rt.kind)] = rt

    def by_plural(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_path.get((group, version, plural))

    def require(self, group: str, version: str, plural: str) -> ResourceType:
        """A type this code base serves; a KeyError here is a programming error."""
        rt = self.by_plural(group, version, plural)
        if rt is None:
            raise KeyError(f"{group}/{version}/{plural} is not a served resource")
        return rt

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        return self._by_kind.get((api_version, kind))

    def group_versions(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for rt in self.types:
            versions = out.setdefault(rt.group, [])
            if rt.version not in versions:
                versions.append(rt.version)
        return out

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [rt for rt in self.types if rt.group == group and rt.version == version]

    def resolve(self, name: str) -> ResourceType | None:
        """Find a type by the names users type: plural, singular, short name, kind,
        optionally qualified with a group (``deployments.apps``)."""
        name = name.lower()
        group = None
        if "." in name:
            name, group = name.split(".", 1)
        for rt in self.types:
            if group is not None and rt.group != group:
                continue
            if name in (rt.plural, rt.singular, rt.kind.lower()) or name in rt.short_names:
                return rt
        return None


REGISTRY = Registry()
