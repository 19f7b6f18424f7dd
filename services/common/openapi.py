"""Route declarations, and the OpenAPI 3.1 document built from them and their pydantic models."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp.typedefs import Handler
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from services.common.errors import STATUS_CODES

_PATH_PARAM = re.compile(r"{(\w+)(?::[^}]*)?}")
_REF = "#/components/schemas/{model}"


@dataclass(frozen=True)
class Route:
    """One HTTP route of a service: what aiohttp serves and what the OpenAPI document says.

    ``body``, ``query`` and ``response`` are pydantic models; ``errors`` lists the error
    statuses the route can answer with beyond the ones every route has (400/413/415/422
    for routes with a body, 500). Routes with method ``*`` are never documented.
    """

    method: str
    path: str
    handler: Handler
    summary: str = ""
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    errors: Mapping[int, str] = field(default_factory=dict)
    tags: Sequence[str] = ()
    response_content_type: str = "application/json"
    # False keeps a route out of the document (a catch-all proxy route, say).
    documented: bool = True


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: list[dict[str, Any]] | None = None


class Error(BaseModel):
    """Every error answer of the platform."""

    error: ErrorDetail


def _default_errors(route: Route) -> dict[int, str]:
    errors = {500: "Unexpected error (no internals disclosed)"}
    if route.body is not None:
        errors |= {
            400: "Malformed JSON",
            413: "Body too large",
            415: "Body is not JSON",
            422: "Body does not validate",
        }
    if route.query is not None:
        errors[422] = "Query does not validate"
    if _PATH_PARAM.search(route.path):
        errors.setdefault(404, "Not found")
    return errors | dict(route.errors)


def build_openapi(
    *, title: str, version: str, description: str, routes: Sequence[Route]
) -> dict[str, Any]:
    models: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
        (Error, "serialization")
    ]
    routes = [route for route in routes if route.documented and route.method != "*"]
    for route in routes:
        for model, mode in (
            (route.body, "validation"),
            (route.query, "validation"),
            (route.response, "serialization"),
        ):
            if model is not None and (model, mode) not in models:
                models.append((model, mode))  # type: ignore[arg-type]
    refs, definitions = models_json_schema(models, ref_template=_REF)

    def ref(model: type[BaseModel], mode: str) -> dict[str, Any]:
        return dict(refs[(model, mode)])  # type: ignore[index]

    error_ref = ref(Error, "serialization")
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation: dict[str, Any] = {
            "operationId": _operation_id(route),
            "summary": route.summary,
            "responses": {},
        }
        if route.tags:
            operation["tags"] = list(route.tags)
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PATH_PARAM.findall(route.path)
        ]
        if route.query is not None:
            schema = route.query.model_json_schema(ref_template=_REF)
            required = set(schema.get("required", []))
            parameters.extend(
                {"name": name, "in": "query", "required": name in required, "schema": prop}
                for name, prop in schema.get("properties", {}).items()
            )
        if parameters:
            operation["parameters"] = parameters
        if route.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref(route.body, "validation")}},
            }
        success: dict[str, Any] = {"description": "Success"}
        if route.response is not None:
            success["content"] = {
                route.response_content_type: {"schema": ref(route.response, "serialization")}
            }
        operation["responses"][str(route.status)] = success
        for status, text in sorted(_default_errors(route).items()):
            operation["responses"][str(status)] = {
                "description": f"{text} ({STATUS_CODES.get(status, 'error')})",
                "content": {"application/json": {"schema": error_ref}},
            }
        path = _PATH_PARAM.sub(r"{\1}", route.path)
        paths.setdefault(path, {})[route.method.lower()] = operation

    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": {"schemas": definitions.get("$defs", {})},
    }


def _operation_id(route: Route) -> str:
    words = re.findall(r"[a-zA-Z0-9]+", route.path)
    return "_".join([route.method.lower(), *words]) or route.method.lower()
