"""PATCH as the API server does it: the Content-Type picks the semantics.

- ``application/strategic-merge-patch+json``: built-in kinds only; maps merge, lists whose
  items carry a merge key merge by it (containers, env, volumes, volumeMounts by ``name``;
  ports by ``containerPort``), other lists are replaced, ``null`` deletes. A custom resource
  (a ScaledObject) answers 415: no Go struct, no merge keys.
- ``application/merge-patch+json`` (RFC 7386): maps merge, every list is replaced, ``null``
  deletes.
- ``application/json-patch+json`` (RFC 6902): a list of operations (add, remove, replace,
  test) on JSON pointers.

Anything else (server-side apply included, which the runtime never sends) is refused with
415 here, so a change of content type in the runtime cannot go unnoticed.
"""

from __future__ import annotations

import copy
from typing import Any

STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
CUSTOM_ACCEPTS = f"{JSON_PATCH}, {MERGE}, application/apply-patch+yaml"
BUILTIN_ACCEPTS = f"{CUSTOM_ACCEPTS}, {STRATEGIC}"
MERGE_KEYS = {"containerPort": ("ports",), "name": ()}  # which key identifies a list item


class PatchError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def _merge_key(items: list[Any]) -> str | None:
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    for key in ("name", "containerPort"):
        if all(key in i for i in items):
            return key
    return None


def strategic_merge(target: Any, patch: Any) -> Any:
    if isinstance(target, dict) and isinstance(patch, dict):
        out = dict(target)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = strategic_merge(out.get(key), value)
        return out
    if isinstance(target, list) and isinstance(patch, list):
        key = _merge_key(target + patch)
        if key is not None:
            out_list = [dict(i) for i in target]
            for item in patch:
                index = next((n for n, i in enumerate(out_list) if i[key] == item[key]), None)
                if index is None:
                    out_list.append(copy.deepcopy(item))
                else:
                    out_list[index] = strategic_merge(out_list[index], item)
            return out_list
    return copy.deepcopy(patch)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(422, "Invalid", f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902: add, remove, replace, test (move and copy are never sent here)."""
    if not isinstance(operations, list):
        raise PatchError(400, "BadRequest", "a JSON patch must be a list of operations")
    doc = copy.deepcopy(target)
    for op in operations:
        parts = _pointer(op.get("path", ""))
        if not parts:
            raise PatchError(422, "Invalid", "a JSON patch may not replace the whole object")
        parent: Any = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent.get(part)
            if parent is None:
                raise PatchError(422, "Invalid", f"doc is missing path: {op['path']}")
        last = parts[-1]
        kind = op.get("op")
        if kind == "test":
            value = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if value != op.get("value"):
                raise PatchError(422, "Invalid", f"testing value {op['path']} failed")
        elif kind in ("add", "replace"):
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                if kind == "add":
                    parent.insert(index, op["value"])
                else:
                    parent[index] = op["value"]
            else:
                if kind == "replace" and last not in parent:
                    raise PatchError(422, "Invalid", f"replace operation does not apply: {last}")
                parent[last] = op["value"]
        elif kind == "remove":
            if isinstance(parent, list):
                del parent[int(last)]
            elif last in parent:
                del parent[last]
            else:
                raise PatchError(422, "Invalid", f"remove operation does not apply: {last}")
        else:
            raise PatchError(422, "Invalid", f"unsupported JSON patch operation {kind!r}")
    return doc


def apply_patch(target: Any, body: Any, content_type: str, *, custom: bool = False) -> Any:
    """``target`` patched as the API server would for this Content-Type, or PatchError."""
    kind = content_type.split(";")[0].strip().lower()
    if kind == STRATEGIC and not custom:
        return strategic_merge(target, body)
    if kind == MERGE:
        return merge_patch(target, body)
    if kind == JSON_PATCH:
        return json_patch(target, body)
    accepts = CUSTOM_ACCEPTS if custom else BUILTIN_ACCEPTS
    raise PatchError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: "
        f"{accepts}",
    )
