"""``skiff get``: server-rendered tables (like kubectl), yaml/json/name, and ``-w``."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from skiff.api.resources import REGISTRY, ResourceType
from skiff.cli.context import Cli, CliError, meta
from skiff.cli.printers import as_list, qualified_kind, table_view, to_json, to_yaml
from skiff.client.api import TABLE_ACCEPT
from skiff.client.errors import ApiStatusError, NotFound
from skiff.client.watchstream import BOOKMARK

OUTPUT_FORMATS = ("json", "name", "wide", "yaml")
PAGE_SIZE = 500


@dataclass
class Target:
    rt: ResourceType
    names: list[str] = field(default_factory=list)


def parse_targets(cli: Cli, words: list[str], verb: str = "get") -> tuple[list[Target], bool]:
    """``TYPE[,TYPE] [NAME...]`` or ``TYPE/NAME...``; returns the targets and whether
    several types are shown together (then names get a ``kind/`` prefix)."""
    if not words:
        raise CliError(f"you must specify the type of resource to {verb}")
    if any("/" in w for w in words):
        targets: dict[str, Target] = {}
        for word in words:
            if "/" not in word:
                raise CliError("there is no need to specify a resource type as a separate argument when passing "
                               "arguments in resource/name form (e.g. 'skiff get resource/<resource_name>' instead "
                               "of 'skiff get resource resource/<resource_name>'")
            type_name, name = word.split("/", 1)
            rt = cli.resolve(type_name)
            targets.setdefault(rt.plural + "." + rt.group, Target(rt)).names.append(name)
        found = list(targets.values())
        return found, len(found) > 1
    type_words = [w for w in words[0].split(",") if w]
    names = words[1:]
    types: list[ResourceType] = []
    multi = len(type_words) > 1
    for word in type_words:
        if word == "all":
            multi = True
            types += [rt for rt in REGISTRY.types if "all" in rt.categories and rt not in types]
        else:
            rt = cli.resolve(word)
            if rt not in types:
                types.append(rt)
    return [Target(rt, list(names)) for rt in types], multi


def _output(cli: Cli) -> str | None:
    fmt = cli.opts.output
    if fmt is not None and fmt not in OUTPUT_FORMATS:
        raise CliError(f'unable to match a printer suitable for the output format "{fmt}", '
                       f"allowed formats are: {','.join(OUTPUT_FORMATS)}")
    return fmt


def _with_kind(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    obj.setdefault("apiVersion", rt.api_version)
    obj.setdefault("kind", rt.kind)
    return obj


async def cmd_get(cli: Cli, args: argparse.Namespace) -> int:
    fmt = _output(cli)
    targets, multi = parse_targets(cli, args.resources)
    if cli.opts.watch:
        if len(targets) != 1 or len(targets[0].names) > 1:
            raise CliError("you may only specify a single resource type or a single resource to watch")
        return await watch_target(cli, targets[0], fmt)
    if fmt in ("yaml", "json", "name"):
        return await _print_objects(cli, targets, fmt)
    return await _print_tables(cli, targets, multi, wide=fmt == "wide")


async def _list_pages(cli: Cli, rt: ResourceType, accept: str | None, field_selector: str | None = None
                      ) -> dict[str, Any]:
    """A complete list (or Table) across continue pages; rows and items are merged."""
    merged: dict[str, Any] | None = None
    token: str | None = None
    while True:
        page = await cli.client.list(rt, cli.list_namespace(rt), label_selector=cli.opts.selector,
                                     field_selector=field_selector or cli.opts.field_selector, limit=PAGE_SIZE,
                                     continue_=token, accept=accept)
        if merged is None:
            merged = page
        else:
            for key in ("rows", "items"):
                if key in page:
                    merged.setdefault(key, []).extend(page.get(key) or [])
            merged["metadata"] = page.get("metadata") or {}
        token = (page.get("metadata") or {}).get("continue") or None
        if not token:
            return merged


async def _get_named(cli: Cli, rt: ResourceType, names: list[str], accept: str | None
                     ) -> tuple[list[dict[str, Any]], int]:
    found, rc = [], 0
    for name in names:
        try:
            found.append(await cli.client.get(rt, name, cli.namespace if rt.namespaced else None, accept=accept))
        except NotFound as exc:
            cli.warn(f"Error from server (NotFound): {exc.message}")
            rc = 1
    return found, rc


def _no_resources(cli: Cli, targets: list[Target]) -> None:
    if cli.opts.all_namespaces or not any(t.rt.namespaced for t in targets):
        cli.warn("No resources found")
    else:
        cli.warn(f"No resources found in {cli.namespace} namespace.")


async def _print_tables(cli: Cli, targets: list[Target], multi: bool, wide: bool) -> int:
    rc, printed = 0, 0
    for target in targets:
        rt = target.rt
        ns_column = cli.opts.all_namespaces and rt.namespaced
        prefix = qualified_kind(rt) + "/" if multi else ""
        try:
            if target.names:
                responses, rc_named = await _get_named(cli, rt, target.names, TABLE_ACCEPT)
                rc = rc or rc_named
                views = [table_view(r, wide=wide, namespace_column=ns_column, name_prefix=prefix) for r in responses]
                if not views:
                    continue
                view = views[0]
                for extra in views[1:]:
                    view.rows += extra.rows
            else:
                response = await _list_pages(cli, rt, TABLE_ACCEPT)
                view = table_view(response, wide=wide, namespace_column=ns_column, name_prefix=prefix)
        except ApiStatusError as exc:
            if multi and exc.code in (404, 405):  # a type the server does not serve: skip it in "get all"
                continue
            raise
        if not view.rows:
            continue
        if printed:
            cli.print()
        cli.print(view.render())
        printed += 1
    if not printed and rc == 0:
        _no_resources(cli, targets)
    return rc


async def _print_objects(cli: Cli, targets: list[Target], fmt: str) -> int:
    rc = 0
    objects: list[dict[str, Any]] = []
    single = len(targets) == 1 and len(targets[0].names) == 1
    for target in targets:
        rt = target.rt
        if target.names:
            found, rc_named = await _get_named(cli, rt, target.names, None)
            rc = rc or rc_named
            objects += [_with_kind(rt, obj) for obj in found]
        else:
            single = False
            listed = await _list_pages(cli, rt, None)
            objects += [_with_kind(rt, obj) for obj in listed.get("items") or []]
    if fmt == "name":
        for obj in objects:
            known = REGISTRY.by_kind(obj.get("apiVersion", ""), obj.get("kind", ""))
            kind = qualified_kind(known) if known else str(obj.get("kind", "")).lower()
            cli.print(f"{kind}/{meta(obj).get('name')}")
        if not objects and rc == 0:
            _no_resources(cli, targets)
        return rc
    if single and len(objects) == 1:
        document: dict[str, Any] = objects[0]
    elif single:
        return rc
    else:
        document = as_list(objects)
    cli.print(to_yaml(document) if fmt == "yaml" else to_json(document), end="")
    return rc


async def watch_target(cli: Cli, target: Target, fmt: str | None) -> int:
    """List (printing the current state), then print every change until the server ends the watch."""
    rt = target.rt
    field_selector = cli.opts.field_selector
    if target.names:
        by_name = f"metadata.name={target.names[0]}"
        field_selector = f"{field_selector},{by_name}" if field_selector else by_name
    tabular = fmt in (None, "wide")
    accept = TABLE_ACCEPT if tabular else None
    ns_column = cli.opts.all_namespaces and rt.namespaced
    wide = fmt == "wide"
    initial = await _list_pages(cli, rt, accept, field_selector)
    widths: list[int] | None = None
    if tabular:
        view = table_view(initial, wide=wide, namespace_column=ns_column)
        if view.rows:
            cli.print(view.render())
            widths = view.widths()
    else:
        for obj in initial.get("items") or []:
            _print_watched(cli, rt, _with_kind(rt, obj), fmt)
    rv = str((initial.get("metadata") or {}).get("resourceVersion") or "") or None
    namespace = cli.list_namespace(rt)
    async for event_type, obj in cli.client.watch(rt, namespace, resource_version=rv,
                                                  label_selector=cli.opts.selector, field_selector=field_selector,
                                                  allow_bookmarks=False, accept=accept):
        if event_type == BOOKMARK:
            continue
        if not tabular:
            _print_watched(cli, rt, _with_kind(rt, obj), fmt)
            continue
        view = table_view(obj, wide=wide, namespace_column=ns_column)
        if not view.rows:
            continue
        if widths is None:
            cli.print(view.render())
            widths = view.widths()
        else:
            cli.print(view.render_rows(widths))
    return 0


def _print_watched(cli: Cli, rt: ResourceType, obj: dict[str, Any], fmt: str | None) -> None:
    if fmt == "name":
        cli.print(f"{qualified_kind(rt)}/{meta(obj).get('name')}")
    elif fmt == "json":
        cli.print(to_json(obj), end="")
    else:
        cli.print("---\n" + to_yaml(obj), end="")
