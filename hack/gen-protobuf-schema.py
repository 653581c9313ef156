#!/usr/bin/env python3
"""Writes apiserver/src/protobuf/schema.rs: the field numbers, JSON names and types of the
Kubernetes protobuf messages the apiserver decodes (request bodies kubectl 1.32+ sends as
application/vnd.kubernetes.protobuf).

The facts come from the k8s-pb 0.9 bindings (generated from Kubernetes' generated.proto files:
message names, field numbers, field types) and the JSON field names from k8s-openapi 0.29 (proto
field names are the JSON names; the Rust bindings only keep them in snake_case, so acronyms like
podIP are recovered from the JSON names k8s-openapi serializes). Both crates must be in the cargo
registry (`cargo fetch` does it). Usage: hack/gen-protobuf-schema.py > apiserver/src/protobuf/schema.rs
"""
import glob
import os
import re
import sys

REG = os.path.expanduser("~/.cargo/registry/src")


def crate_dir(name):
    hits = sorted(glob.glob(f"{REG}/*/{name}"))
    if not hits:
        sys.exit(f"{name} is not in {REG}: run cargo fetch")
    return hits[-1]


PB = crate_dir("k8s-pb-0.9.0")
OPENAPI = crate_dir("k8s-openapi-0.29.0")

# JSON names, keyed by their letters and digits lowercased: podIP -> podip.
json_names = {}
for path in glob.glob(f"{OPENAPI}/src/**/*.rs", recursive=True):
    for name in re.findall(r'serialize_field\(&mut state, "([^"]+)"', open(path).read()):
        json_names.setdefault(re.sub(r"[^a-z0-9]", "", name.lower()), name)


# The JSON fields of each Kubernetes 1.33 struct, keyed like the proto messages, lowercased:
# api.core.v1.volume -> {name, projected, ...}. A message-typed proto field whose name is not
# among its struct's JSON fields is an embedded struct (Go `json:",inline"`: Volume's
# volumeSource, Probe's handler, the LocalObjectReference of ConfigMap and Secret references):
# its fields sit in the parent's JSON object, and the table names it "".
struct_fields = {}
for path in glob.glob(f"{OPENAPI}/src/v1_33/**/*.rs", recursive=True):
    text = open(path).read()
    module = os.path.relpath(os.path.dirname(path), f"{OPENAPI}/src/v1_33").split(os.sep)
    for struct in re.findall(r"^pub struct (\w+) \{", text, re.M):
        struct_fields[".".join(module + [struct]).lower()] = set(re.findall(r'serialize_field\(&mut state, "([^"]+)"', text))


def inline(message, name, sub):
    """Whether the field `name` of `message`, of message type `sub`, is embedded: not a JSON
    field of its struct, while the fields of `sub` are (most of them: fields newer than 1.33 are missing; a field newer than 1.33 is neither)."""
    known = struct_fields.get(message.lower())
    if not known or name in known:
        return False
    sub_names = [n for _, n, _, _ in messages.get(sub, [])]
    present = [n for n in sub_names if n in known or n == ""]
    return bool(sub_names) and len(present) * 5 >= len(sub_names) * 4


def json_name(snake):
    snake = snake.removeprefix("r#")
    key = re.sub(r"[^a-z0-9]", "", snake.lower())
    if key in json_names:
        return json_names[key]
    parts = snake.split("_")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


ATTR = re.compile(r'#\[prost\((\w+)(?: = "([^"]*)")?, (?:(optional|repeated|required), )?(?:boxed, )?(?:packed = "\w+", )?tag = "(\d+)"\)\]')
STRUCT = re.compile(r"^pub struct (\w+) \{")
SCALARS = {"string": "Str", "bool": "Bool", "int32": "I32", "int64": "I64", "double": "F64", "bytes": "Bytes"}


def resolve(module, typ):
    """The full name of the message named by the Rust path at the end of `typ`."""
    inner = re.findall(r"((?:super::|[A-Za-z_][A-Za-z0-9_]*::)*[A-Z][A-Za-z0-9_]*)[\s,>]*$", typ.strip())
    if not inner:
        sys.exit(f"cannot read type {typ!r} in {module}")
    parts = inner[0].split("::")
    base = list(module)
    while parts and parts[0] == "super":
        base.pop()
        parts.pop(0)
    if parts and parts[0] == "crate":
        base, parts = [], parts[1:]
    return ".".join(base + parts)


messages = {}
for path in glob.glob(f"{PB}/src/**/mod.rs", recursive=True):
    module = os.path.relpath(os.path.dirname(path), f"{PB}/src").split(os.sep)
    lines = open(path).read().split("\n")
    current, attr, i = None, None, 0
    while i < len(lines):
        line = lines[i].strip()
        m = STRUCT.match(line)
        if m:
            current = ".".join(module + [m.group(1)])
            messages[current] = []
        elif line == "}":
            current = None
        elif current and line.startswith("#[prost("):
            attr = ATTR.match(line)
            if not attr:
                sys.exit(f"cannot read {line!r} in {path}")
        elif current and attr and line.startswith("pub "):
            decl = line
            while not decl.endswith(",") or decl.count("<") != decl.count(">"):
                i += 1
                decl += lines[i].strip()
            fname, typ = decl[4:].split(":", 1)
            kind, arg, label, tag = attr.groups()
            repeated = label == "repeated"
            name = json_name(fname.strip())
            if kind == "message":
                t = f'Msg("{resolve(module, typ)}")'
            elif kind == "btree_map":
                key, value = [x.strip() for x in arg.split(",")]
                if key != "string":
                    sys.exit(f"map key {key} in {current}")
                if value == "message":
                    t = f'MapMsg("{resolve(module, typ)}")'
                else:
                    t = {"string": "MapStr", "bytes": "MapBytes"}[value]
            elif kind in SCALARS:
                t = SCALARS[kind]
            else:
                sys.exit(f"unknown field kind {kind} in {current}")
            messages[current].append((int(tag), name, t, repeated))
            attr = None
        i += 1

# embedded structs, innermost first (RuleWithOperations embeds Rule and is embedded itself)
for _ in range(3):
    for m, fields in messages.items():
        for i, (tag, name, t, repeated) in enumerate(fields):
            sub = re.findall(r'^Msg\("([^"]+)"\)$', t)
            if name and sub and not repeated and inline(m, name, sub[0]):
                fields[i] = (tag, "", t, repeated)

roots = [m for m in messages if m.startswith("api.")]
roots += ["apimachinery.pkg.apis.meta.v1.DeleteOptions", "apimachinery.pkg.runtime.Unknown"]
wanted, todo = set(), list(roots)
while todo:
    m = todo.pop()
    if m in wanted:
        continue
    if m not in messages:
        sys.exit(f"message {m} not found")
    wanted.add(m)
    for _, _, t, _ in messages[m]:
        for ref in re.findall(r'"([^"]+)"', t):
            todo.append(ref)

print("// @generated by hack/gen-protobuf-schema.py from the k8s-pb 0.9 bindings (Kubernetes 1.33")
print("// protos: message names, field numbers, types) and k8s-openapi 0.29 (JSON field names). Do not edit.")
print()
print("use super::Field;")
print("use super::Type::*;")
print()
print("/// Every message the decoder knows, sorted by name.")
print("#[rustfmt::skip]")
print("pub static MESSAGES: &[(&str, &[Field])] = &[")
for m in sorted(wanted):
    fields = ", ".join(f'Field({tag}, "{name}", {t}, {"true" if rep else "false"})' for tag, name, t, rep in sorted(messages[m]))
    print(f'    ("{m}", &[{fields}]),')
print("];")
