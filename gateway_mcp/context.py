"""What a model pays for a tool, kept small: compact descriptions and argument schemas.

A tool's model-visible cost is its name, description and input schema. The services' specs
are written for people reading the docs, so the gateway sends a model a compact form of
each, derived from the spec by rules that know no route:

- a description keeps its first paragraph (a tool) or its first sentence (an argument);
- JSON-schema `title`s, `examples` and `pattern`s go (the name says as much; the service
  checks a pattern and names the field that fails it), as does a nested
  `additionalProperties: false` (the service refuses unknown fields by name);
- `X | null` becomes `X` (every argument without a default is optional anyway), and a
  "(default 14)" in the description of an argument whose schema has its `default` goes;
- a sub-schema bigger than `BIG_SCHEMA_BYTES` (a union of strategies, of sizing methods)
  becomes one object whose description names its variants and where its full schema is.

Nothing is lost: the full description and input schema of every tool stay readable as the
resource `docs://tools/{name}`, which the server's instructions point to.
"""

from __future__ import annotations

import json
import re
from typing import Any

BIG_SCHEMA_BYTES = 400
DESCRIPTION_CHARS = 200
ARGUMENT_CHARS = 90
TOOL_DOCS_URI = "docs://tools/{name}"
SUMMARY_MARK = "Schema:"  # a summary's last words: "Schema: docs://tools/<name>."

_SENTENCE_END = re.compile(r"(?<!e\.g\.)(?<!i\.e\.)(?<=[.!?])\s+(?=[A-Z`(\"'])")
# Titles repeat the argument's name; examples and regular expressions are for validators
# (the service checks a pattern and names the field), not for a model choosing a value.
_DROPPED = frozenset({"title", "examples", "example", "$schema", "pattern"})
_DEFAULT_NOTE = re.compile(r"\s*\(default [^()]*\)")
_SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_ONE = ("items", "additionalProperties", "not", "contains")


def size_of(value: Any) -> int:
    """Return the size in bytes of value as compact JSON (what a model reads)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0]
    return cut.rstrip(",;:") + "…"


def first_sentence(text: str | None, limit: int = ARGUMENT_CHARS) -> str:
    """Return the first sentence of text (whitespace collapsed, at most limit characters)."""
    if not text:
        return ""
    flat = " ".join(text.split())
    return _clip(_SENTENCE_END.split(flat, maxsplit=1)[0], limit)


def first_paragraph(text: str | None, limit: int = DESCRIPTION_CHARS) -> str:
    """Return the first paragraph of text, cut at a sentence end within limit characters."""
    if not text:
        return ""
    paragraph = " ".join(text.strip().split("\n\n", 1)[0].split())
    if len(paragraph) <= limit:
        return paragraph
    kept = ""
    for sentence in _SENTENCE_END.split(paragraph):
        if len(kept) + len(sentence) + 1 > limit:
            break
        kept = f"{kept} {sentence}".strip()
    return kept or _clip(paragraph, limit)


def _variants(branches: list[Any]) -> tuple[str, list[str]] | None:
    """Return (tag property, its values) when every branch is an object with a `const` tag."""
    tags: dict[str, list[str]] = {}
    for branch in branches:
        if not isinstance(branch, dict):
            return None
        for name, prop in (branch.get("properties") or {}).items():
            if isinstance(prop, dict) and "const" in prop:
                tags.setdefault(name, []).append(str(prop["const"]))
    for name, values in tags.items():
        if len(values) == len(branches):
            return name, values
    return None


def _summary(schema: dict[str, Any], where: str) -> dict[str, Any]:
    """Return a one-object stand-in for a big sub-schema, saying where the full one is."""
    branches = schema.get("anyOf") or schema.get("oneOf") or []
    described = first_sentence(schema.get("description"))
    variants = _variants(branches) if branches else None
    parts = [described] if described else []
    if variants is not None:
        tag, values = variants
        parts.append(f"An object with `{tag}` one of: {', '.join(values)}.")
    elif schema.get("properties"):
        parts.append(f"An object with: {', '.join(schema['properties'])}.")
    parts.append(f"{SUMMARY_MARK} {where}.")
    out: dict[str, Any] = {"type": "object", "description": " ".join(parts)}
    if "default" in schema:
        out["default"] = schema["default"]
    return out


def _drop_null(schema: dict[str, Any]) -> dict[str, Any]:
    for key in ("anyOf", "oneOf"):
        branches = schema.get(key)
        if not isinstance(branches, list):
            continue
        kept = [b for b in branches if not (isinstance(b, dict) and b.get("type") == "null")]
        if len(kept) == 1 and len(kept) < len(branches) and isinstance(kept[0], dict):
            merged = {k: v for k, v in schema.items() if k != key}
            return {**kept[0], **merged}
    return schema


def inline_refs(schema: Any, root: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """Return schema with its local `$ref`s replaced by what they point to, `$defs` dropped."""
    root = schema if root is None else root
    if isinstance(schema, list):
        return [inline_refs(v, root, depth) for v in schema]
    if not isinstance(schema, dict):
        return schema
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/") and depth < 16:
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        return inline_refs({**target, **rest}, root, depth + 1)
    return {
        k: inline_refs(v, root, depth)
        for k, v in schema.items()
        if k not in ("$defs", "definitions")
    }


def compact_schema(schema: Any, where: str, *, top: bool = True) -> Any:
    """Return schema without titles and examples, descriptions cut, big parts summarised.

    where is the resource that holds the full schema (named in summaries).
    """
    if not isinstance(schema, dict):
        return schema
    if top:
        schema = inline_refs(schema)
    schema = _drop_null(schema)
    if not top and size_of(schema) > BIG_SCHEMA_BYTES:
        return _summary(schema, where)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROPPED or key.startswith("x-"):
            continue
        if key == "additionalProperties" and value is False and not top:
            continue  # the service refuses unknown fields anyway, naming them
        if key == "description":
            if "default" in schema:  # the schema says it: "(default 14)" repeats it
                value = _DEFAULT_NOTE.sub("", str(value))
            text = first_sentence(value)
            if text:
                out[key] = text
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {k: compact_schema(v, where, top=False) for k, v in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [compact_schema(v, where, top=False) for v in value]
        elif key in _SCHEMA_ONE and isinstance(value, dict):
            out[key] = compact_schema(value, where, top=False)
        elif isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
            out[key] = int(value)  # `100.0` reads as `100` at two bytes less
        else:
            out[key] = value
    return out


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Return an object schema that says it takes no argument beyond its properties."""
    if schema.get("type", "object") == "object" and "properties" in schema:
        return {**schema, "additionalProperties": False}
    return schema


def model_visible_bytes(name: str, description: str | None, input_schema: Any) -> int:
    """Return the model-visible size of one tool: name + description + input schema."""
    return size_of({"name": name, "description": description or "", "inputSchema": input_schema})


_SHARED_KEPT = frozenset({"type", "enum", "const", "items", "anyOf", "oneOf", "properties"})


def _signature(schema: Any) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


def share_descriptions(
    schemas: dict[str, dict[str, Any]],
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Describe an argument shared by several tools once: in the first tool that takes it.

    schemas maps tool name -> input schema, in the order a reader meets them. An argument
    with the same name and schema in a later tool keeps its type and choices (`enum`, the
    summary of a union) and drops its description, bounds and default: the first tool
    shows them, and the service checks them. Returns (new schemas, tool -> the tool that
    describes its shared arguments), the latter for a note in the later tool's description.
    """
    first: dict[tuple[str, str], str] = {}
    out: dict[str, dict[str, Any]] = {}
    described_in: dict[str, str] = {}
    for tool, schema in schemas.items():
        props = schema.get("properties")
        if not isinstance(props, dict):
            out[tool] = schema
            continue
        new_props: dict[str, Any] = {}
        for name, prop in props.items():
            key = (name, _signature(prop))
            owner = first.setdefault(key, tool)
            summary = isinstance(prop, dict) and SUMMARY_MARK in str(prop.get("description"))
            if owner != tool and isinstance(prop, dict) and "description" in prop and not summary:
                prop = {k: v for k, v in prop.items() if k in _SHARED_KEPT}
                described_in.setdefault(tool, owner)
            new_props[name] = prop
        out[tool] = {**schema, "properties": new_props}
    return out, described_in


def _nullable(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return False
    kind = schema.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return True
    return any(_nullable(b) for b in schema.get("anyOf", []) + schema.get("oneOf", []))


def optional_nulls(schema: Any) -> Any:
    """Return an output schema whose nullable properties are not required.

    FastMCP leaves `null` members out of a tool's structured answer, so a property that may be
    null (a profit factor without a losing trade) must be allowed to be absent as well.
    """
    if isinstance(schema, list):
        return [optional_nulls(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: optional_nulls(v) for k, v in schema.items()}
    props = schema.get("properties")
    if isinstance(props, dict) and isinstance(schema.get("required"), list):
        out["required"] = [r for r in schema["required"] if not _nullable(props.get(r))]
    return out
