"""The asyncio Kubernetes API client shared by every Skiff component and the CLI."""

from skiff.client.api import PATCH_CONTENT_TYPES, TABLE_ACCEPT, ApiClient, resolve_type
from skiff.client.backoff import Backoff, RetryPolicy
from skiff.client.errors import (
    AlreadyExists,
    ApiClientError,
    ApiConnectionError,
    ApiStatusError,
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    NotFound,
    ServerError,
    TooManyRequests,
    Unauthorized,
    error_from_status,
)
from skiff.client.informer import Informer, SharedInformerFactory, object_key
from skiff.client.kubeconfig import (
    ClientConfig,
    ConfigError,
    load_config,
    load_incluster_config,
    load_kubeconfig,
)
from skiff.client.watchstream import WatchEvent

__all__ = [
    "PATCH_CONTENT_TYPES",
    "TABLE_ACCEPT",
    "AlreadyExists",
    "ApiClient",
    "ApiClientError",
    "ApiConnectionError",
    "ApiStatusError",
    "Backoff",
    "BadRequest",
    "ClientConfig",
    "ConfigError",
    "Conflict",
    "Forbidden",
    "Gone",
    "Informer",
    "Invalid",
    "NotFound",
    "RetryPolicy",
    "ServerError",
    "SharedInformerFactory",
    "TooManyRequests",
    "Unauthorized",
    "WatchEvent",
    "error_from_status",
    "load_config",
    "load_incluster_config",
    "load_kubeconfig",
    "object_key",
    "resolve_type",
]
