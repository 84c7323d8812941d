"""Reading ``-f`` arguments: files, directories or stdin; multi-document YAML or JSON; ``List`` kinds."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from skiff.api.resources import REGISTRY, ResourceType
from skiff.cli.context import CliError

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass
class Manifest:
    source: str  # the file it came from, for messages ("-" for stdin)
    obj: dict[str, Any]

    @property
    def name(self) -> str:
        return str((self.obj.get("metadata") or {}).get("name") or "")

    def resource_type(self) -> ResourceType:
        api_version, kind = str(self.obj.get("apiVersion", "")), str(self.obj.get("kind", ""))
        rt = REGISTRY.by_kind(api_version, kind)
        if rt is None:
            ns = (self.obj.get("metadata") or {}).get("namespace") or ""
            raise CliError(f'resource mapping not found for name: "{self.name}" namespace: "{ns}" from '
                           f'"{self.source}": no matches for kind "{kind}" in version "{api_version}"')
        return rt


def load_manifests(paths: list[str], recursive: bool = False) -> list[Manifest]:
    out: list[Manifest] = []
    for path in paths:
        if path == "-":
            out += parse_documents(sys.stdin.read(), "STDIN")
            continue
        p = Path(path)
        if p.is_dir():
            pattern = "**/*" if recursive else "*"
            files = sorted(f for f in p.glob(pattern) if f.is_file() and f.suffix in MANIFEST_SUFFIXES)
        elif p.exists():
            files = [p]
        else:
            raise CliError(f'the path "{path}" does not exist')
        for f in files:
            out += parse_documents(f.read_text(), str(f))
    return out


def parse_documents(text: str, source: str) -> list[Manifest]:
    """Every object in a YAML stream or a JSON document, with ``*List`` kinds flattened."""
    docs: list[Any]
    stripped = text.lstrip()
    try:
        if stripped.startswith("{") or stripped.startswith("["):
            try:
                parsed = json.loads(stripped)
                docs = parsed if isinstance(parsed, list) else [parsed]
            except ValueError:
                docs = list(yaml.safe_load_all(text))
        else:
            docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise CliError(f'error parsing {source}: {exc}') from None
    out: list[Manifest] = []
    for doc in docs:
        _flatten(doc, source, out)
    return out


def _flatten(doc: Any, source: str, out: list[Manifest]) -> None:
    if doc is None:
        return
    if not isinstance(doc, dict):
        raise CliError(f"error validating {source}: expected an object, got {type(doc).__name__}")
    kind = str(doc.get("kind") or "")
    if kind.endswith("List") and isinstance(doc.get("items"), list):
        for item in doc["items"]:
            _flatten(item, source, out)
        return
    if not kind or not doc.get("apiVersion"):
        raise CliError(f'error validating data from "{source}": apiVersion and kind must be set')
    out.append(Manifest(source, doc))
