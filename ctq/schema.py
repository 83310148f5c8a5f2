"""The JSON Schema of ``grid.yaml`` (``ctq schema``) and the list of its keys (docs/grid-yaml.md).

Both come from the pydantic models that validate the file (:class:`ctq.config.Grid` and its
sections), so the keys, the enumerations and the value limits an editor is told are the ones
``ctq train`` applies. ``ctq train`` checks more than a schema can say: the rules between keys that
give the schema's anyOf/oneOf only in part (a metric that needs a task, momentum without an
optimizer that uses it, ``encoding: index`` only with keras_json models...) and the keras_json files.
"""

from __future__ import annotations

import copy

from ctq.config import grid_json_schema, resolve_node


def grid_schema() -> dict:
    """The JSON Schema (draft 2020-12) of grid.yaml, as a new dict."""
    return copy.deepcopy(grid_json_schema())


def keys() -> list[tuple[str, str, dict]]:
    """Every key of grid.yaml as (the path of its mapping, such as ``"models[].layers[]."``; the key;
    the schema of its value, null left out): a mapping's keys in the file's order, then the mappings
    inside them, depth first."""
    schema = grid_schema()
    defs = schema.get("$defs", {})
    out: list[tuple[str, str, dict]] = []

    def visit(prefix: str, node: dict) -> None:
        values = {key: resolve_node(value, defs) for key, value in resolve_node(node, defs)["properties"].items()}
        out.extend((prefix, key, value) for key, value in values.items())
        for key, value in values.items():
            for path, mapping in _mappings(f"{prefix}{key}", value, defs):
                visit(path, mapping)

    visit("", schema)
    return out


def _mappings(path: str, node: dict, defs: dict) -> list[tuple[str, dict]]:
    """The mappings a value at ``path`` may hold (itself, its list's items, a union's branches)."""
    node = resolve_node(node, defs)
    if "properties" in node:
        return [(f"{path}.", node)]
    if "items" in node:
        return _mappings(f"{path}[]", node["items"], defs)
    branches = node.get("oneOf", []) + node.get("anyOf", [])
    return [found for branch in branches for found in _mappings(path, branch, defs)]
