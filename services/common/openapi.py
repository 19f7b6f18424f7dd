"""Route declarations, and the OpenAPI 3.1 document built from them and their pydantic models.

The document is meant to be the whole truth of a service's HTTP answers: every status a route
can give (the kit's own included: 400/413/415/422 for a body, 422 for a query, 404 for a path
parameter, 503 while Redis is away, 500), the JSON error envelope on each, the 422's field
``details``, the headers each answer carries (``X-Request-Id`` always, ``Retry-After`` on a
503) and the security a route needs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from aiohttp.typedefs import Handler
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from services.common.errors import STATUS_CODES

_PATH_PARAM = re.compile(r"{(\w+)(?::[^}]*)?}")
_REF = "#/components/schemas/{model}"


def _string() -> dict[str, Any]:
    return {"type": "string"}


@dataclass(frozen=True)
class Header:
    """A header a route reads (``Route.request_headers``) or sends with an answer."""

    name: str
    description: str
    required: bool = False
    schema: Mapping[str, Any] = field(default_factory=_string)

    def as_parameter(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "in": "header",
            "description": self.description,
            "required": self.required,
            "schema": dict(self.schema),
        }

    def as_response_header(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "required": self.required,
            "schema": dict(self.schema),
        }


@dataclass(frozen=True)
class Answer:
    """An error answer of a route: what it means and the headers it carries."""

    description: str
    headers: Sequence[Header] = ()


REQUEST_ID = Header(
    "X-Request-Id",
    "The request's id (the caller's X-Request-Id if it was safe to echo): in every log line "
    "and span of the request",
    required=True,
    schema={"type": "string", "pattern": r"^[A-Za-z0-9._:@/+=-]{1,128}$"},
)
RETRY_AFTER = Header(
    "Retry-After",
    "Seconds to wait before trying again",
    required=True,
    schema={"type": "string", "pattern": r"^[0-9]{1,6}$"},
)
UNAVAILABLE = Answer("A dependency (Redis) is unreachable; try again", (RETRY_AFTER,))

# Security schemes a route may name in ``Route.auth`` (any one of them is enough).
SECURITY_SCHEMES: Mapping[str, dict[str, Any]] = {
    "adminBearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "Authorization: Bearer <admin token>",
    },
    "adminHeader": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Admin-Token",
        "description": "The admin token in X-Admin-Token (same token as the bearer scheme)",
    },
}


@dataclass(frozen=True)
class Route:
    """One HTTP route of a service: what aiohttp serves and what the OpenAPI document says.

    ``body``, ``query`` and ``response`` are pydantic models; ``errors`` lists the error
    statuses the route can answer with beyond the ones the kit adds (400/413/415/422 for
    routes with a body, 422 for a query, 404 for a path parameter, 503 while Redis is away
    unless ``uses_redis`` is false, 500). ``headers`` are the success answer's headers,
    ``request_headers`` the ones the route reads, ``auth`` the security schemes of
    :data:`SECURITY_SCHEMES` it accepts (401/403 are added), ``links`` OpenAPI link objects
    from the success answer to other operations. Routes with method ``*`` are never
    documented.
    """

    method: str
    path: str
    handler: Handler
    summary: str = ""
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    errors: Mapping[int, str | Answer] = field(default_factory=dict)
    tags: Sequence[str] = ()
    response_content_type: str = "application/json"
    headers: Sequence[Header] = ()
    request_headers: Sequence[Header] = ()
    auth: Sequence[str] = ()
    links: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    uses_redis: bool = True
    # False keeps a route out of the document (a catch-all proxy route, say).
    documented: bool = True


class FieldError(BaseModel):
    field: str = Field(description="the field, parameter or header at fault (a.b.0.c)")
    message: str
    type: str = Field(description="machine-readable kind, e.g. missing, too_short, unknown_sku")


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable, e.g. not_found, rate_limited")
    message: str = Field(description="what is wrong, for a person")
    details: list[FieldError] | None = None


class Error(BaseModel):
    """Every error answer of the platform."""

    error: ErrorDetail


class InvalidDetail(BaseModel):
    code: str
    message: str
    details: Annotated[list[FieldError], Field(min_length=1, description="every field at fault")]


class Invalid(BaseModel):
    """A 422: the request is well formed but some fields are not acceptable; each is named."""

    error: InvalidDetail


def _default_errors(route: Route) -> dict[int, str | Answer]:
    errors: dict[int, str | Answer] = {500: "Unexpected error (no internals disclosed)"}
    if route.uses_redis:
        errors[503] = UNAVAILABLE
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
    if route.auth:
        errors |= {401: "No admin token sent", 403: "Wrong admin token"}
    return errors | dict(route.errors)


def build_openapi(
    *, title: str, version: str, description: str, routes: Sequence[Route]
) -> dict[str, Any]:
    models: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
        (Error, "serialization"),
        (Invalid, "serialization"),
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

    error_ref, invalid_ref = ref(Error, "serialization"), ref(Invalid, "serialization")
    schemes: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation: dict[str, Any] = {
            "operationId": operation_id(route.method, route.path),
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
        parameters.extend(header.as_parameter() for header in route.request_headers)
        if parameters:
            operation["parameters"] = parameters
        if route.auth:
            unknown = set(route.auth) - set(SECURITY_SCHEMES)
            if unknown:
                raise ValueError(f"{route.method} {route.path}: unknown security {unknown}")
            operation["security"] = [{name: []} for name in route.auth]
            schemes |= {name: SECURITY_SCHEMES[name] for name in route.auth}
        if route.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref(route.body, "validation")}},
            }
        success: dict[str, Any] = {
            "description": "Success",
            "headers": _headers([REQUEST_ID, *route.headers]),
        }
        if route.response is not None:
            success["content"] = {
                route.response_content_type: {"schema": ref(route.response, "serialization")}
            }
        if route.links:
            success["links"] = {name: dict(link) for name, link in route.links.items()}
        operation["responses"][str(route.status)] = success
        for status, answer in sorted(_default_errors(route).items()):
            if isinstance(answer, str):
                answer = Answer(answer)
            operation["responses"][str(status)] = {
                "description": f"{answer.description} ({STATUS_CODES.get(status, 'error')})",
                "headers": _headers([REQUEST_ID, *answer.headers]),
                "content": {
                    "application/json": {"schema": invalid_ref if status == 422 else error_ref}
                },
            }
        path = _PATH_PARAM.sub(r"{\1}", route.path)
        paths.setdefault(path, {})[route.method.lower()] = operation

    components: dict[str, Any] = {"schemas": definitions.get("$defs", {})}
    if schemes:
        components["securitySchemes"] = schemes
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": components,
    }


def _headers(headers: Sequence[Header]) -> dict[str, Any]:
    return {header.name: header.as_response_header() for header in headers}


def operation_id(method: str, path: str) -> str:
    """``GET /orders/{id}`` -> ``get_orders_id``: what ``Route.links`` refer to."""
    words = re.findall(r"[a-zA-Z0-9]+", path)
    return "_".join([method.lower(), *words]) or method.lower()
