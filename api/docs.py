"""The HTTP API's own description: `/api/openapi.json` (OpenAPI 3, built by FastAPI from the
routes' request and response models) and `/api/docs`, a plain local page listing every route
with its models — no CDN (the dashboard makes no request off the machine), so not FastAPI's
Swagger UI page, which loads its code from one. Both need a login (any role) or an admin key.
"""

from __future__ import annotations

import html
import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute

from api.http import Router
from core.settings import APP_NAME

router = Router(include_in_schema=False)

#: Paths described: the machine API (the pages and NiceGUI's own routes are not an API).
DESCRIBED = ("/api/", "/health", "/logs")


def described(route: Any) -> bool:
    return (
        isinstance(route, APIRoute)
        and route.include_in_schema
        and route.path.startswith(DESCRIBED)
        and route.path not in ("/api/openapi.json", "/api/docs")
    )


def build_schema(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document of the described routes (built once per app: routes are fixed)."""
    cached = getattr(app.state, "vf_openapi", None)
    if cached is None:
        cached = get_openapi(
            title=f"{APP_NAME} HTTP API",
            version="1",
            description="Read from the code's request and response models. See docs/api.md.",
            routes=[r for r in app.routes if described(r)],
        )
        app.state.vf_openapi = cached
    return cached


@router.get("/api/openapi.json", include_in_schema=False)
async def openapi_json(request: Request) -> JSONResponse:
    return JSONResponse(build_schema(request.app))


def _ref_name(schema: dict[str, Any] | None) -> str:
    if not schema:
        return ""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if schema.get("type") == "array":
        return f"list[{_ref_name(schema.get('items'))}]"
    return schema.get("format") or schema.get("type") or ""


def docs_html(schema: dict[str, Any]) -> str:
    """A page listing each route: method, path, summary, request body and responses."""
    rows = []
    for path, ops in sorted(schema.get("paths", {}).items()):
        for method, op in ops.items():
            body = op.get("requestBody", {}).get("content", {})
            req = ", ".join(f"{t}: {_ref_name(c.get('schema'))}" for t, c in body.items())
            resp = "; ".join(
                f"{code} "
                + ", ".join(
                    f"{t}: {_ref_name(c.get('schema'))}" for t, c in r.get("content", {}).items()
                )
                for code, r in sorted(op.get("responses", {}).items())
            )
            rows.append(
                "<tr>"
                f"<td><code>{html.escape(method.upper())}</code></td>"
                f"<td><code>{html.escape(path)}</code></td>"
                f"<td>{html.escape(op.get('summary', ''))}</td>"
                f"<td>{html.escape(req)}</td><td>{html.escape(resp)}</td></tr>"
            )
    models = json.dumps(schema.get("components", {}).get("schemas", {}), indent=2)
    return (
        "<!doctype html><meta charset=utf-8>"
        f"<title>{html.escape(APP_NAME)} HTTP API</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{border-bottom:1px solid #ddd;"
        "padding:4px 8px;vertical-align:top;text-align:left}pre{background:#f6f6f6;"
        "padding:1em;overflow:auto}</style>"
        f"<h1>{html.escape(APP_NAME)} HTTP API</h1>"
        "<p>The machine-readable description: <a href='/api/openapi.json'>/api/openapi.json"
        "</a> (OpenAPI 3). Request and response models are listed below.</p>"
        "<table><tr><th>Method</th><th>Path</th><th>Summary</th><th>Request body</th>"
        f"<th>Responses</th></tr>{''.join(rows)}</table>"
        f"<h2>Models</h2><pre>{html.escape(models)}</pre>"
    )


@router.get("/api/docs", include_in_schema=False)
async def docs_page(request: Request) -> HTMLResponse:
    return HTMLResponse(docs_html(build_schema(request.app)))
