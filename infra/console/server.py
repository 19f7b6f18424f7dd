"""The console's HTTP server: the page, its live stream, the recorded window, and actions.

    GET  /                      the page, with the newest frame inlined (first paint with data)
    GET  /static/...            its assets (shipped in this package; nothing from a CDN)
    GET  /api/stream            Server-Sent Events: one frame a second
    GET  /api/frame?at=UNIX     the frame of a moment of the recorded window (newest: no at)
    GET  /api/ticks             the window's compact per-second numbers (for the charts)
    GET  /api/traces?service=&outcome=error|ok&min_ms=&order=&before=
    GET  /api/traces/{id}       one trace's spans (the waterfall)
    GET  /api/export            the recorded window as one self-contained HTML file
    GET  /reports/{folder}/...  a drill report (html, json, charts)
    GET  /api/session           {"authenticated", "csrf"}
    POST /login, POST /logout   the admin token in, a session cookie out
    POST /api/actions/{name}    scale, rollout, promote, abort, autoscale, faults, load, drill

Viewing needs no token: the server listens on 127.0.0.1 only and answers only requests
addressed to a loopback host name (a page on another site cannot reach it through DNS
rebinding). Every action needs the admin token: either ``Authorization: Bearer <token>``
(scripts), or the session cookie a login sets (HttpOnly, SameSite=Strict) together with the
session's CSRF token in ``X-CSRF-Token`` and a same-origin ``Origin``. Errors are the
platform's ``{"error": {"code", "message"}}``: 401 without credentials, 403 with wrong ones.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel, ValidationError

from infra.console.collector import Collector
from infra.console.operations import (
    AutoscaleIn,
    ClearFaultsIn,
    DrillIn,
    FaultsIn,
    LoadIn,
    OperationRefused,
    Operations,
    ScaleIn,
    ServiceIn,
)
from infra.runtime import RuntimeFailure
from infra.runtime.kv import KVError
from infra.runtime.models import RolloutSpec
from services.common.errors import ApiError
from services.common.middleware import error_middleware
from services.common.validation import read_json, validation_error

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
COOKIE = "mesh_console"
SESSION_SECONDS = 12 * 3600
LOGIN_FAILURES_PER_MINUTE = 5
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})
EXPORT_TRACES = 60

COLLECTOR: web.AppKey[Collector] = web.AppKey("collector", Collector)
OPERATIONS: web.AppKey[Operations] = web.AppKey("operations", Operations)
GUARD: web.AppKey[Guard] = web.AppKey("guard")


@dataclass
class Session:
    csrf: str
    expires: float


@dataclass
class Guard:
    """Who may act: the admin token, sessions made from it, and failed logins."""

    token: Callable[[], str | None]
    sessions: dict[str, Session] = field(default_factory=dict)
    failures: list[float] = field(default_factory=list)

    def session(self, request: web.Request) -> Session | None:
        key = request.cookies.get(COOKIE, "")
        found = self.sessions.get(key)
        if found is None or found.expires < time.time():
            self.sessions.pop(key, None)
            return None
        return found

    def check_token(self, given: str) -> bool:
        expected = self.token()
        if not expected:
            raise ApiError(
                503, "no_admin_token", "this runtime keeps no admin token the console can read"
            )
        return hmac.compare_digest(given.strip().encode(), expected.encode())

    def login(self, given: str) -> tuple[str, Session]:
        now = time.time()
        self.failures = [t for t in self.failures if t > now - 60]
        if len(self.failures) >= LOGIN_FAILURES_PER_MINUTE:
            raise ApiError(
                429,
                "too_many_attempts",
                "too many wrong tokens in the last minute: wait, then try again",
                headers={"Retry-After": "60"},
            )
        if not given.strip():
            raise ApiError(401, "missing_admin_token", "paste the admin token to log in")
        if not self.check_token(given):
            self.failures.append(now)
            raise ApiError(403, "invalid_admin_token", "the admin token is not valid")
        key = secrets.token_urlsafe(32)
        session = self.sessions[key] = Session(secrets.token_urlsafe(24), now + SESSION_SECONDS)
        return key, session

    def require(self, request: web.Request) -> None:
        """Raise 401/403 unless the request may act."""
        header = request.headers.get("Authorization", "")
        if header:
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not self.check_token(given):
                raise ApiError(403, "invalid_admin_token", "the admin token is not valid")
            return
        session = self.session(request)
        if session is None:
            raise ApiError(
                401, "login_required", "log in with the admin token (or send it as a bearer token)"
            )
        same_origin(request)
        given = request.headers.get("X-CSRF-Token", "")
        if not hmac.compare_digest(given.encode(), session.csrf.encode()):
            raise ApiError(403, "csrf_failed", "missing or wrong X-CSRF-Token for this session")


def same_origin(request: web.Request) -> None:
    """A state-changing request must come from this origin (or name none, as curl does)."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        raise ApiError(403, "cross_site_request", "actions are refused from other sites")
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        raise ApiError(403, "cross_site_request", f"actions are refused from origin {origin}")


@web.middleware
async def loopback_host(request: web.Request, handler: Handler) -> web.StreamResponse:
    host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
    if host not in LOOPBACK_HOSTS:
        raise ApiError(
            403, "host_not_allowed", f"the console answers loopback names only, not {host}"
        )
    response = await handler(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


# -- the page ------------------------------------------------------------------------------------
def _page(boot: bytes, recorded: str | None = None, inline: bool = False) -> str:
    """index.html with the newest frame inlined; ``inline`` puts every asset in the file too
    (the export), ``recorded`` the window's frames (gzip + base64)."""
    html = (STATIC / "index.html").read_text()
    boot_json = boot.decode() if boot else "null"
    data = f'<script id="boot" type="application/json">{_script_safe(boot_json)}</script>'
    if recorded is not None:
        data += f'\n<script id="recorded" type="application/octet-stream">{recorded}</script>'
    if inline:
        css = "\n".join(
            (STATIC / p).read_text() for p in ("vendor/uplot/uPlot.min.css", "console.css")
        )
        js = "\n".join(
            _script_safe((STATIC / p).read_text())
            for p in ("vendor/uplot/uPlot.iife.min.js", "console.js")
        )
        html = html.replace("<!--STYLES-->", f"<style>{css}</style>")
        html = html.replace("<!--SCRIPTS-->", f"<script>{js}</script>")
    else:
        html = html.replace(
            "<!--STYLES-->",
            '<link rel="stylesheet" href="/static/vendor/uplot/uPlot.min.css">\n'
            '<link rel="stylesheet" href="/static/console.css">',
        )
        html = html.replace(
            "<!--SCRIPTS-->",
            '<script src="/static/vendor/uplot/uPlot.iife.min.js"></script>\n'
            '<script src="/static/console.js"></script>',
        )
    return html.replace("<!--DATA-->", data)


def _script_safe(text: str) -> str:
    return text.replace("</script", "<\\/script").replace("<!--", "<\\!--")


async def index(request: web.Request) -> web.Response:
    frame = request.app[COLLECTOR].store.at(None) or b""
    return web.Response(
        text=_page(frame),
        content_type="text/html",
        headers={"Cache-Control": "no-store"},
    )


async def stream(request: web.Request) -> web.StreamResponse:
    collector = request.app[COLLECTOR]
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    queue = collector.subscribe()
    try:
        latest = collector.store.at(None)
        if latest:
            await response.write(b"data: " + latest + b"\n\n")
        while True:
            try:
                frame = await asyncio.wait_for(queue.get(), 15.0)
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            await response.write(b"data: " + frame + b"\n\n")
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        collector.unsubscribe(queue)
    return response


def _float(request: web.Request, name: str) -> float | None:
    raw = request.query.get(name, "").strip()
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        raise ApiError(400, "bad_query", f"{name} must be a number, got {raw!r}") from None


async def frame_at(request: web.Request) -> web.Response:
    found = request.app[COLLECTOR].store.at(_float(request, "at"))
    if found is None:
        raise ApiError(503, "no_frame_yet", "the console has not read the platform yet")
    return web.Response(body=found, content_type="application/json")


async def ticks(request: web.Request) -> web.Response:
    store = request.app[COLLECTOR].store
    since = _float(request, "since")
    picked = [t for t in store.ticks if since is None or t["t"] > since]
    return web.json_response({"ticks": picked, "span": store.span})


async def traces(request: web.Request) -> web.Response:
    outcome = request.query.get("outcome") or None
    if outcome not in (None, "error", "ok"):
        raise ApiError(400, "bad_query", "outcome must be error or ok")
    found = request.app[COLLECTOR].traces.search(
        service=request.query.get("service") or None,
        outcome=outcome,
        min_ms=_float(request, "min_ms"),
        order=(request.query.get("order") or "").strip() or None,
        before=_float(request, "before"),
        limit=min(int(_float(request, "limit") or 50), 200),
    )
    return web.json_response({"traces": found})


async def trace(request: web.Request) -> web.Response:
    summary = request.app[COLLECTOR].traces.get(request.match_info["trace_id"])
    if summary is None:
        raise ApiError(404, "no_trace", "no such trace among the latest the console holds")
    return web.json_response({"trace": summary.public(), "spans": summary.span_list()})


async def export(request: web.Request) -> web.Response:
    collector = request.app[COLLECTOR]
    body = export_html(collector)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return web.Response(
        text=body,
        content_type="text/html",
        headers={"Content-Disposition": f'attachment; filename="mesh-console-{stamp}.html"'},
    )


def export_html(collector: Collector) -> str:
    """The recorded window as one HTML file: the page, its assets, every frame, and the spans
    of the latest and of the failing traces (so the waterfall opens offline too)."""
    index = collector.traces
    picked: dict[str, Any] = {}
    for trace_id in [*index.failing.values(), *reversed(list(index.traces))]:
        if len(picked) >= EXPORT_TRACES:
            break
        summary = index.get(trace_id)
        if summary is not None and trace_id not in picked:
            picked[trace_id] = {"trace": summary.public(), "spans": summary.span_list()}
    payload = {
        "frames": [json.loads(f) for f in collector.store.all_frames()],
        "traces": picked,
        "exported_at": time.time(),
    }
    packed = gzip.compress(json.dumps(payload, separators=(",", ":")).encode(), 6)
    recorded = base64.b64encode(packed).decode()
    return _page(collector.store.at(None) or b"", recorded=recorded, inline=True)


REPORT_FILES = frozenset({"report.html", "report.json", "console.html"})


async def report_file(request: web.Request) -> web.FileResponse:
    reports = request.app[OPERATIONS].drill.reports.resolve()
    folder = request.match_info["folder"]
    name = request.match_info["name"]
    path = (reports / folder / name).resolve()
    allowed = name in REPORT_FILES or (name.startswith("charts/") and name.endswith(".png"))
    if not allowed or reports not in path.parents or not path.is_file():
        raise ApiError(404, "no_report", f"no report file {folder}/{name}")
    return web.FileResponse(path)


# -- sessions ------------------------------------------------------------------------------------
async def session_info(request: web.Request) -> web.Response:
    session = request.app[GUARD].session(request)
    return web.json_response(
        {"authenticated": session is not None, "csrf": session.csrf if session else None},
        headers={"Cache-Control": "no-store"},
    )


async def login(request: web.Request) -> web.Response:
    same_origin(request)
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            raise ApiError(400, "malformed_json", "the body is not valid JSON") from None
        given = str(body.get("token", "")) if isinstance(body, dict) else ""
    else:
        form = await request.post()
        given = str(form.get("token", ""))
    key, session = request.app[GUARD].login(given)
    response = web.json_response({"authenticated": True, "csrf": session.csrf})
    response.set_cookie(
        COOKIE, key, httponly=True, samesite="Strict", max_age=SESSION_SECONDS, path="/"
    )
    return response


async def logout(request: web.Request) -> web.Response:
    same_origin(request)
    request.app[GUARD].sessions.pop(request.cookies.get(COOKIE, ""), None)
    response = web.json_response({"authenticated": False})
    response.del_cookie(COOKIE, path="/")
    return response


# -- actions -------------------------------------------------------------------------------------
Action = Callable[[Operations, Any], Awaitable[Any]]
ACTIONS: dict[str, tuple[type[BaseModel] | None, Action]] = {
    "scale": (ScaleIn, lambda ops, body: ops.scale(body)),
    "rollout": (RolloutSpec, lambda ops, body: ops.rollout(body)),
    "promote": (ServiceIn, lambda ops, body: ops.promote(body)),
    "abort": (ServiceIn, lambda ops, body: ops.abort(body)),
    "autoscale": (AutoscaleIn, lambda ops, body: ops.autoscale(body)),
    "faults": (FaultsIn, lambda ops, body: ops.set_faults(body)),
    "clear-faults": (ClearFaultsIn, lambda ops, body: ops.clear_faults(body)),
    "load": (LoadIn, lambda ops, body: ops.start_load(body)),
    "stop-load": (None, lambda ops, body: ops.stop_load()),
    "drill": (DrillIn, lambda ops, body: ops.start_drill(body)),
    "stop-drill": (None, lambda ops, body: ops.stop_drill()),
}


async def action(request: web.Request) -> web.Response:
    name = request.match_info["action"]
    if name not in ACTIONS:
        raise ApiError(404, "unknown_action", f"no action {name!r}: {', '.join(ACTIONS)}")
    request.app[GUARD].require(request)
    model, run = ACTIONS[name]
    body = None
    if model is not None:
        body = await read_json(request, model)
    try:
        result = await run(request.app[OPERATIONS], body)
    except ValidationError as exc:
        raise validation_error(exc, "body field") from None
    except (RuntimeFailure, OperationRefused, KVError) as exc:
        raise ApiError(409, "refused", str(exc)) from None
    log.info("console action %s", name, extra={"action": name})
    return web.json_response({"ok": True, "action": name, "result": result})


async def healthz(request: web.Request) -> web.Response:
    collector = request.app[COLLECTOR]
    return web.json_response(
        {"status": "ok", "frames": len(collector.store.frames), "tick_ms": collector.last_tick_ms}
    )


def build_app(
    collector: Collector, operations: Operations, token: Callable[[], str | None]
) -> web.Application:
    app = web.Application(middlewares=[error_middleware, loopback_host], client_max_size=64 * 1024)
    app[COLLECTOR] = collector
    app[OPERATIONS] = operations
    app[GUARD] = Guard(token)
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_static("/static", STATIC, show_index=False, follow_symlinks=False)
    app.router.add_get("/api/stream", stream)
    app.router.add_get("/api/frame", frame_at)
    app.router.add_get("/api/ticks", ticks)
    app.router.add_get("/api/traces", traces)
    app.router.add_get("/api/traces/{trace_id:[0-9a-f]{32}}", trace)
    app.router.add_get("/api/export", export)
    app.router.add_get("/api/session", session_info)
    app.router.add_get("/reports/{folder:[A-Za-z0-9._-]+}/{name:.+}", report_file)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_post("/api/actions/{action}", action)
    return app
