"""Regenerate control_plane/api/protobuf/messages.json from the pinned kubectl 1.35 binary.

Kubernetes' protobuf wire format for an API object is defined by the Go struct tags of
its types (``protobuf:"bytes,2,opt,name=spec"``), and the JSON the API server stores for
a protobuf body is what Go's encoding/json makes of the decoded struct: it depends on
things the generated .proto files do not say - whether a field is a pointer (an absent
``*int32`` is omitted, a present zero is kept), ``omitempty``, and ``json:",inline"``
embedding (``Volume`` inlines ``VolumeSource``). A Go binary keeps all of that for
``reflect``: its type metadata holds every struct's fields with their Go types and full
tags. This script reads it from ``.tools/kubectl-1.35`` (the client whose bodies Skiff
decodes; scripts/setup.sh installs it) and writes one table for the kinds Skiff serves.

The walk follows Go's runtime type layout (internal/abi) for amd64 ELF binaries as of
Go 1.25: moduledata (found by its pointer to .gopclntab) -> typelinks -> abi.Type /
StructType / PtrType / SliceType / MapType, and runtime names (flag byte, varint
length, bytes, optional tag). Checks along the way fail loudly if the layout differs.

Run: .venv/bin/python scripts/gen_protobuf_schema.py [path/to/kubectl] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import re
import struct
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from skiff.api.resources import REGISTRY  # noqa: E402

OUT = ROOT / "control_plane/api/protobuf/messages.json"
DEFAULT_BINARY = ROOT / ".tools/kubectl-1.35"

# Bodies posted to subresources or as options, besides the kinds in REGISTRY.
EXTRA_ROOTS = (("v1", "Binding"), ("autoscaling/v1", "Scale"), ("policy/v1", "Eviction"),
               ("meta.k8s.io/v1", "DeleteOptions"))

META = "k8s.io/apimachinery/pkg/apis/meta/v1"
# Types whose protobuf and JSON forms are written by hand in Go (Marshal/MarshalJSON):
# the decoder knows them by these names.
SPECIAL = {
    f"{META}.Time": "Time",
    f"{META}.MicroTime": "MicroTime",
    f"{META}.Duration": "Duration",
    f"{META}.FieldsV1": "FieldsV1",
    "k8s.io/apimachinery/pkg/api/resource.Quantity": "Quantity",
    "k8s.io/apimachinery/pkg/util/intstr.IntOrString": "IntOrString",
    "k8s.io/apimachinery/pkg/runtime.RawExtension": "RawExtension",
}
# Named slices and maps that go-to-protobuf wraps in a message (+protobuf.nullable=true).
NULLABLE_WRAPPERS = {"ExtraValue", "Verbs", "OptionalNames", "OptionalNodeSelector"}

# internal/abi kinds
BOOL, INT32, INT64, UINT8, UINT32, UINT64, FLOAT32, FLOAT64 = 1, 5, 6, 8, 10, 11, 13, 14
MAP, POINTER, SLICE, STRING, STRUCT = 21, 22, 23, 24, 25
SCALARS = {BOOL: "bool", INT32: "int32", INT64: "int64", UINT32: "uint32", UINT64: "uint64",
           FLOAT32: "float32", FLOAT64: "float64", STRING: "string"}
# the protobuf tag's wire word each scalar must carry
WIRE_WORDS = {"bool": "varint", "int32": "varint", "int64": "varint", "uint32": "varint", "uint64": "varint",
              "float32": "fixed32", "float64": "fixed64", "string": "bytes", "bytes": "bytes"}
TFLAG_UNCOMMON, TFLAG_EXTRA_STAR, TFLAG_NAMED = 1, 2, 4
TYPE_SIZE = 48          # abi.Type
STRUCT_UNCOMMON = 80    # abi.StructType = Type + PkgPath name + Fields slice
MODULEDATA_TYPES = 296  # moduledata.types
MODULEDATA_TYPELINKS = 352


class GoBinary:
    """Read-only view of a Go ELF binary's type metadata."""

    def __init__(self, path: Path):
        self.data = path.read_bytes()
        if self.data[:4] != b"\x7fELF" or self.data[4] != 2:
            raise SystemExit(f"{path}: not a 64-bit ELF file")
        self.sections = self._sections()
        self.types, self.typelinks = self._moduledata()

    def _sections(self) -> dict[str, tuple[int, int, int]]:
        shoff = struct.unpack_from("<Q", self.data, 0x28)[0]
        entsize, count, strndx = struct.unpack_from("<HHH", self.data, 0x3A)
        raw = [struct.unpack_from("<IIQQQQ", self.data, shoff + i * entsize) for i in range(count)]
        names_at = raw[strndx][4]
        out = {}
        for name_off, _typ, _flags, addr, off, size in raw:
            end = self.data.index(b"\0", names_at + name_off)
            out[self.data[names_at + name_off:end].decode()] = (addr, off, size)
        return out

    def _moduledata(self) -> tuple[int, list[int]]:
        pclntab = self.sections[".gopclntab"][0]
        addr, off, size = self.sections[".noptrdata"]
        at = self.data.find(struct.pack("<Q", pclntab), off, off + size)
        if at < 0:
            raise SystemExit("moduledata not found (no pointer to .gopclntab in .noptrdata)")
        types = struct.unpack_from("<Q", self.data, at + MODULEDATA_TYPES)[0]
        links_ptr, links_len = struct.unpack_from("<QQ", self.data, at + MODULEDATA_TYPELINKS)
        if types != self.sections[".rodata"][0] or links_ptr != self.sections[".typelink"][0]:
            raise SystemExit("unexpected moduledata layout (types/typelinks do not point at .rodata/.typelink)")
        links = [types + struct.unpack_from("<i", self.data, self._off(links_ptr) + 4 * i)[0]
                 for i in range(links_len)]
        return types, links

    def _off(self, addr: int) -> int:
        for start, off, size in self.sections.values():
            if start <= addr < start + size and off:
                return addr - start + off
        raise ValueError(f"address {addr:#x} is in no section")

    def u8(self, addr: int) -> int:
        return self.data[self._off(addr)]

    def u64(self, addr: int) -> int:
        return int(struct.unpack_from("<Q", self.data, self._off(addr))[0])

    def i32(self, addr: int) -> int:
        return int(struct.unpack_from("<i", self.data, self._off(addr))[0])

    def _varint(self, addr: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            b = self.u8(addr)
            addr += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return value, addr

    def name(self, addr: int) -> tuple[str, str, bool]:
        """A runtime name: (text, tag, embedded)."""
        flags = self.u8(addr)
        n, p = self._varint(addr + 1)
        text = self.data[self._off(p):self._off(p) + n].decode()
        tag = ""
        if flags & 2:
            tn, q = self._varint(p + n)
            tag = self.data[self._off(q):self._off(q) + tn].decode()
        return text, tag, bool(flags & 8)

    def kind(self, t: int) -> int:
        return self.u8(t + 23) & 0x1F

    def type_string(self, t: int) -> str:
        text = self.name(self.types + self.i32(t + 40))[0]
        return text[1:] if self.u8(t + 20) & TFLAG_EXTRA_STAR else text

    def named(self, t: int) -> bool:
        return bool(self.u8(t + 20) & TFLAG_NAMED)

    def struct_pkg(self, t: int) -> str:
        if not self.u8(t + 20) & TFLAG_UNCOMMON:
            return ""
        return self.name(self.types + self.i32(t + STRUCT_UNCOMMON))[0]

    def qualified(self, t: int) -> str:
        """``k8s.io/api/apps/v1.Deployment`` for a named struct."""
        return f"{self.struct_pkg(t)}.{self.type_string(t).rsplit('.', 1)[-1]}"

    def elem(self, t: int) -> int:
        return self.u64(t + 48)

    def map_key_elem(self, t: int) -> tuple[int, int]:
        return self.u64(t + 48), self.u64(t + 56)

    def fields(self, t: int) -> list[tuple[str, str, bool, int]]:
        ptr, length = self.u64(t + 56), self.u64(t + 64)
        out = []
        for i in range(length):
            name, tag, embedded = self.name(self.u64(ptr + 24 * i))
            out.append((name, tag, embedded, self.u64(ptr + 24 * i + 8)))
        return out

    def structs(self) -> dict[str, int]:
        """Every named struct reachable from the typelinks, by qualified name."""
        seen: set[int] = set()
        found: dict[str, int] = {}
        stack = list(self.typelinks)
        while stack:
            t = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            k = self.kind(t)
            if k in (POINTER, SLICE, 17):  # 17: array
                stack.append(self.elem(t))
            elif k == MAP:
                stack.extend(self.map_key_elem(t))
            elif k == STRUCT:
                if self.named(t):
                    found.setdefault(self.qualified(t), t)
                stack.extend(f[3] for f in self.fields(t))
        return found


def tag_value(tag: str, key: str) -> str | None:
    m = re.search(rf'(?:^|\s){key}:"([^"]*)"', tag)
    return m.group(1) if m else None


def short(qualified: str) -> str:
    for prefix in ("k8s.io/api/", "k8s.io/apimachinery/pkg/apis/"):
        if qualified.startswith(prefix):
            return qualified[len(prefix):]
    raise SystemExit(f"unexpected package for {qualified}")


class Generator:
    def __init__(self, binary: GoBinary):
        self.bin = binary
        self.structs = binary.structs()
        self.messages: dict[str, list[list[object]]] = {}
        self.stale_tags: list[str] = []

    def message(self, qualified: str) -> str:
        if qualified in SPECIAL:
            return SPECIAL[qualified]
        name = short(qualified)
        if name not in self.messages:
            self.messages[name] = []  # placeholder: recursive types terminate here
            self.messages[name] = self._fields(qualified)
        return name

    def _type(self, t: int, where: str) -> str:
        """The table's type string for Go type ``t``; pointers are flagged by the caller."""
        k = self.bin.kind(t)
        if k == STRUCT:
            return self.message(self.bin.qualified(t))
        if k == SLICE:
            elem = self.bin.elem(t)
            if self.bin.named(t) and self.bin.type_string(t).rsplit(".", 1)[-1] in NULLABLE_WRAPPERS:
                raise SystemExit(f"{where}: nullable wrapper {self.bin.type_string(t)} is not supported")
            if self.bin.kind(elem) == UINT8:
                return "bytes"
            if self.bin.kind(elem) in (POINTER, SLICE, MAP):
                raise SystemExit(f"{where}: unsupported element type {self.bin.type_string(t)}")
            return "[]" + self._type(elem, where)
        if k == MAP:
            if self.bin.named(t) and self.bin.type_string(t).rsplit(".", 1)[-1] in NULLABLE_WRAPPERS:
                raise SystemExit(f"{where}: nullable wrapper {self.bin.type_string(t)} is not supported")
            key, elem = self.bin.map_key_elem(t)
            if self.bin.kind(key) != STRING or self.bin.kind(elem) in (POINTER, MAP):
                raise SystemExit(f"{where}: unsupported map type {self.bin.type_string(t)}")
            return f"map[string]{self._type(elem, where)}"
        if k in SCALARS:
            return SCALARS[k]
        raise SystemExit(f"{where}: unsupported Go kind {k} ({self.bin.type_string(t)})")

    def _fields(self, qualified: str) -> list[list[object]]:
        out: list[list[object]] = []
        for go_name, tag, embedded, t in self.bin.fields(self.structs[qualified]):
            where = f"{qualified}.{go_name}"
            pb = tag_value(tag, "protobuf")
            js = tag_value(tag, "json")
            if pb is None:
                if embedded and self.bin.type_string(t) == "v1.TypeMeta":
                    continue  # apiVersion/kind travel in the runtime.Unknown envelope
                if js == "-":
                    continue
                raise SystemExit(f"{where}: a JSON field with no protobuf tag ({tag!r})")
            wire, number, *rest = pb.split(",")
            json_name, *options = (js or go_name).split(",")
            if js is None:
                json_name = go_name
            flags = ""
            pointer = self.bin.kind(t) == POINTER
            target = self.bin.elem(t) if pointer else t
            if pointer:
                flags += "p"
            if "omitempty" in options:
                flags += "o"
            if "omitzero" in options:
                flags += "z"
            if json_name == "" and embedded:  # encoding/json inlines an unnamed embedded struct
                flags += "i"
            elif json_name == "":
                json_name = go_name
            type_name = self._type(target, where)
            # go-to-protobuf derives the .proto (and so the wire) from the Go type; a few old
            # tags carry stale words (SecretVolumeSource.defaultMode "bytes", ISCSI portals "opt").
            repeated = "rep" in rest
            scalar = type_name.removeprefix("[]")
            if repeated != type_name.startswith(("[]", "map[")) or (
                    not type_name.startswith("map[") and wire != WIRE_WORDS.get(scalar, "bytes")):
                self.stale_tags.append(f"{where}: {pb!r} for {type_name}")
            out.append([int(number), json_name, type_name, flags])
        return out


def api_package(api_version: str) -> str:
    if api_version == "meta.k8s.io/v1":
        return META
    group, _, version = api_version.rpartition("/")
    return f"k8s.io/api/{group.split('.')[0] or 'core'}/{version}"


def render(doc: Mapping[str, object]) -> str:
    """JSON with one line per kind and per message, so a regeneration diffs readably."""
    lines = ["{"]
    for key, value in doc.items():
        if isinstance(value, dict):
            lines.append(f"{json.dumps(key)}: {{")
            items = [f"{json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}" for k, v in value.items()]
            lines.append(",\n".join(items))
            lines.append("},")
        else:
            lines.append(f"{json.dumps(key)}: {json.dumps(value)},")
    lines[-1] = lines[-1].rstrip(",")
    return "\n".join(lines) + "\n}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kubectl", nargs="?", type=Path, default=DEFAULT_BINARY)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    path = args.kubectl
    version = subprocess.run([str(path), "version", "--client", "-o", "json"], capture_output=True, text=True,
                             check=True).stdout
    client = json.loads(version)["clientVersion"]
    gen = Generator(GoBinary(path))
    kinds: dict[str, str] = {}
    roots = [(rt.api_version, rt.kind) for rt in REGISTRY.types] + list(EXTRA_ROOTS)
    for api_version, kind in roots:
        qualified = f"{api_package(api_version)}.{kind}"
        if qualified not in gen.structs:
            raise SystemExit(f"{qualified} is not in {path}")
        kinds[f"{api_version}/{kind}"] = gen.message(qualified)
    doc = {
        "source": f"Go struct tags of kubectl {client['gitVersion']} ({client['goVersion']}), "
                  "read by scripts/gen_protobuf_schema.py",
        "fields": "[number, json name ('' = inline), type, flags: p pointer, o omitempty, z omitzero, i inline]",
        "kinds": kinds,
        "messages": dict(sorted(gen.messages.items())),
    }
    args.out.write_text(render(doc))
    fields = sum(len(f) for f in gen.messages.values())
    for line in gen.stale_tags:
        print(f"note: stale protobuf tag word, wire type taken from the Go type: {line}")
    print(f"wrote {args.out}: {len(kinds)} kinds, {len(gen.messages)} messages, {fields} fields")


if __name__ == "__main__":
    main()
