"""Output formats of the CLI: kubectl's aligned tables, yaml, json and ``kind/name``."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from skiff.api.durations import human_duration
from skiff.api.resources import ResourceType
from skiff.cli.tabwriter import GET_PADDING, format_tabbed


def parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def age(timestamp: Any, now: dt.datetime | None = None) -> str:
    """Time since an RFC 3339 timestamp, as kubectl prints it; ``<unknown>`` when unset."""
    when = parse_time(timestamp)
    if when is None:
        return "<unknown>"
    now = now or dt.datetime.now(dt.UTC)
    return human_duration((now - when).total_seconds())


def format_cell(value: Any) -> str:
    """A table cell the way Go's ``%v`` prints decoded JSON (``<none>`` for null)."""
    if value is None:
        return "<none>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return "[" + " ".join(format_cell(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{format_cell(v)}" for k, v in sorted(value.items())) + "]"
    return str(value)


def qualified_kind(rt: ResourceType) -> str:
    """``pod``, ``deployment.apps``: the prefix kubectl puts before ``/name``."""
    return f"{rt.singular}.{rt.group}" if rt.group else rt.singular


def qualified_plural(rt: ResourceType) -> str:
    """``pods``, ``deployments.apps``: how resources are named in messages."""
    return f"{rt.plural}.{rt.group}" if rt.group else rt.plural


@dataclass
class TableView:
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def render(self, no_headers: bool = False) -> str:
        lines = [] if no_headers else ["\t".join(self.headers)]
        lines += ["\t".join(row) for row in self.rows]
        return format_tabbed("\n".join(lines), GET_PADDING)

    def widths(self) -> list[int]:
        widths = [len(h) for h in self.headers]
        for row in self.rows:
            for i, cell in enumerate(row[: len(widths)]):
                widths[i] = max(widths[i], len(cell))
        return widths

    def render_rows(self, min_widths: Sequence[int]) -> str:
        """Rows only, padded at least to ``min_widths`` so watch output stays under its header."""
        out = []
        for row in self.rows:
            cells = []
            for i, cell in enumerate(row):
                last = i == len(row) - 1
                width = min_widths[i] if i < len(min_widths) else 0
                cells.append(cell if last else cell.ljust(max(width, len(cell)) + GET_PADDING))
            out.append("".join(cells))
        return "\n".join(out)


def _is_table(obj: Mapping[str, Any]) -> bool:
    return obj.get("kind") == "Table" and "columnDefinitions" in obj


def table_view(response: Mapping[str, Any], *, wide: bool = False, namespace_column: bool = False,
               name_prefix: str = "", now: dt.datetime | None = None) -> TableView:
    """The server's Table (or, if it answered a plain list/object, NAME and AGE)."""
    if _is_table(response):
        return _from_server_table(response, wide=wide, namespace_column=namespace_column, name_prefix=name_prefix,
                                  now=now)
    items = response.get("items") if "items" in response else [response]
    return objects_view(items or [], namespace_column=namespace_column, name_prefix=name_prefix, now=now)


def _from_server_table(table: Mapping[str, Any], *, wide: bool, namespace_column: bool, name_prefix: str,
                       now: dt.datetime | None) -> TableView:
    columns = list(table.get("columnDefinitions") or [])
    shown = [i for i, c in enumerate(columns) if wide or not c.get("priority")]
    name_index = next((i for i, c in enumerate(columns) if c.get("format") == "name"), 0)
    headers = [str(columns[i].get("name", "")).upper() for i in shown]
    if namespace_column:
        headers.insert(0, "NAMESPACE")
    view = TableView(headers)
    for row in table.get("rows") or []:
        cells = list(row.get("cells") or [])
        out = []
        for i in shown:
            value = cells[i] if i < len(cells) else None
            column = columns[i]
            if column.get("type") == "date" and parse_time(value):
                text = age(value, now)
            else:
                text = format_cell(value)
            if i == name_index and name_prefix:
                text = name_prefix + text
            out.append(text)
        if namespace_column:
            meta = (row.get("object") or {}).get("metadata") or {}
            out.insert(0, str(meta.get("namespace") or ""))
        view.rows.append(out)
    return view


def objects_view(items: Iterable[Mapping[str, Any]], *, namespace_column: bool = False, name_prefix: str = "",
                 now: dt.datetime | None = None) -> TableView:
    view = TableView(["NAMESPACE", "NAME", "AGE"] if namespace_column else ["NAME", "AGE"])
    for obj in items:
        meta = obj.get("metadata") or {}
        row = [name_prefix + str(meta.get("name", "")), age(meta.get("creationTimestamp"), now)]
        if namespace_column:
            row.insert(0, str(meta.get("namespace") or ""))
        view.rows.append(row)
    return view


class _GoStyleDumper(yaml.SafeDumper):
    """YAML as kubectl prints it: multi-line strings as ``|`` blocks, and double quotes
    (not single) where a plain scalar would be misread."""

    def choose_scalar_style(self) -> str:
        style = super().choose_scalar_style()
        return '"' if style == "'" else style


_YAML11_BOOL_LETTERS = frozenset({"y", "Y", "n", "N"})


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    if data in _YAML11_BOOL_LETTERS:  # booleans to YAML 1.1 readers; PyYAML would leave them plain
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style='"')
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)



_GoStyleDumper.add_representer(str, _represent_str)


def to_yaml(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_GoStyleDumper, default_flow_style=False, sort_keys=True, allow_unicode=True,
                     width=float("inf"))


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=4, sort_keys=True, ensure_ascii=False) + "\n"


def as_list(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``kind: List`` wrapper kubectl prints for several objects."""
    return {"apiVersion": "v1", "items": items, "kind": "List", "metadata": {"resourceVersion": ""}}
