"""The OpenAPI documents the platform serves, telling the truth about errors.

FastAPI documents validation failures with its own ``HTTPValidationError``; the platform answers
every error with :class:`~roomee.kit.errors.ErrorDocument`, so 422 is rewritten to it, and every
operation behind the bearer token lists 401, every one with a body 413 (and 400 ``invalid_json`` for a
JSON body), and every one 503 (starting, database down). Other statuses are listed by each route
(``responses=error_responses(...)``).
"""

from __future__ import annotations

from typing import Any

from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException
from starlette.routing import Match, Route

from roomee.kit.errors import ErrorDocument, error_responses

ERROR_REF = f"#/components/schemas/{ErrorDocument.__name__}"
_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")
MALFORMED_JSON = "A body that is not valid JSON (`invalid_json`)."
UNAVAILABLE = ("The process is starting (`starting`: `detail.waitingFor`) or its database is unreachable "
               "(`database_unavailable`); retry after `Retry-After` seconds.")
TOO_LARGE = "A body over the route's limit (`payload_too_large`; `detail.maxBytes` is the limit)."


def _also(responses: dict[str, Any], status: str, meaning: str) -> None:
    """List ``meaning`` under ``status``, beside what the route already documents there."""
    response = responses.setdefault(status, {**_error_response(int(status)), "description": ""})
    response["description"] = f"{response['description']} {meaning}".strip()


def _error_response(status: int) -> dict[str, Any]:
    description = error_responses(status)[status]["description"]
    return {"description": description, "content": {"application/json": {"schema": {"$ref": ERROR_REF}}}}


def _takes_null(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "null" or any(_takes_null(part) for part in schema.get("anyOf", ()))


def _no_null_defaults(schemas: dict[str, Any]) -> None:
    """A PATCH field that may not be null (``str = None``: absent means unchanged) is documented
    without its ``default: null``, which the field itself refuses."""
    for schema in schemas.values():
        for field in schema.get("properties", {}).values():
            if "default" in field and field["default"] is None and not _takes_null(field):
                del field["default"]


def document(title: str, version: str, routes: list, description: str | None = None) -> dict[str, Any]:
    spec = get_openapi(title=title, version=version, description=description, routes=routes)
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for name in _FASTAPI_VALIDATION_SCHEMAS:
        schemas.pop(name, None)
    _no_null_defaults(schemas)
    schemas[ErrorDocument.__name__] = ErrorDocument.model_json_schema(ref_template="#/components/schemas/{model}")
    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if "422" in responses:
                responses["422"] = _error_response(422)
            for status, response in responses.items():
                # A route listing an error status without a body schema answers the error document too.
                if status[:1] in "45" and "content" not in response:
                    response["content"] = _error_response(int(status))["content"]
            if operation.get("security"):
                responses.setdefault("401", _error_response(401))
            if "health" not in operation.get("tags", ()):  # any route, while its process starts or its database is down
                _also(responses, "503", UNAVAILABLE)
            content = operation.get("requestBody", {}).get("content", {})
            if content:  # every body is bounded (roomee.kit.limits); a JSON one may not parse
                _also(responses, "413", TOO_LARGE)
            if "application/json" in content:
                _also(responses, "400", MALFORMED_JSON)
    return spec


def allowed_methods(routes: list, scope: dict[str, Any]) -> str:
    """The ``Allow`` of a 405: the methods of the path template the URL belongs to, as the documents
    list them under that path. The template is the most literal one the URL matches (``/hotel/add``,
    not ``/hotel/{id}``) among those whose path parameters take the URL's values (``/x/{id}`` with a
    UUID id does not take ``/x/accept``), the first declared on a tie. Starlette's own lists only the
    first route's methods: ``GET`` where ``GET`` and ``PATCH`` are two routes of one path."""
    matched = []
    for route in routes:
        if not getattr(route, "methods", None) or getattr(route, "endpoint", None) is _not_allowed:
            continue
        match, child = route.matches(scope)
        if match is not Match.NONE:
            matched.append((route, _takes(route, child.get("path_params", {}))))
    candidates = [route for route, takes in matched if takes] or [route for route, _ in matched]
    if not candidates:
        return ""
    chosen = min(candidates, key=lambda route: route.path.count("{")).path  # min keeps the first of a tie
    return ", ".join(sorted({method for route, _ in matched if route.path == chosen for method in route.methods}))


def _takes(route, values: dict[str, Any]) -> bool:
    """Whether every path parameter of ``route`` validates the URL's value."""
    for field in getattr(getattr(route, "dependant", None), "path_params", ()):
        if field.name in values and field.validate(values[field.name], {}, loc=("path", field.name))[1]:
            return False
    return True


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


async def _not_allowed(_request) -> None:
    raise HTTPException(405)


def literal_path_guards(routes: list) -> list[Route]:
    """Routes answering 405 for the methods a documented path without parameters does not have, to be
    placed before every other route: such a path is a resource of its own, so ``DELETE
    /members/invitations/accept`` is a 405 (Allow: POST), not a revoke of an invitation "accept"
    through ``DELETE /members/invitations/{id}``."""
    methods: dict[str, set[str]] = {}
    for route in routes:
        if getattr(route, "methods", None) and "{" not in route.path and getattr(route, "include_in_schema", False):
            methods.setdefault(route.path, set()).update(route.methods)
    return [Route(path, _not_allowed, methods=sorted(_METHODS - allowed), include_in_schema=False)
            for path, allowed in methods.items()]
