"""A small JSON Schema validator for the subset constrained decoding enforces (test oracle)."""

from __future__ import annotations

import re
from typing import Any

_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def errors(value: Any, schema: Any, root: Any = None, where: str = "$") -> list[str]:
    """Why ``value`` does not match ``schema`` (empty when it does)."""
    root = schema if root is None else root
    if schema is True or schema == {}:
        return []
    if "$ref" in schema:
        target = root
        for part in schema["$ref"][2:].split("/"):
            target = target[part]
        return errors(value, target, root, where)
    if "anyOf" in schema or "oneOf" in schema:
        alts = schema.get("anyOf", schema.get("oneOf"))
        return [] if any(not errors(value, a, root, where) for a in alts) else [f"{where}: no alternative matches"]
    if "const" in schema:
        return [] if value == schema["const"] else [f"{where}: not the const"]
    if "enum" in schema:
        return [] if value in schema["enum"] else [f"{where}: {value!r} not in enum"]
    t = schema.get("type")
    if t is not None:
        names = t if isinstance(t, list) else [t]
        ok = False
        for name in names:
            if name == "integer":
                ok |= isinstance(value, int) and not isinstance(value, bool)
            elif name == "number":
                ok |= isinstance(value, (int, float)) and not isinstance(value, bool)
            else:
                ok |= isinstance(value, _TYPES[name]) and (name != "object" or isinstance(value, dict))
        if not ok:
            return [f"{where}: {value!r} is not {t}"]
    out: list[str] = []
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for r in schema.get("required", []):
            if r not in value:
                out.append(f"{where}: missing {r}")
        for k, v in value.items():
            if k in props:
                out += errors(v, props[k], root, f"{where}.{k}")
            elif props or schema.get("additionalProperties") is False:
                out.append(f"{where}: unexpected key {k}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", 1 << 30):
            out.append(f"{where}: {len(value)} items")
        for i, v in enumerate(value):
            out += errors(v, schema.get("items", {}), root, f"{where}[{i}]")
    if isinstance(value, str):
        if not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", 1 << 30):
            out.append(f"{where}: length {len(value)}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            out.append(f"{where}: {value!r} does not match {schema['pattern']}")
    return out
