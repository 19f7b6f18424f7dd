"""Reading client input into pydantic models, with the right 4xx for every way it can be wrong."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, BeforeValidator, ValidationError

from services.common.errors import ApiError

M = TypeVar("M", bound=BaseModel)


def _integral(value: Any) -> Any:
    # JSON has one number type: 7.0 is the integer 7 to JSON Schema, so the document's
    # "integer" accepts it and so must we. Strings and booleans still fail (strict models).
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# An int field of a strict model takes integers as JSON Schema means them (7 or 7.0, never
# "7" or true): ``Annotated[int, Field(ge=1), INTEGRAL]``. It goes after the constraints, or
# pydantic leaves them out of the JSON schema.
INTEGRAL = BeforeValidator(_integral)


def _field_name(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "body"


def validation_error(exc: ValidationError, where: str) -> ApiError:
    """422 naming the first bad field in the message and every one in ``details``."""
    details = [
        {"field": _field_name(err["loc"]), "message": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]
    first = details[0]
    more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
    return ApiError(
        422,
        "validation_error",
        f"{where} {first['field']}: {first['message']}{more}",
        details=details,
    )


async def read_json(request: web.Request, model: type[M]) -> M:
    """The request body as ``model``: 415 unless JSON, 413 when too large, 400 when it does
    not parse, 422 naming the field when it does not validate."""
    content_type = request.content_type
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise ApiError(
            415, "unsupported_media_type", "the body must be JSON (Content-Type: application/json)"
        )
    raw = await request.read()  # raises HTTPRequestEntityTooLarge past client_max_size
    try:
        data: Any = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, "body field") from None


def read_query(request: web.Request, model: type[M]) -> M:
    """Query parameters as ``model`` (422 naming the parameter when they do not validate)."""
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise validation_error(exc, "query parameter") from None
