"""What every verb needs: the parsed global flags, a connected client, and the output streams."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any, TextIO

from skiff.api.resources import ResourceType
from skiff.client.api import ApiClient, resolve_type
from skiff.client.kubeconfig import ClientConfig, load_kubeconfig


class CliError(Exception):
    """A user error: printed as ``error: <message>``, exit code 1."""


@dataclass
class GlobalOptions:
    kubeconfig: str | None = None
    context: str | None = None
    server: str | None = None
    token: str | None = None
    insecure_skip_tls_verify: bool = False
    namespace: str | None = None
    all_namespaces: bool = False
    selector: str | None = None
    field_selector: str | None = None
    output: str | None = None
    watch: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> GlobalOptions:
        values = {name: getattr(args, name) for name in cls.__dataclass_fields__ if hasattr(args, name)}
        return cls(**values)


def load_client_config(opts: GlobalOptions) -> ClientConfig:
    if opts.server:
        config = ClientConfig(server=opts.server.rstrip("/"), token=opts.token,
                              insecure_skip_tls_verify=opts.insecure_skip_tls_verify)
    else:
        config = load_kubeconfig(opts.kubeconfig, context=opts.context)
        if opts.token:
            config.token = opts.token
        if opts.insecure_skip_tls_verify:
            config.insecure_skip_tls_verify = True
    return config


@dataclass
class Cli:
    opts: GlobalOptions
    client: ApiClient
    out: TextIO
    err: TextIO

    @property
    def namespace(self) -> str:
        """The namespace to act in: ``-n``, else the kubeconfig context's."""
        return self.opts.namespace or self.client.namespace

    @property
    def explicit_namespace(self) -> bool:
        return bool(self.opts.namespace)

    def list_namespace(self, rt: ResourceType) -> str | None:
        """Where to list: None means every namespace (``-A``) or a cluster-scoped type."""
        if not rt.namespaced or self.opts.all_namespaces:
            return None
        return self.namespace

    def resolve(self, name: str) -> ResourceType:
        try:
            return resolve_type(name)
        except ValueError as exc:
            raise CliError(str(exc)) from None

    def print(self, text: str = "", end: str = "\n") -> None:
        self.out.write(text + end)
        self.out.flush()

    def warn(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()

    @staticmethod
    def streams() -> tuple[TextIO, TextIO]:
        return sys.stdout, sys.stderr


def meta(obj: dict[str, Any]) -> dict[str, Any]:
    m = obj.get("metadata")
    return m if isinstance(m, dict) else {}
