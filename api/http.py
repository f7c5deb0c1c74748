"""What every router of the HTTP API shares: the caller's API key, bounded request bodies,
early JSON refusals, and the dashboard's Redis client with the reason told when it is down.

A router imports these from here and nowhere else (`live.redis` owns the client itself).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import Message

from auth import permissions
from auth.keys import ApiKey
from core.settings import Settings, get_settings
from live.redis import redis_client, redis_reason

__all__ = [
    "KEEP_ALIVE_S",
    "ApiKeyDep",
    "BodyTooLarge",
    "Refusal",
    "Router",
    "SettingsDep",
    "invalid_query",
    "limited",
    "read_body",
    "redis_client",
    "redis_reason",
    "refusal_handler",
    "require_api_key",
    "settings",
]


KEEP_ALIVE_S = 75
"""How long uvicorn keeps an idle client connection open (its default is 5 s). A client that
reuses a connection the server is closing at that instant gets no answer ("Server disconnected
without sending a response"): httpx keeps idle connections 5 s too, so with the two timers equal
a gate's or a test's request after a 5 s pause raced the close (seen once in CI, on the 26th
request of one connection). The server must outlast its clients' idle timers, as nginx (75 s)
does; HAProxy in front (`ops.balancer`) closes its own idle client connections after 10 s."""


@dataclass
class Router:
    """One resource's routes, declared next to their handlers (`@router.get(path, ...)`,
    `@router.post`, `@router.websocket`, or `router.add_api_route` in a loop) and added to the
    app, in that order, by `api.registry.register`. Keyword arguments are FastAPI's
    (`add_api_route`); `tags` and `include_in_schema` given here apply to every route.

    Not FastAPI's `APIRouter`: `include_router` (FastAPI 0.165) mounts a router as one lazy
    entry, and the permission middleware, `/api/auth/routes`, `/api/docs` and the route-matrix
    test read `app.routes` route by route; these routes are the app's own, as before."""

    tags: list[str] = field(default_factory=list)
    include_in_schema: bool = True
    routes: list[tuple[str, str, Callable[..., Any], dict[str, Any]]] = field(default_factory=list)

    def add_api_route(
        self, path: str, endpoint: Callable[..., Any], *, methods: list[str], **kw: Any
    ) -> None:
        for method in methods:
            self.routes.append((method, path, endpoint, kw))

    def _route(self, method: str, path: str, **kw: Any) -> Callable[[Callable], Callable]:
        def add(endpoint: Callable[..., Any]) -> Callable[..., Any]:
            self.routes.append((method, path, endpoint, kw))
            return endpoint

        return add

    def get(self, path: str, **kw: Any) -> Callable[[Callable], Callable]:
        return self._route("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Callable[[Callable], Callable]:
        return self._route("POST", path, **kw)

    def websocket(self, path: str) -> Callable[[Callable], Callable]:
        return self._route("WS", path)

    def mount(self, app: FastAPI) -> None:
        """Add every route to `app` (in declaration order: a literal path before a pattern
        that would match it)."""
        for method, path, endpoint, kw in self.routes:
            if method == "WS":
                app.add_api_websocket_route(path, endpoint)
                continue
            opts = {"include_in_schema": self.include_in_schema, **kw}
            if self.tags and opts["include_in_schema"]:
                opts["tags"] = self.tags
            app.add_api_route(path, endpoint, methods=[method], **opts)


class Refusal(Exception):
    """An early answer with a JSON body (turned into a response by `refusal_handler`)."""

    def __init__(self, status: int, body: dict[str, Any]):
        super().__init__(body.get("detail"))
        self.status, self.body = status, body


async def refusal_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Refusal)
    return JSONResponse(exc.body, status_code=exc.status)


async def require_api_key(request: Request) -> ApiKey:
    """The caller's API key grant (kinds, bound gate). The auth middleware has checked it
    against the route's rule in `auth.permissions.ROUTES` already; this checks again by the
    matched route (so a route is never open if the middleware is missing) and hands it to the
    handler. `API_KEYS` keys grant every kind; managed keys come from `run.py keys` or /users.

    `async` (it never blocks) like `settings`: FastAPI runs a plain `def` dependency in its
    thread pool, one thread hop per request each (measured with cProfile under wrk: the two
    hops were the largest single cost of `POST /api/events` after NiceGUI's middlewares)."""
    key = getattr(request.state, "api_key", None)
    if isinstance(key, ApiKey):
        return key
    route = request.scope.get("route")
    path = getattr(route, "path", request.url.path)
    rule = permissions.rule_for_route(path, request.method)
    if rule is None or not rule.keys:
        raise Refusal(403, {"detail": f"{request.method} {path} accepts no API key"})
    got = permissions.check_api_key(
        rule, request.headers.get("x-api-key"), f"{request.method} {path}"
    )
    if isinstance(got, permissions.Denied):
        raise Refusal(got.status, {"detail": got.detail})
    return got


class BodyTooLarge(Refusal):
    """413: the request body is (or declares to be) larger than the route's limit."""

    def __init__(self, what: str, limit: int):
        super().__init__(413, {"detail": f"{what} is larger than the limit of {limit} bytes"})


def limited(request: Request, limit: int, what: str = "request body") -> Request:
    """The same request whose body raises `BodyTooLarge` as soon as more than `limit` bytes
    have arrived: bytes are counted as they stream in (chunked uploads declare no length), so
    whatever reads it — `read_body`, or Starlette's multipart parser, which spools file parts
    to a temporary file — never reads, buffers or writes more than `limit` bytes. Before this
    the multipart route wrote a whole 1 GB chunked upload to disk, then answered 413."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(what, limit)
    size = 0

    async def receive() -> Message:
        nonlocal size
        msg = await request.receive()
        if msg["type"] == "http.request":
            size += len(msg.get("body", b""))
            if size > limit:
                raise BodyTooLarge(what, limit)
        return msg

    return Request(request.scope, receive)


async def read_body(request: Request, limit: int, what: str = "event body") -> bytes:
    """The body, refused with 413 as soon as it exceeds `limit` (never buffered beyond it)."""
    return b"".join([chunk async for chunk in limited(request, limit, what).stream()])


#: A handler parameter `key: ApiKeyDep` is the caller's checked API key (`require_api_key`).
ApiKeyDep = Annotated[ApiKey, Depends(require_api_key)]


async def settings() -> Settings:
    """The process's settings (`get_settings`), as an `async` dependency: no thread hop."""
    return get_settings()


#: A handler parameter `settings: SettingsDep` is the process's settings.
SettingsDep = Annotated[Settings, Depends(settings)]


def invalid_query(field: str, message: str, type_: str | None = None) -> JSONResponse:
    """422 for one bad query parameter, in the shape of FastAPI's own validation errors."""
    error = {"field": field, "message": message} | ({"type": type_} if type_ else {})
    return JSONResponse({"detail": "invalid query", "errors": [error]}, status_code=422)
