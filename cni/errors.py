"""CNI error results: the spec's well-known codes and the plugin's own (>= 100).

A plugin reports failure by printing ``{"cniVersion", "code", "msg", "details"}`` on
stdout and exiting non-zero; `CniPluginError` carries exactly that, raised from
wherever the failure is understood and printed once by `cni.plugin.main`.
"""

from __future__ import annotations

import json
from typing import Any

# Well-known codes (CNI spec 1.0.0, section 5 "Error"; 50/51 from 1.1.0 STATUS).
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_NETWORK_CONFIG = 7
TRY_AGAIN_LATER = 11
PLUGIN_NOT_AVAILABLE = 50
PLUGIN_NOT_AVAILABLE_LIMITED_CONNECTIVITY = 51

# Skiff's plugin-specific codes.
INTERNAL = 100  # an unexpected failure: a bug, reported with its traceback in details
NETLINK_FAILURE = 101  # a link, address or route operation was refused by the kernel
RANGE_EXHAUSTED = 102  # no free address left in the configured range
DUPLICATE_ALLOCATION = 103  # ADD twice for the same (container, ifname) without DEL
CHECK_FAILED = 104  # CHECK found the attachment missing or different from prevResult

MESSAGES = {
    INCOMPATIBLE_VERSION: "incompatible CNI version",
    UNSUPPORTED_FIELD: "unsupported field in network configuration",
    UNKNOWN_CONTAINER: "container unknown or does not exist",
    INVALID_ENVIRONMENT: "invalid necessary environment variables",
    IO_FAILURE: "I/O failure",
    DECODE_FAILURE: "failed to decode content",
    INVALID_NETWORK_CONFIG: "invalid network config",
    TRY_AGAIN_LATER: "try again later",
    PLUGIN_NOT_AVAILABLE: "plugin not available",
    PLUGIN_NOT_AVAILABLE_LIMITED_CONNECTIVITY: "plugin not available; existing containers may have limited connectivity",
    INTERNAL: "internal error",
    NETLINK_FAILURE: "netlink operation failed",
    RANGE_EXHAUSTED: "no IP addresses available in range",
    DUPLICATE_ALLOCATION: "duplicate allocation",
    CHECK_FAILED: "attachment check failed",
}


class CniPluginError(Exception):
    """A failure to report as the spec's error result.

    ``msg`` is short and stable (what kind of failure); ``details`` names the link,
    address, container or file involved so an operator can act on it.
    """

    def __init__(self, code: int, details: str, msg: str | None = None) -> None:
        self.code = code
        self.msg = msg if msg is not None else MESSAGES.get(code, "error")
        self.details = details
        super().__init__(f"{self.msg}: {details}" if details else self.msg)

    def to_dict(self, cni_version: str) -> dict[str, Any]:
        return {"cniVersion": cni_version, "code": self.code, "msg": self.msg, "details": self.details}

    def to_json(self, cni_version: str) -> str:
        return json.dumps(self.to_dict(cni_version))
