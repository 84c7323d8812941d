"""``skiff apply``: kubectl's client-side apply, and ``--server-side``.

Client-side apply keeps the last applied manifest in an annotation. On the next apply the
patch is the new manifest in full, plus ``null`` for every field the previous manifest
had and the new one dropped (elements of lists merged by key get a ``$patch: delete``
directive instead). Fields set by others (controllers, defaulting) are left alone,
because they were never in the manifest. The patch is sent as a strategic merge patch.
"""

from __future__ import annotations

import argparse
import copy
import json
from typing import Any

from skiff.api.resources import ResourceType
from skiff.cli.context import Cli, CliError, meta
from skiff.cli.manifests import Manifest, load_manifests
from skiff.cli.printers import qualified_kind
from skiff.client.errors import ApiStatusError, NotFound

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
FIELD_MANAGER = "skiff"

# patchMergeKey of the list fields users commonly write (from the Kubernetes API types);
# lists not named here are atomic and replaced whole.
MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "imagePullSecrets": ("name",),
    "ports": ("containerPort", "port"),  # container ports, service ports
    "hostAliases": ("ip",),
    "conditions": ("type",),
    "topologySpreadConstraints": ("topologyKey",),
    "ownerReferences": ("uid",),
}


def last_applied(obj: dict[str, Any]) -> dict[str, Any] | None:
    raw = (meta(obj).get("annotations") or {}).get(LAST_APPLIED)
    if not raw:
        return None
    try:
        parsed = json.loads(raw)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def with_last_applied(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``obj`` whose annotation records ``obj`` itself (without that annotation),
    serialized as kubectl does: compact JSON, sorted keys, trailing newline."""
    bare = copy.deepcopy(obj)
    annotations = bare.get("metadata", {}).get("annotations")
    if isinstance(annotations, dict):
        annotations.pop(LAST_APPLIED, None)
        if not annotations:
            del bare["metadata"]["annotations"]
    out = copy.deepcopy(bare)
    out.setdefault("metadata", {}).setdefault("annotations", {})[LAST_APPLIED] = (
        json.dumps(bare, sort_keys=True, separators=(",", ":")) + "\n")
    return out


def _merge_key(field: str, items: list[Any]) -> str | None:
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    for key in MERGE_KEYS.get(field, ()):
        if all(key in i for i in items):
            return key
    return None


def three_way_patch(original: dict[str, Any] | None, modified: dict[str, Any]) -> dict[str, Any]:
    """The new config, plus null for each field removed since ``original`` (last applied)."""
    return _patch_map(original, modified)


def _patch_map(original: dict[str, Any] | None, modified: dict[str, Any]) -> dict[str, Any]:
    original = original or {}
    patch: dict[str, Any] = {}
    for key, value in modified.items():
        before = original.get(key)
        if isinstance(value, dict):
            patch[key] = _patch_map(before if isinstance(before, dict) else None, value)
        elif isinstance(value, list):
            patch[key] = _patch_list(key, before if isinstance(before, list) else None, value)
        else:
            patch[key] = copy.deepcopy(value)
    for key in original:
        if key not in modified:
            patch[key] = None
    return patch


def _patch_list(field: str, original: list[Any] | None, modified: list[Any]) -> list[Any]:
    original = original or []
    key = _merge_key(field, modified + original)
    if key is None:
        return copy.deepcopy(modified)
    before = {item[key]: item for item in original}
    out: list[Any] = [_patch_map(before.get(item[key]), item) for item in modified]
    kept = {item[key] for item in modified}
    out += [{key: item[key], "$patch": "delete"} for item in original if item[key] not in kept]
    return out


def patch_changes(patch: Any, current: Any, field: str = "") -> bool:
    """Whether a strategic merge of ``patch`` into ``current`` would change anything."""
    if isinstance(patch, dict):
        if not isinstance(current, dict):
            return True
        for key, value in patch.items():
            if value is None:
                if key in current:
                    return True
            elif patch_changes(value, current.get(key), key):
                return True
        return False
    if isinstance(patch, list):
        if not isinstance(current, list):
            return bool(patch) or current is not None
        key = _merge_key(field, [p for p in patch if not (isinstance(p, dict) and "$patch" in p)] + current)
        if key is None:
            return len(patch) != len(current) or any(patch_changes(p, c, field) for p, c in zip(patch, current,
                                                                                                 strict=True))
        live = {item[key]: item for item in current}
        for item in patch:
            if item.get("$patch") == "delete":
                if item[key] in live:
                    return True
            elif item[key] not in live or patch_changes(item, live[item[key]], field):
                return True
        return False
    return bool(patch != current)


def namespace_for(cli: Cli, rt: ResourceType, manifest: Manifest) -> str | None:
    """The namespace to act in, written into the object as kubectl does."""
    if not rt.namespaced:
        return None
    metadata = manifest.obj.setdefault("metadata", {})
    declared = metadata.get("namespace")
    if declared and cli.explicit_namespace and declared != cli.namespace:
        raise CliError(f'the namespace from the provided object "{declared}" does not match the namespace '
                       f'"{cli.namespace}". You must pass \'--namespace={declared}\' to perform this operation.')
    ns = str(declared or cli.namespace)
    metadata["namespace"] = ns
    return ns


async def apply_manifest(cli: Cli, manifest: Manifest, *, server_side: bool = False,
                         force_conflicts: bool = False, dry_run: bool = False) -> str:
    """Apply one object; return what happened: created, configured, unchanged, serverside-applied."""
    rt = manifest.resource_type()
    ns = namespace_for(cli, rt, manifest)
    name = manifest.name
    if not name:
        raise CliError(f'error when retrieving current configuration of resource from "{manifest.source}": '
                       "resource name may not be empty")
    if server_side:
        await cli.client.patch(rt, name, manifest.obj, ns, patch_type="apply", field_manager=FIELD_MANAGER,
                               force=force_conflicts, dry_run=dry_run)
        return "serverside-applied"
    modified = with_last_applied(manifest.obj)
    try:
        current = await cli.client.get(rt, name, ns)
    except NotFound:
        await cli.client.create(rt, modified, ns, dry_run=dry_run)
        return "created"
    original = last_applied(current)
    if original is None:
        cli.warn(f"Warning: resource {rt.plural}/{name} is missing the {LAST_APPLIED} annotation which is "
                 "required by skiff apply. skiff apply should only be used on resources created declaratively by "
                 "either skiff create --save-config or skiff apply. The missing annotation will be patched "
                 "automatically.")
    patch = three_way_patch(original, modified)
    if not patch_changes(patch, current):
        return "unchanged"
    await cli.client.patch(rt, name, patch, ns, patch_type="strategic", dry_run=dry_run)
    return "configured"


async def cmd_apply(cli: Cli, args: argparse.Namespace) -> int:
    if not args.filename:
        raise CliError("must specify one of -f and -k")
    manifests = load_manifests(args.filename, recursive=args.recursive)
    rc = 0
    dry_run = args.dry_run not in (None, "none")
    suffix = " (dry run)" if dry_run else ""
    for manifest in manifests:
        rt = manifest.resource_type()
        try:
            result = await apply_manifest(cli, manifest, server_side=args.server_side,
                                          force_conflicts=args.force_conflicts, dry_run=dry_run)
        except ApiStatusError as exc:
            cli.warn(f'Error from server ({exc.reason}): error when applying "{manifest.source}": {exc.message}')
            rc = 1
            continue
        if cli.opts.output == "name":
            cli.print(f"{qualified_kind(rt)}/{manifest.name}")
        else:
            cli.print(f"{qualified_kind(rt)}/{manifest.name} {result}{suffix}")
    return rc


async def cmd_create(cli: Cli, args: argparse.Namespace) -> int:
    args.dry_run = args.dry_run not in (None, "none")
    if args.filename:
        return await _create_from_files(cli, args)
    words = list(args.what)
    if len(words) == 2 and cli.resolve(words[0]).kind == "Namespace":
        obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": words[1]}}
        await cli.client.create("namespaces", obj, dry_run=args.dry_run)
        cli.print(f"namespace/{words[1]} created" + (" (dry run)" if args.dry_run else ""))
        return 0
    raise CliError("must specify -f FILENAME or 'namespace NAME'")


async def _create_from_files(cli: Cli, args: argparse.Namespace) -> int:
    rc = 0
    for manifest in load_manifests(args.filename, recursive=args.recursive):
        rt = manifest.resource_type()
        ns = namespace_for(cli, rt, manifest)
        obj = with_last_applied(manifest.obj) if args.save_config else manifest.obj
        try:
            created = await cli.client.create(rt, obj, ns, dry_run=args.dry_run)
        except ApiStatusError as exc:
            cli.warn(f'Error from server ({exc.reason}): error when creating "{manifest.source}": {exc.message}')
            rc = 1
            continue
        name = meta(created).get("name") or manifest.name
        if cli.opts.output == "name":
            cli.print(f"{qualified_kind(rt)}/{name}")
        else:
            cli.print(f"{qualified_kind(rt)}/{name} created" + (" (dry run)" if args.dry_run else ""))
    return rc
