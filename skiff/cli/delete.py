"""``skiff delete``: by type and name, by selector, or from manifests; waits until gone like kubectl."""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass
from typing import Any

from skiff.api.resources import ResourceType
from skiff.cli.context import Cli, CliError, meta
from skiff.cli.get import parse_targets
from skiff.cli.manifests import load_manifests
from skiff.cli.printers import qualified_kind
from skiff.client.errors import ApiStatusError, NotFound

WAIT_POLL_INTERVAL = 0.5


@dataclass
class Doomed:
    rt: ResourceType
    name: str
    namespace: str | None
    uid: str | None = None


async def _collect(cli: Cli, args: argparse.Namespace) -> list[Doomed]:
    if args.filename:
        if args.resources:
            raise CliError("cannot specify both -f and resource names")
        out = []
        for manifest in load_manifests(args.filename, recursive=args.recursive):
            rt = manifest.resource_type()
            ns = (manifest.obj.get("metadata") or {}).get("namespace") or cli.namespace
            out.append(Doomed(rt, manifest.name, ns if rt.namespaced else None))
        return out
    targets, _ = parse_targets(cli, args.resources, "delete")
    out = []
    for target in targets:
        rt = target.rt
        ns = cli.namespace if rt.namespaced else None
        if target.names:
            out += [Doomed(rt, name, ns) for name in target.names]
        elif args.all or cli.opts.selector or cli.opts.field_selector:
            listed = await cli.client.list_all(rt, cli.list_namespace(rt), label_selector=cli.opts.selector,
                                               field_selector=cli.opts.field_selector)
            for item in listed.get("items") or []:
                m = meta(item)
                out.append(Doomed(rt, str(m.get("name")), m.get("namespace") if rt.namespaced else None))
        else:
            raise CliError("resource(s) were provided, but no name was specified")
    return out


def _deleted_uid(reply: dict[str, Any]) -> str | None:
    if reply.get("kind") == "Status":
        return (reply.get("details") or {}).get("uid")
    return meta(reply).get("uid")


async def cmd_delete(cli: Cli, args: argparse.Namespace) -> int:
    doomed = await _collect(cli, args)
    if not doomed and not args.filename and not args.ignore_not_found:
        cli.warn("No resources found")
        return 0
    grace: int | None = args.grace_period if args.grace_period >= 0 else None
    if args.now:
        grace = 1
    if args.force:
        grace = 0 if grace is None else grace
    rc = 0
    deleted: list[Doomed] = []
    for item in doomed:
        try:
            reply = await cli.client.delete(item.rt, item.name, item.namespace, grace_period_seconds=grace,
                                            propagation_policy=args.cascade_policy)
        except NotFound as exc:
            if not args.ignore_not_found:
                cli.warn(f"Error from server (NotFound): {exc.message}")
                rc = 1
            continue
        except ApiStatusError as exc:
            cli.warn(f"Error from server ({exc.reason}): {exc.message}")
            rc = 1
            continue
        item.uid = _deleted_uid(reply)
        deleted.append(item)
        if cli.opts.output == "name":
            cli.print(f"{qualified_kind(item.rt)}/{item.name}")
        else:
            cli.print(f'{qualified_kind(item.rt)} "{item.name}" deleted')
    if args.wait and deleted:
        try:
            await asyncio.wait_for(_wait_gone(cli, deleted), args.timeout or None)
        except TimeoutError:
            raise CliError("timed out waiting for the condition") from None
    return rc


async def _wait_gone(cli: Cli, items: list[Doomed]) -> None:
    """Poll until each object is gone (or was replaced by a new one with another uid)."""
    for item in items:
        while True:
            try:
                live = await cli.client.get(item.rt, item.name, item.namespace)
            except NotFound:
                break
            if item.uid and meta(live).get("uid") != item.uid:
                break
            await asyncio.sleep(WAIT_POLL_INTERVAL)


CASCADE = {"background": "Background", "foreground": "Foreground", "orphan": "Orphan",
           "true": "Background", "false": "Orphan"}


def cascade_policy(value: str) -> str:
    try:
        return CASCADE[value.lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(
            f'invalid cascade value ({value}). Must be "background", "foreground", or "orphan"') from None
