"""The public API's OpenAPI document, built from the routed services' own documents.

Each routed service describes itself (``/openapi.json`` on every instance, from the kit). The
gateway reads that document from one instance of each version it finds in discovery, keeps
the paths its route table publishes (rewritten to the public prefix, only the methods the
route allows), and adds what the gateway itself does on every operation: the ``X-API-Key``
scheme, its own answers (401, 403, 404, 405, 413, 429, 502, 503, 504, with their headers) and
headers (``X-Mesh-Upstream-Version``, ``X-Mesh-Version``, ``Idempotency-Key``).

All of it happens off the request path: a task wakes on discovery's changes, fetches what
it has not read yet, rebuilds, and keeps the serialized document; ``GET /openapi.json`` sends
those bytes. While the versions of a service disagree (a rollout in progress), the document
follows the version with the largest traffic weight, else the most instances, else the
newest, and says so in ``info`` and ``x-mesh-sources``.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from gateway.discovery import Discovery
from gateway.routes import SAFE_METHODS, Route, RouteTable
from services.common.backoff import Backoff, sleep_unless
from services.common.openapi import REQUEST_ID, RETRY_AFTER, Error, Header

log = logging.getLogger(__name__)

SCHEMA_PREFIX = "#/components/schemas/"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
API_KEY_SCHEME = "apiKey"
FETCH_TIMEOUT = 2.0

UPSTREAM_VERSION = Header(
    "X-Mesh-Upstream-Version",
    "The version of the instance that answered",
    required=True,
    schema={"type": "string", "pattern": r"^v\d{1,4}$"},
)
ALLOW = Header("Allow", "The methods this path accepts", required=True, schema={"type": "string"})
IDEMPOTENCY = (
    "The gateway retries a request that carries an Idempotency-Key on another instance when "
    "the first one fails mid-way (without it, only GET is retried)"
)


@dataclass(frozen=True)
class GatewayAnswer:
    description: str
    headers: tuple[Header, ...] = ()


def gateway_answers(route: Route) -> dict[int, GatewayAnswer]:
    """What the gateway itself can answer on any operation of ``route``."""
    answers = {
        400: GatewayAnswer(
            "Refused by the gateway: a path with dot segments or encoded slashes, or an "
            "X-Mesh-Version that does not look like v2"
        ),
        401: GatewayAnswer("No X-API-Key header"),
        403: GatewayAnswer("The X-API-Key is not valid"),
        404: GatewayAnswer("No route for this path"),
        405: GatewayAnswer("The route does not accept this method", (ALLOW,)),
        413: GatewayAnswer("The body is over the gateway's limit (MAX_BODY_BYTES)"),
        429: GatewayAnswer("Too many requests for this API key", (RETRY_AFTER,)),
        502: GatewayAnswer(
            f"The {route.service} instance failed to answer (connection refused or dropped)",
            (UPSTREAM_VERSION, RETRY_AFTER),
        ),
        503: GatewayAnswer(
            f"No healthy instance of {route.service} (of the pinned version) can serve",
            (RETRY_AFTER,),
        ),
    }
    if route.timeout is not None:
        answers[504] = GatewayAnswer(
            f"The {route.service} instance did not answer within {route.timeout:g}s",
            (UPSTREAM_VERSION, RETRY_AFTER),
        )
    return answers


@dataclass
class VersionSeen:
    instances: int
    weight: int | None
    digest: str | None  # of the document, None until read


@dataclass
class Source:
    """What the document of one service is built from."""

    service: str
    versions: dict[str, VersionSeen] = field(default_factory=dict)
    follows: str | None = None
    document: dict[str, Any] | None = None
    reason: str = ""

    @property
    def agree(self) -> bool:
        return len({v.digest for v in self.versions.values() if v.digest}) <= 1

    def to_json(self) -> dict[str, Any]:
        return {
            "follows": self.follows,
            "why": self.reason,
            "versions_agree": self.agree,
            "versions": {
                name: {"instances": v.instances, "weight": v.weight, "document": v.digest}
                for name, v in sorted(self.versions.items())
            },
        }


def digest(document: Mapping[str, Any]) -> str:
    """Of a document without its ``info`` (a version number alone is no disagreement)."""
    body = {k: v for k, v in document.items() if k != "info"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _version_number(version: str) -> int:
    return int(version[1:]) if version[1:].isdigit() else -1


def choose_version(versions: Mapping[str, VersionSeen]) -> tuple[str | None, str]:
    """The version a document follows among those read, and why."""
    readable = {name: v for name, v in versions.items() if v.digest}
    if not readable:
        return None, "no document read yet"
    if len(readable) == 1:
        return next(iter(readable)), "the only version serving"

    def rank(name: str) -> tuple[int, int, int]:
        seen = readable[name]
        return (seen.weight or 0, seen.instances, _version_number(name))

    best = max(readable, key=rank)
    if any(v.weight for v in readable.values()):
        why = "the largest traffic weight"
    elif len({v.instances for v in readable.values()}) > 1:
        why = "the most instances"
    else:
        why = "the newest version"
    return best, why


# --- building the document -------------------------------------------------------------------


def _walk_refs(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(SCHEMA_PREFIX):
            yield ref[len(SCHEMA_PREFIX) :]
        for value in node.values():
            yield from _walk_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk_refs(value)


def _closure(names: Iterable[str], schemas: Mapping[str, Any]) -> list[str]:
    """``names`` and every schema they reference, in a stable order."""
    seen: list[str] = []
    todo = list(names)
    while todo:
        name = todo.pop(0)
        if name in seen or name not in schemas:
            continue
        seen.append(name)
        todo.extend(_walk_refs(schemas[name]))
    return seen


def _rename_refs(node: Any, names: Mapping[str, str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(SCHEMA_PREFIX):
                name = value[len(SCHEMA_PREFIX) :]
                out[key] = SCHEMA_PREFIX + names.get(name, name)
            else:
                out[key] = _rename_refs(value, names)
        return out
    if isinstance(node, list):
        return [_rename_refs(value, names) for value in node]
    return node


def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"({[^}]+})", template)
    pattern = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(f"^{pattern}$")


def _header_objects(headers: Iterable[Header]) -> dict[str, Any]:
    return {h.name: h.as_response_header() for h in headers}


class _Builder:
    """One build of the public document."""

    def __init__(self, table: RouteTable, title: str, version: str) -> None:
        self.table = table
        self.title = title
        self.version = version
        self.paths: dict[str, dict[str, Any]] = {}
        self.schemas: dict[str, Any] = {}
        self.fingerprints: dict[str, str] = {}
        self.schemes: dict[str, Any] = {
            API_KEY_SCHEME: {
                "type": "apiKey",
                "in": "header",
                "name": "X-API-Key",
                "description": "The key `make up` and `meshctl status --json` print",
            }
        }
        self.operation_ids: set[str] = set()
        error_schema = Error.model_json_schema(ref_template=SCHEMA_PREFIX + "{model}")
        defs = error_schema.pop("$defs", {})
        names = self._add_schemas("gateway", {"Error": error_schema, **defs}, ["Error"])
        self.error_ref = SCHEMA_PREFIX + names["Error"]

    # schemas: a name is shared when the schema (and all it references) is the same
    def _add_schemas(
        self, owner: str, schemas: Mapping[str, Any], wanted: Iterable[str]
    ) -> dict[str, str]:
        """Add ``wanted`` (and what it references); returns their names here."""
        names = _closure(wanted, schemas)
        fingerprints = {
            name: json.dumps([schemas[n] for n in _closure([name], schemas)], sort_keys=True)
            for name in names
        }
        mapping: dict[str, str] = {}
        for name in names:
            final = name
            if final in self.fingerprints and self.fingerprints[final] != fingerprints[name]:
                final = owner.title().replace("-", "") + name
                n = 2
                while final in self.fingerprints and self.fingerprints[final] != fingerprints[name]:
                    final, n = f"{owner.title()}{name}{n}", n + 1
            mapping[name] = final
        for name in names:
            final = mapping[name]
            if final not in self.schemas:
                self.schemas[final] = _rename_refs(schemas[name], mapping)
                self.fingerprints[final] = fingerprints[name]
        return mapping

    def add_service(self, source: Source) -> None:
        document = source.document
        if document is None:
            return
        routes = [r for r in self.table.routes if r.service == source.service]
        chosen: list[tuple[Route, str, str, dict[str, Any]]] = []
        for path, item in sorted(document.get("paths", {}).items()):
            for route in routes:
                if not (path == route.upstream or path.startswith(route.upstream + "/")):
                    continue
                public = route.prefix + path[len(route.upstream) :]
                if self.table.match(public) is not route:
                    continue  # a longer prefix (another route) publishes it
                for method in METHODS:
                    if method in item and method.upper() in route.methods:
                        chosen.append((route, public, method, item[method]))
        if not chosen:
            return
        schemas = document.get("components", {}).get("schemas", {})
        mapping = self._add_schemas(
            source.service, schemas, [name for _, _, _, op in chosen for name in _walk_refs(op)]
        )
        ids: dict[str, str] = {}
        for _, _, _, op in chosen:
            old = op.get("operationId")
            if isinstance(old, str):
                new = old if old not in self.operation_ids else f"{source.service}_{old}"
                ids[old] = new
                self.operation_ids.add(new)
        theirs = document.get("components", {}).get("securitySchemes", {})
        for route, public, method, raw in chosen:
            op = _rename_refs(copy.deepcopy(raw), mapping)
            self.paths.setdefault(public, {})[method] = self._operation(
                route, method, op, ids, source, theirs
            )

    def _operation(
        self,
        route: Route,
        method: str,
        op: dict[str, Any],
        ids: Mapping[str, str],
        source: Source,
        their_schemes: Mapping[str, Any],
    ) -> dict[str, Any]:
        if isinstance(op.get("operationId"), str):
            op["operationId"] = ids[op["operationId"]]
        op["tags"] = [route.service]
        if source.follows:
            op["x-mesh-upstream"] = {"service": route.service, "version": source.follows}
        # The gateway checks X-API-Key; whatever the service asks for comes on top of it.
        security = op.pop("security", None)
        if security:
            op["security"] = [{API_KEY_SCHEME: [], **req} for req in security]
            for req in security:
                for name in req:
                    if name in their_schemes:
                        self.schemes.setdefault(name, their_schemes[name])
        params = [p for p in op.get("parameters", []) if p.get("name") != "X-Mesh-Version"]
        params.append(self._version_parameter(source))
        if method.upper() not in SAFE_METHODS:
            declared = next((p for p in params if p.get("name") == "Idempotency-Key"), None)
            if declared is None:
                params.append(Header("Idempotency-Key", IDEMPOTENCY).as_parameter())
            else:
                declared["description"] = f"{declared.get('description', '')}. {IDEMPOTENCY}"
        op["parameters"] = params
        for response in op.get("responses", {}).values():
            for link in response.get("links", {}).values():
                if isinstance(link.get("operationId"), str):
                    link["operationId"] = ids.get(link["operationId"], link["operationId"])
        op["responses"] = self._responses(route, op.get("responses", {}))
        return op

    def _version_parameter(self, source: Source) -> dict[str, Any]:
        serving = sorted(source.versions, key=_version_number)
        schema: dict[str, Any] = {"type": "string", "pattern": r"^v\d{1,4}$"}
        if serving:
            schema["enum"] = serving
        return Header(
            "X-Mesh-Version",
            "Pin the version that answers (to test a canary): one of the versions serving "
            "right now. A version with no healthy instance is a 503",
            schema=schema,
        ).as_parameter()

    def _responses(self, route: Route, theirs: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, response in theirs.items():
            headers = dict(response.get("headers", {}))
            headers[UPSTREAM_VERSION.name] = UPSTREAM_VERSION.as_response_header()
            out[key] = {**response, "headers": headers}
        for status, answer in gateway_answers(route).items():
            ours = {
                "description": f"{answer.description} (from the gateway)",
                "headers": _header_objects([REQUEST_ID, *answer.headers]),
                "content": {"application/json": {"schema": {"$ref": self.error_ref}}},
            }
            key = str(status)
            out[key] = _either(out[key], ours) if key in out else ours
        return dict(sorted(out.items()))

    def document(self, sources: Mapping[str, Source]) -> dict[str, Any]:
        for name in sorted(sources):
            self.add_service(sources[name])
        return {
            "openapi": "3.1.0",
            "info": {
                "title": self.title,
                "version": self.version,
                "description": _description(sources),
            },
            "tags": [
                {"name": name, "description": _tag_description(sources[name])}
                for name in sorted(sources)
            ],
            "security": [{API_KEY_SCHEME: []}],
            "paths": dict(sorted(self.paths.items())),
            "components": {
                "schemas": dict(sorted(self.schemas.items())),
                "securitySchemes": self.schemes,
            },
            "x-mesh-sources": {name: sources[name].to_json() for name in sorted(sources)},
        }


def _either(service: dict[str, Any], gateway: dict[str, Any]) -> dict[str, Any]:
    """One status both the service and the gateway can answer: both descriptions, the
    headers of either (required only when both always send them), either body."""
    headers: dict[str, Any] = {}
    for name in {**service.get("headers", {}), **gateway.get("headers", {})}:
        a, b = service.get("headers", {}).get(name), gateway.get("headers", {}).get(name)
        header = dict(a or b)
        header["required"] = bool(a and b and a.get("required") and b.get("required"))
        headers[name] = header
    content = dict(service.get("content", {}))
    for media, theirs in gateway.get("content", {}).items():
        mine = content.get(media)
        if mine is None:
            content[media] = theirs
        elif mine != theirs:
            content[media] = {"schema": {"oneOf": [mine["schema"], theirs["schema"]]}}
    return {
        "description": f"{service.get('description', '')}; or: {gateway['description']}",
        "headers": headers,
        "content": content,
        **({"links": service["links"]} if "links" in service else {}),
    }


def _description(sources: Mapping[str, Source]) -> str:
    lines = [
        "The shop's public API, through its gateway. Send your API key in `X-API-Key` "
        "(the key `make up` prints). Errors are always "
        '`{"error": {"code": "...", "message": "..."}}` (a 422 names each field in '
        "`details`); 429 and 503 say when to try again in `Retry-After`. Every answer an "
        "instance gave carries `X-Mesh-Upstream-Version`; `X-Mesh-Version: v2` pins a version.",
        "",
        "Built from each routed service's own document:",
    ]
    for name in sorted(sources):
        source = sources[name]
        if source.follows is None:
            lines.append(f"- **{name}**: no document yet (no healthy instance has answered)")
            continue
        versions = ", ".join(sorted(source.versions, key=_version_number)) or "none now"
        line = f"- **{name}**: follows {source.follows} ({source.reason}); serving: {versions}"
        if not source.agree:
            line += " — the versions' documents DISAGREE (a rollout in progress)"
        lines.append(line)
    return "\n".join(lines)


def _tag_description(source: Source) -> str:
    if source.document is None:
        return "no document yet"
    text = source.document.get("info", {}).get("description") or source.service
    return f"{text} (version {source.follows})"


def build_public(
    table: RouteTable, sources: Mapping[str, Source], *, title: str, version: str
) -> dict[str, Any]:
    return _Builder(table, title, version).document(sources)


def allowed_methods(document: Mapping[str, Any]) -> list[tuple[re.Pattern[str], str]]:
    """(path regex, ``Allow`` value) of every public path, most specific first."""
    out = []
    for template, item in document.get("paths", {}).items():
        methods = sorted(m.upper() for m in item if m in METHODS)
        out.append((template.count("{"), _template_regex(template), ", ".join(methods)))
    out.sort(key=lambda entry: entry[0])
    return [(regex, allow) for _, regex, allow in out]


# --- keeping it current ----------------------------------------------------------------------


class Contract:
    """The public document, rebuilt whenever discovery changes and served from memory."""

    def __init__(self, table: RouteTable, discovery: Discovery, *, title: str, version: str):
        self.table = table
        self.discovery = discovery
        self.title = title
        self.version = version
        self.documents: dict[tuple[str, str], dict[str, Any]] = {}
        self.last: dict[str, str] = {}  # service -> the version followed last
        self.body = b""
        self.document: dict[str, Any] = {}
        self._allow: list[tuple[re.Pattern[str], str]] = []
        self._changed = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.rebuild()

    def start(self) -> None:
        self.discovery.listeners.append(self._changed.set)
        self._changed.set()
        self._task = asyncio.create_task(self._run(), name="public-openapi")

    async def stop(self) -> None:
        self._stop.set()
        self._changed.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    def allow(self, path: str) -> str | None:
        """The ``Allow`` value of a public path, when the document knows the path."""
        for regex, allow in self._allow:
            if regex.match(path):
                return allow
        return None

    def sources(self) -> dict[str, Source]:
        out = {}
        for name in self.table.services:
            pool = self.discovery.pools[name]
            weights = self.discovery.weights.get(name) or {}
            source = Source(name)
            for version, count in pool.versions().items():
                doc = self.documents.get((name, version))
                source.versions[version] = VersionSeen(
                    count, weights.get(version), digest(doc) if doc else None
                )
            follows, reason = choose_version(source.versions)
            if follows is None and name in self.last:
                follows = self.last[name]
                reason = "no instance serving now: the last version read"
            if follows is not None:
                source.follows, source.reason = follows, reason
                source.document = self.documents[(name, follows)]
                self.last[name] = follows
            out[name] = source
        return out

    def rebuild(self) -> None:
        document = build_public(self.table, self.sources(), title=self.title, version=self.version)
        if document != self.document:
            self.document = document
            self.body = json.dumps(document).encode()
            self._allow = allowed_methods(document)

    async def _run(self) -> None:
        backoff = Backoff(base=0.5, cap=10.0)
        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not self._stop.is_set():
                await self._changed.wait()
                self._changed.clear()
                if self._stop.is_set():
                    return
                missing = await self._fetch_missing(session)
                self.rebuild()
                if missing:
                    # Try again soon even if discovery stays quiet.
                    if await sleep_unless(self._stop, backoff.next()):
                        return
                    self._changed.set()
                else:
                    backoff.reset()

    async def _fetch_missing(self, session: aiohttp.ClientSession) -> bool:
        """Read the document of every (service, version) not read yet; True if one failed."""
        failed = False
        for name in self.table.services:
            by_version: dict[str, list[tuple[str, int]]] = {}
            for instance in self.discovery.pools[name].instances.values():
                by_version.setdefault(instance.version, []).append(
                    (instance.address, instance.port)
                )
            for version, addresses in sorted(by_version.items()):
                if (name, version) in self.documents:
                    continue
                document = await _fetch(session, name, version, addresses)
                if document is None:
                    failed = True
                else:
                    self.documents[(name, version)] = document
        return failed


async def _fetch(
    session: aiohttp.ClientSession, name: str, version: str, addresses: list[tuple[str, int]]
) -> dict[str, Any] | None:
    for address, port in addresses:
        url = f"http://{address}:{port}/openapi.json"
        try:
            async with session.get(url) as response:
                if response.status == 200:
                    document = await response.json()
                    if isinstance(document, dict) and isinstance(document.get("paths"), dict):
                        log.info("read the document", extra={"upstream": name, "version": version})
                        return document
                log.warning("no document at %s: %s", url, response.status)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("no document at %s: %s", url, exc)
    return None
